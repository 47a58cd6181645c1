"""Windowed-aggregation benchmark: this framework vs. faust-streaming vs. Quix Streams vs. a bare
aiokafka loop, on rides per city (or per driver, behind a repartition) and 1-minute tumbling
window (grace 30 s).

Standalone script (not collected by pytest; needs the ``bench`` extra: quixstreams, matplotlib)::

    python tests/bench/bench_windows.py                       # 1,000,000 rides, 3 rounds
    python tests/bench/bench_windows.py --count 20000 --repeat 1   # quick check
    python tests/bench/bench_windows.py --workload driver-repartition --count 100000

Workloads (``--workload``):

- ``city`` (default, the published results): windows per city, the input's own key, so no
  repartition; variants a, b, c, d.
- ``driver-repartition``: the same rides re-keyed by ``driver_id`` (this framework:
  ``group_by(lambda r: r["driver_id"], name="by-driver")``; Quix: ``sdf.group_by("driver_id")``),
  then the same windows per driver, emitted when final. All rides are produced before any
  variant starts, so each variant works through a backlog: its upstream task(s) feed the
  repartition topic at whatever pace they read their input partitions, which is where event-time
  progress behind a repartition goes wrong if it is taken as "max timestamp seen". The input's
  disorder (20 s) is inside the grace (30 s), so a correct run drops no ride as late; each
  variant's late count is reported (a: records in its late topic; c: calls of the window's
  ``on_late`` callback) next to the rides missing from its closed windows. Only a and c:
  faust's windows have no grace and no final emit (they expire by wall clock), and the raw loop
  has no repartition and closes no window, so neither would do this job.

What it does:

1. deletes the topics and consumer groups it uses (all named ``wbench...``, plus Quix's
   ``changelog__wbench-quix--...`` and ``repartition__wbench-quix--...``), then produces COUNT
   rides once into ``wbench-rides`` (4 partitions, keyed by city, 20 cities, ``--drivers``
   drivers, seed 42): JSON ~150 B ``{ride_id, rider_id, driver_id, city, fare ("12.34"), ts}``,
   one ride per 10 ms of event time ending about now, each up to 20 s out of order (so nothing
   is late with 30 s grace); the Kafka record timestamp is ``ts`` too;
2. runs ``--repeat`` rounds (at least 3 for numbers worth reporting), each running every
   variant once, in an order rotated each round (a b c d, b c d a, c d a b, ...), each variant as
   a subprocess with a fresh consumer group, state and output topic, timing from process start
   until its group has committed every input offset (and every offset of its repartition
   topic), polled every 0.1 s; then stops it with SIGTERM:

   a. this framework: tests/bench/windows_topology.py run by tests/bench/windows_runner.py
      (group ``wbench_windows``, output ``wbench-out-streams``, late topic
      ``wbench-late-streams``, emit="final");
   b. faust-streaming: tests/bench/windows_faust.py, a tumbling windowed table
      (group/app ``wbench-faust``; result = the table's changelog);
   c. Quix Streams: tests/bench/windows_quix.py, ``tumbling_window().reduce().final()``
      (group ``wbench-quix``, output ``wbench-out-quix``);
   d. a bare aiokafka loop adding rides to a dict per (city, window): the Python ceiling
      (tests/bench/windows_raw.py, group ``wbench-raw``; writes its dict to a file on exit);

3. verifies every run against an oracle computed here from the generated rides (count and
   Decimal fare sum per (key, window_start)) -- see ``verify()`` for what "agree" means --
   prints median and min-max events/s per variant and writes ``--results`` (default
   tests/bench/results/windows.json, or windows_driver_repartition.json) and a chart next to it.

Logs, state and result files of a run go under one fresh directory (``--work-dir`` names its
parent); the description of the produced input, kept for ``--reuse-input``, goes next to it,
one file per broker port. ``--profile`` additionally runs (a) once under
``python -m cProfile -o`` and records its hottest functions in the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import pstats
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streams.kafka import admin  # noqa: E402
from tests.bench.rounds import delete_groups, loadavg, round_orders, scratch_dir  # noqa: E402

INPUT_TOPIC = "wbench-rides"
WORKLOADS = ("city", "driver-repartition")
SEED = 42
SPACING_MS = 10          # event time between consecutive rides
DISORDER_MS = 20_000     # rides are up to this much out of order
WINDOW_MS = 60_000
GRACE_MS = 30_000
CITIES = ["amsterdam", "athens", "barcelona", "berlin", "brussels", "bucharest", "budapest",
          "copenhagen", "dublin", "helsinki", "lisbon", "london", "madrid", "milan", "oslo",
          "paris", "prague", "rome", "stockholm", "vienna"]
# drivers in the generated rides: city keeps the input every published result was measured on;
# driver-repartition uses 2,000 so that a driver's 1-minute window holds ~3 rides (6,000 rides
# per minute) and nearly every driver rides again within the last minutes of the input, which
# closes its windows under per-key stream time too (Quix's default): with 50,000 drivers a
# window would hold 0.12 rides, output would be as large as input and most drivers' last
# windows would stay open.
DEFAULT_DRIVERS = {"city": 50_000, "driver-repartition": 2_000}
RESULTS = {"city": HERE / "results" / "windows.json",
           "driver-repartition": HERE / "results" / "windows_driver_repartition.json"}
CHART = {"city": HERE / "results" / "windows.png",
         "driver-repartition": HERE / "results" / "windows_driver_repartition.png"}

STREAMS_TOPOLOGY = "wbench_windows"
STREAMS_OUT = "wbench-out-streams"
STREAMS_LATE = "wbench-late-streams"
STREAMS_REPARTITION = f"{STREAMS_TOPOLOGY}-by-driver-repartition"
FAUST_APP = "wbench-faust"
FAUST_CHANGELOG = f"{FAUST_APP}-ride-totals-changelog"
QUIX_GROUP = "wbench-quix"
QUIX_OUT = "wbench-out-quix"
QUIX_REPARTITION = f"repartition__{QUIX_GROUP}--"   # a prefix: Quix appends topic and column
RAW_GROUP = "wbench-raw"

Window = tuple[str, int]            # (city or driver, window_start ms)
Agg = tuple[int, str]               # (rides, fare_total "12.34")


def _log(msg: str) -> None:
    print(f"[wbench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- input and oracle ------------------------------------------------------------------------------
def rides(count: int, seed: int, start_ms: int,
          drivers: int = 50_000) -> list[tuple[str, dict[str, Any]]]:
    """(city, ride) pairs: one ride per SPACING_MS of event time, each up to DISORDER_MS early,
    by one of ``drivers`` drivers."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        city = CITIES[rng.randrange(len(CITIES))]
        out.append((city, {
            "ride_id": f"ride-{i:09d}-{rng.getrandbits(48):012x}",
            "rider_id": f"rider-{rng.randrange(500_000):07d}",
            "driver_id": f"driver-{rng.randrange(drivers):06d}",
            "city": city,
            "fare": f"{Decimal(rng.randrange(450, 9000)) / 100:.2f}",
            "ts": start_ms + i * SPACING_MS - rng.randrange(DISORDER_MS + 1),
        }))
    return out


@dataclass
class Oracle:
    windows: dict[Window, Agg]
    key_max_ts: dict[str, int]         # largest ts per key (city, or driver)
    partition_max_ts: dict[int, int]   # largest ts per input partition
    city_partition: dict[str, int]
    repartitioned: bool = False        # keys are drivers, read behind a repartition

    def close_time(self, w: Window) -> int:
        return w[1] + WINDOW_MS + GRACE_MS

    def surely_closed(self) -> set[Window]:
        """Closed by the largest timestamp of its own key: closed under any per-key or
        per-partition notion of stream time. Behind a repartition also closed by the smallest
        of the input partitions' largest timestamps, so closed under an event-time watermark
        that follows the slowest upstream partition as well."""
        floor = min(self.partition_max_ts.values()) if self.repartitioned else None
        return {w for w in self.windows
                if self.close_time(w) <= self.key_max_ts[w[0]]
                and (floor is None or self.close_time(w) <= floor)}

    def possibly_closed(self) -> set[Window]:
        """Closed by the largest timestamp of any partition (the most any variant may close)."""
        top = max(self.partition_max_ts.values())
        return {w for w in self.windows if self.close_time(w) <= top}


def oracle_for(data: list[tuple[str, dict[str, Any]]], city_partition: dict[str, int],
               workload: str = "city") -> Oracle:
    """Count and Decimal fare sum per (key, window start), key = the city or (behind the
    repartition) the driver."""
    by_driver = workload == "driver-repartition"
    sums: dict[Window, list] = {}
    key_max: dict[str, int] = {}
    part_max: dict[int, int] = {}
    for city, ride in data:
        ts = ride["ts"]
        key = ride["driver_id"] if by_driver else city
        w = (key, ts - ts % WINDOW_MS)
        agg = sums.setdefault(w, [0, Decimal(0)])
        agg[0] += 1
        agg[1] += Decimal(ride["fare"])
        key_max[key] = max(key_max.get(key, ts), ts)
        p = city_partition[city]
        part_max[p] = max(part_max.get(p, ts), ts)
    return Oracle({w: (n, f"{total:.2f}") for w, (n, total) in sums.items()}, key_max,
                  part_max, city_partition, repartitioned=by_driver)


async def _produce(bootstrap: str, data: list[tuple[str, dict[str, Any]]]) -> dict[str, int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all",
                                max_batch_size=1024 * 1024)
    await producer.start()
    try:
        futures = []
        partition_of: dict[str, int] = {}
        pending: list[tuple[str, Any]] = []
        for city, ride in data:
            fut = await producer.send(INPUT_TOPIC, json.dumps(ride, separators=(",", ":")).encode(),
                                      key=city.encode(), timestamp_ms=ride["ts"])
            futures.append(fut)
            if city not in partition_of and len(pending) < 1000:
                pending.append((city, fut))
        await asyncio.gather(*futures)
        for city, fut in pending:
            partition_of.setdefault(city, fut.result().partition)
        return partition_of
    finally:
        await producer.stop()


def _ours(topic: str) -> bool:
    return (topic.startswith(("wbench-", f"{STREAMS_TOPOLOGY}-"))
            or f"__{QUIX_GROUP}--" in topic)


def reset_topics(bootstrap: str, names: list[str], create: list[str], partitions: int) -> None:
    existing = admin.run(admin.list_topics(bootstrap))
    doomed = [t for t in existing if t in names or any(t.startswith(p) for p in names
                                                         if p.endswith(("-", "--")))]
    doomed = [t for t in doomed if _ours(t)]
    if doomed:
        admin.run(admin.delete_topics(bootstrap, sorted(set(doomed))))
    if create:
        admin.run(admin.ensure_topics(bootstrap, [admin.TopicSpec(t, partitions) for t in create]))


ALL_GROUPS = [STREAMS_TOPOLOGY, FAUST_APP, QUIX_GROUP, RAW_GROUP]


def input_meta_path(bootstrap: str, parent: str | None) -> Path:
    """Where the description of the produced input is kept for --reuse-input: one file per
    broker, so benchmarks against different brokers on one host do not mix them up."""
    port = bootstrap.rsplit(":", 1)[-1]
    return Path(parent or tempfile.gettempdir()) / f"wbench-input-{port}.json"


def prepare(bootstrap: str, count: int, partitions: int, reuse: bool, drivers: int,
            workload: str, meta_path: Path) -> Oracle:
    """Fresh input (or the previous run's, with --reuse-input) and the oracle for it."""
    if reuse and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        ends = admin.run(admin.end_offsets(bootstrap, INPUT_TOPIC)) if INPUT_TOPIC in \
            admin.run(admin.list_topics(bootstrap)) else {}
        if (meta.get("count") == count and meta.get("seed") == SEED
                and meta.get("drivers", 50_000) == drivers
                and meta.get("partitions") == partitions and sum(ends.values()) == count):
            _log(f"reusing {count} rides in {INPUT_TOPIC} (produced {meta['produced_at']})")
            data = rides(count, SEED, meta["start_ms"], drivers)
            return oracle_for(data, meta["city_partition"], workload)
    admin.run(delete_groups(bootstrap, ALL_GROUPS))
    reset_topics(bootstrap, [INPUT_TOPIC, STREAMS_OUT, STREAMS_LATE, QUIX_OUT,
                             f"{STREAMS_TOPOLOGY}-", f"{FAUST_APP}-",
                             f"changelog__{QUIX_GROUP}--", QUIX_REPARTITION],
                 [INPUT_TOPIC], partitions)
    start_ms = int(time.time() * 1000) - count * SPACING_MS
    data = rides(count, SEED, start_ms, drivers)
    size = sum(len(json.dumps(r, separators=(",", ":"))) for _, r in data[:1000]) / min(count, 1000)
    started = time.monotonic()
    city_partition = asyncio.run(_produce(bootstrap, data))
    ends = admin.run(admin.end_offsets(bootstrap, INPUT_TOPIC))
    if sum(ends.values()) != count:
        raise SystemExit(f"{INPUT_TOPIC} holds {sum(ends.values())} records, not {count}")
    _log(f"produced {count} rides (~{size:.0f} B each) to {INPUT_TOPIC} ({partitions} partitions: "
         f"{dict(sorted(ends.items()))}) in {time.monotonic() - started:.1f}s")
    meta_path.write_text(json.dumps({"count": count, "seed": SEED, "partitions": partitions,
                                     "drivers": drivers, "start_ms": start_ms,
                                     "city_partition": city_partition,
                                     "produced_at": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    return oracle_for(data, city_partition, workload)


# -- variants --------------------------------------------------------------------------------------
@dataclass
class Variant:
    key: str
    label: str
    group: str
    cmd: list[str]
    env: dict[str, str]
    check_topics: list[str]           # committed == end on all of these = done
    reset_names: list[str]            # topics (or prefixes ending in - / --) deleted before a run
    create_topics: list[str]          # created (empty) before a run
    reader: Callable[[str, int, Path], Any]   # (bootstrap, partitions, run dir) -> results
    # (bootstrap, run dir) -> rides the variant reported it dropped as late (None: unknown)
    late_reader: Callable[[str, Path], int | None] | None = None


@dataclass
class Run:
    seconds: float
    events_per_s: float
    stop_seconds: float
    exit_code: int | None
    log: str
    check: dict[str, Any] = field(default_factory=dict)
    late_reported: int | None = None
    load_average: list[float] | None = None   # 1/5/15 min, as the run started


async def _read_topic(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         max_partition_fetch_bytes=8 * 1024 * 1024)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        out = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for recs in (await c.getmany(timeout_ms=500, max_records=50000)).values():
                out.extend(recs)
            if all([await c.position(tp) >= ends[tp] for tp in tps]):
                return out
        raise RuntimeError(f"could not read {topic} to its end")
    finally:
        await c.stop()


def read_final_topic(topic: str) -> Callable[[str, int, Path], Any]:
    """Windows emitted once each as {rides, fare_total, window_start, ...}: (dict, duplicates)."""
    def read(bootstrap: str, partitions: int, run_dir: Path) -> tuple[dict[Window, Agg], int]:
        got: dict[Window, Agg] = {}
        dups = 0
        for r in asyncio.run(_read_topic(bootstrap, topic, partitions)):
            v = json.loads(r.value)
            w = (r.key.decode(), int(v["window_start"]))
            if w in got:
                dups += 1
            got[w] = (v["rides"], v["fare_total"])
        return got, dups
    return read


def read_faust_changelog(bootstrap: str, partitions: int, run_dir: Path) -> tuple[dict, int]:
    """The last value per (city, window) in the table's changelog. faust keys windowed tables
    as JSON [key, [start_s, end_s]]."""
    got: dict[Window, Agg] = {}
    for r in asyncio.run(_read_topic(bootstrap, FAUST_CHANGELOG, partitions)):
        city, (start, _end) = json.loads(r.key)
        w = (city, round(start * 1000))
        if r.value is None:
            got.pop(w, None)
            continue
        v = json.loads(r.value)
        got[w] = (v["rides"], v["fare_total"])
    return got, 0


def count_topic(topic: str) -> Callable[[str, Path], int | None]:
    """Records in ``topic`` (its end offsets: the topic is created empty for each run and
    written without transactions)."""
    def count(bootstrap: str, run_dir: Path) -> int | None:
        if topic not in admin.run(admin.list_topics(bootstrap)):
            return None
        return sum(admin.run(admin.end_offsets(bootstrap, topic)).values())
    return count


def read_late_file(bootstrap: str, run_dir: Path) -> int | None:
    """The count windows_quix.py's ``on_late`` callback wrote on exit."""
    path = run_dir / "late-count.txt"
    return int(path.read_text()) if path.exists() else None


def read_raw_file(bootstrap: str, partitions: int, run_dir: Path) -> tuple[dict, int]:
    data = json.loads((run_dir / "raw-result.json").read_text())
    return {(city, int(s)): (n, total) for city, ws in data.items()
            for s, (n, total) in ws.items()}, 0


# Variants that can run each workload faithfully. driver-repartition leaves out faust (its
# windows have neither grace nor a final emit, they expire by wall clock, so it cannot close
# windows or drop late rides: nothing to compare but the sums) and the raw loop (no
# repartition, no window closing: it would measure a different job).
WORKLOAD_VARIANTS = {"city": "abcd", "driver-repartition": "ac"}


def variants(bootstrap: str, partitions: int, workload: str = "city") -> list[Variant]:
    py = sys.executable
    common = {"BENCH_BROKER": bootstrap, "BENCH_IN_TOPIC": INPUT_TOPIC,
              "BENCH_PARTITIONS": str(partitions), "BENCH_WORKLOAD": workload}
    # behind a repartition a variant is done once it has also committed its repartition topic
    a_done = [INPUT_TOPIC] + ([STREAMS_REPARTITION] if workload == "driver-repartition" else [])
    c_done = [INPUT_TOPIC] + ([QUIX_REPARTITION] if workload == "driver-repartition" else [])
    every = [
        Variant("a", "streams (this framework)", STREAMS_TOPOLOGY,
                [py, str(HERE / "windows_runner.py")],
                {**common, "BENCH_OUT_TOPIC": STREAMS_OUT, "BENCH_LATE_TOPIC": STREAMS_LATE},
                a_done, [STREAMS_OUT, STREAMS_LATE, f"{STREAMS_TOPOLOGY}-"],
                [STREAMS_OUT, STREAMS_LATE], read_final_topic(STREAMS_OUT),
                count_topic(STREAMS_LATE)),
        Variant("b", "faust-streaming", FAUST_APP,
                [py, str(HERE / "windows_faust.py"), "worker", "-l", "warn", "--without-web"],
                {**common, "BENCH_FAUST_APP_ID": FAUST_APP},
                [INPUT_TOPIC], [f"{FAUST_APP}-"], [], read_faust_changelog),
        Variant("c", "quixstreams", QUIX_GROUP,
                [py, str(HERE / "windows_quix.py")],
                {**common, "BENCH_GROUP": QUIX_GROUP, "BENCH_OUT_TOPIC": QUIX_OUT},
                c_done, [QUIX_OUT, f"changelog__{QUIX_GROUP}--", QUIX_REPARTITION],
                [QUIX_OUT], read_final_topic(QUIX_OUT), read_late_file),
        Variant("d", "raw aiokafka loop", RAW_GROUP,
                [py, str(HERE / "windows_raw.py")],
                {**common, "BENCH_GROUP": RAW_GROUP}, [INPUT_TOPIC], [], [], read_raw_file),
    ]
    return [v for v in every if v.key in WORKLOAD_VARIANTS[workload]]


def _run_env(v: Variant, run_dir: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
                os.pathsep),
            **v.env,
            "BENCH_STATE_DIR": str(run_dir / "state"),
            "BENCH_FAUST_DATADIR": str(run_dir / "faust-data"),
            "BENCH_RESULT_FILE": str(run_dir / "raw-result.json"),
            "BENCH_LATE_FILE": str(run_dir / "late-count.txt")}


async def _progress(client: AIOKafkaAdminClient, probe: AIOKafkaConsumer, group: str,
                    topics: list[str], parts: dict[str, list[int]],
                    ends_cache: dict[TopicPartition, int]) -> tuple[bool, int]:
    """(done, committed input offsets). Done: every partition of every topic committed to its
    end; topics after the first are only looked at once the first is done (their end offsets
    are final then: at-least-once flushes what it produced before committing). A topic is only
    asked about once it exists (a metadata request for a missing topic would let the broker
    auto-create it with one partition). A name ending in ``--`` is a prefix: the one topic
    that starts with it (Quix names its repartition topic after the input and the column)."""
    try:
        offsets = await client.list_consumer_group_offsets(group)
    except KafkaError:
        return False, 0
    committed = {tp: m.offset for tp, m in offsets.items() if m.offset >= 0}
    in_sum = sum(off for tp, off in committed.items() if tp.topic == topics[0])
    for i, topic in enumerate(topics):
        if topic.endswith("--"):
            found_names = [t for t in await client.list_topics() if t.startswith(topic)]
            if len(found_names) != 1:
                return False, in_sum
            topic = found_names[0]
        if topic not in parts:
            if topic not in await client.list_topics():
                return False, in_sum
            desc = await client.describe_topics([topic])
            found = sorted(p["partition"] for p in desc[0]["partitions"])
            if not found:
                return False, in_sum
            parts[topic] = found
        tps = [TopicPartition(topic, p) for p in parts[topic]]
        if i == 0 and ends_cache:
            ends = dict(ends_cache)
        else:
            ends = await probe.end_offsets(tps)
            if i == 0:
                ends_cache.update(ends)
        if any(committed.get(tp, -1) < end for tp, end in ends.items()):
            return False, in_sum
    return True, in_sum


async def measure(v: Variant, bootstrap: str, count: int, timeout: float, run_dir: Path,
                  cmd: list[str] | None = None) -> Run:
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / f"{v.key}.log"
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await client.start()
    await probe.start()
    ends_cache: dict[TopicPartition, int] = {}
    parts: dict[str, list[int]] = {}
    try:
        with open(log_path, "wb") as log_fh:
            started = time.monotonic()
            proc = subprocess.Popen(cmd or v.cmd, stdout=log_fh, stderr=subprocess.STDOUT,
                                    cwd=ROOT, env=_run_env(v, run_dir))
            try:
                last_report = started
                while True:
                    done, consumed = await _progress(client, probe, v.group, v.check_topics,
                                                     parts, ends_cache)
                    if done:
                        elapsed = time.monotonic() - started
                        break
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"{v.label} exited early with {proc.returncode} ({consumed}/{count} "
                            f"committed); log {log_path}:\n"
                            f"{log_path.read_text(errors='replace')[-3000:]}")
                    now = time.monotonic()
                    if now - started > timeout:
                        raise RuntimeError(f"{v.label}: {consumed}/{count} input offsets committed "
                                           f"after {timeout:.0f}s; log {log_path}")
                    if now - last_report > 30:
                        _log(f"  ... {consumed}/{count} committed after {now - started:.0f}s")
                        last_report = now
                    await asyncio.sleep(0.1)
                stop_started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                while proc.poll() is None and time.monotonic() - stop_started < 60:
                    await asyncio.sleep(0.05)
                stop_seconds = time.monotonic() - stop_started
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(30)
    finally:
        await probe.stop()
        await client.close()
    return Run(round(elapsed, 3), round(count / elapsed, 1), round(stop_seconds, 2),
               proc.returncode, str(log_path))


# -- verification ----------------------------------------------------------------------------------
def verify(key: str, got: dict[Window, Agg], dups: int, oracle: Oracle) -> dict[str, Any]:
    """Every window a variant reports must equal the oracle (rides and fare sum). Variants that
    emit only closed windows ((a), (c)) must report every window closed by its own key's
    largest timestamp (behind a repartition: and by every input partition's largest
    timestamp) and none that no partition's largest timestamp closed; windows in between may
    legitimately still be open at the end of the input. faust's changelog and the raw dict
    must hold every window (their last values are complete: all input was consumed).
    ``rides_missing_from_closed_windows`` = the oracle's rides in the windows that must be
    closed minus the rides the variant reported for them: the rides it lost, e.g. dropped as
    late."""
    wrong = sorted(w for w, agg in got.items() if oracle.windows.get(w) != agg)
    check: dict[str, Any] = {"windows": len(got), "wrong": len(wrong),
                             "wrong_examples": [[w[0], w[1], list(got[w]),
                                                 list(oracle.windows.get(w, ()))]
                                                for w in wrong[:5]],
                             "duplicates": dups}
    if key in ("a", "c"):
        surely, possibly = oracle.surely_closed(), oracle.possibly_closed()
        missing = sorted(surely - got.keys())
        extra = sorted(got.keys() - possibly)
        lost = sum(oracle.windows[w][0] - (got[w][0] if w in got else 0) for w in surely)
        check.update(missing_closed=len(missing), missing_examples=missing[:5],
                     not_closed_but_emitted=len(extra), extra_examples=extra[:5],
                     emitted_beyond_surely_closed=len(got.keys() - surely),
                     rides_missing_from_closed_windows=lost)
        check["ok"] = not wrong and not missing and not extra and dups == 0
    else:
        missing = sorted(oracle.windows.keys() - got.keys())
        check.update(missing=len(missing), missing_examples=missing[:5])
        check["ok"] = not wrong and not missing
    return check


def agreement(finals: dict[str, dict[Window, Agg]]) -> dict[str, Any]:
    """(a), (b), (c) compared with each other directly on the windows (a) and (c) both emitted
    as final (faust: its last value for those windows)."""
    keys = [k for k in ("a", "b", "c") if k in finals]
    if len(keys) < 2:
        return {"compared": keys, "agree": None}
    closed = [set(finals[k]) for k in keys if k in ("a", "c")]
    common = set.intersection(*closed) if closed else set(finals[keys[0]])
    for k in keys:
        common &= set(finals[k])
    differ = sorted(w for w in common if len({finals[k][w] for k in keys}) > 1)
    doc: dict[str, Any] = {"compared": keys, "common_windows": len(common),
                           "differing": len(differ),
                           "differing_examples": [[w[0], w[1]] + [list(finals[k][w]) for k in keys]
                                                  for w in differ[:5]]}
    if "a" in finals and "c" in finals:
        doc["closed_only_in_a"] = len(finals["a"].keys() - finals["c"].keys())
        doc["closed_only_in_c"] = len(finals["c"].keys() - finals["a"].keys())
    doc["agree"] = not differ and len(common) > 0
    return doc


# -- profile ---------------------------------------------------------------------------------------
def profile_a(v: Variant, bootstrap: str, count: int, timeout: float, run_dir: Path,
              partitions: int, top: int = 12) -> dict[str, Any]:
    prof = run_dir / "streams.prof"
    reset_for(v, bootstrap, partitions)
    cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), str(HERE / "windows_runner.py")]
    run = asyncio.run(measure(v, bootstrap, count, timeout, run_dir, cmd=cmd))
    if not prof.exists():
        return {"error": f"no profile written (exit {run.exit_code}); log {run.log}"}
    doc = summarize_profile(prof, count, top)
    return {"seconds_under_profiler": run.seconds, **doc}


def summarize_profile(prof: Path, count: int, top: int = 12) -> dict[str, Any]:
    """Shares of the profiled process's total time. ``hot_path`` = the framework's per-record
    functions (streams/*, called at least once per input record), by cumulative time (they
    nest: serialize includes json_dumps); ``top3`` = its first three."""
    stats = pstats.Stats(str(prof))
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{_short(filename)}:{line}({func})", "calls": nc,
                     "tottime_s": round(tt, 3), "tottime_share": round(tt / total, 4),
                     "cumtime_s": round(ct, 3), "cumtime_share": round(ct / total, 4)})
    idle = sum(r["tottime_s"] for r in rows if "select.epoll" in r["function"])
    by_tt = sorted(rows, key=lambda r: -r["tottime_s"])[:top]
    framework = [r for r in rows if r["function"].startswith("streams/")]
    by_ct = sorted(framework, key=lambda r: -r["cumtime_s"])[:top]
    hot = sorted((r for r in framework if r["calls"] >= count // 2),
                 key=lambda r: -r["cumtime_s"])[:top]
    text = prof.with_suffix(".txt")
    with open(text, "w") as fh:
        ps = pstats.Stats(str(prof), stream=fh)
        ps.sort_stats("tottime").print_stats(40)
        ps.sort_stats("cumulative").print_stats(60)
    return {"profile_total_s": round(total, 3), "idle_in_epoll_s": round(idle, 3),
            "top3": [{"function": r["function"], "cumtime_share": r["cumtime_share"],
                      "calls": r["calls"]} for r in hot[:3]],
            "hot_path": hot, "top_by_tottime": by_tt, "framework_by_cumtime": by_ct,
            "pstats_text": str(text), "prof": str(prof)}


def _short(filename: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# -- reporting -------------------------------------------------------------------------------------
def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("faust-streaming", "mode-streaming", "aiokafka", "quixstreams", "confluent-kafka",
                 "rocksdict", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    try:
        import confluent_kafka
        out["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        pass
    try:
        out["streams"] = metadata.version("streams")
    except metadata.PackageNotFoundError:
        out["streams"] = None
    return out


def machine() -> dict[str, Any]:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = round(kb / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "memory_gib": mem, "python": platform.python_version()}


def write_chart(path: Path, summary: dict[str, dict[str, Any]], count: int,
                what: str = "city") -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install -e '.[bench]'): no chart"
    keys = list(summary)
    labels = [f"({k}) {summary[k]['label']}" for k in keys]
    med = [summary[k]["events_per_s_median"] for k in keys]
    best = [summary[k]["events_per_s_best"] for k in keys]
    worst = [summary[k]["events_per_s_worst"] for k in keys]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    colors = {"a": "#1f77b4", "b": "#ff7f0e", "c": "#2ca02c", "d": "#7f7f7f"}
    bars = ax.bar(labels, med, color=[colors.get(k, "#7f7f7f") for k in keys],
                  label="median run")
    ax.scatter(labels, best, color="black", marker="_", s=400, zorder=3, label="best run")
    ax.scatter(labels, worst, color="grey", marker="_", s=400, zorder=3, label="worst run")
    for b, m, top in zip(bars, med, best, strict=True):
        ax.annotate(f"{m:,.0f}", (b.get_x() + b.get_width() / 2, max(m, top)), ha="center",
                    va="bottom", fontsize=9, xytext=(0, 4), textcoords="offset points")
    ax.set_ylabel("events/s (input consumed and committed)")
    ax.set_title(f"1-min tumbling window per {what}, {count:,} rides, 4 partitions")
    ax.legend(loc="upper left", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return None


def reset_for(v: Variant, bootstrap: str, partitions: int) -> None:
    admin.run(delete_groups(bootstrap, [v.group]))
    reset_topics(bootstrap, v.reset_names, v.create_topics, partitions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default=os.environ.get("STREAMS_BROKER", "127.0.0.1:9092"))
    parser.add_argument("--workload", choices=WORKLOADS, default="city",
                        help="city: windows per city, the input's key (default); "
                             "driver-repartition: windows per driver behind a repartition")
    parser.add_argument("--count", type=int, default=1_000_000, help="rides (default 1000000)")
    parser.add_argument("--drivers", type=int, default=None,
                        help="drivers in the generated rides (default 50000 for city, 2000 "
                             "for driver-repartition)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds, each running every variant once (default 3; fewer gives "
                             "no spread worth reporting)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--variants", default=None,
                        help="a=streams, b=faust, c=quixstreams, d=raw aiokafka (default: all "
                             "the workload supports: abcd for city, ac for driver-repartition)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per run (default max(180, count/1000))")
    parser.add_argument("--reuse-input", action="store_true",
                        help="keep wbench-rides if it holds the same COUNT rides as last time")
    parser.add_argument("--profile", action="store_true",
                        help="also run (a) once under cProfile and record its hot spots")
    parser.add_argument("--work-dir", default=None,
                        help="parent of this run's scratch dir (default the temp dir)")
    parser.add_argument("--results", default=None,
                        help="JSON results file (default tests/bench/results/windows.json for "
                             "city, windows_driver_repartition.json for driver-repartition)")
    parser.add_argument("--chart", default=None,
                        help="PNG chart ('' = none; default next to the default results)")
    args = parser.parse_args(argv)

    bootstrap = args.broker
    if bootstrap.rsplit(":", 1)[0] not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        parser.error("--broker must be a local address (127.0.0.1:PORT)")
    workload = args.workload
    drivers = args.drivers or DEFAULT_DRIVERS[workload]
    supported = WORKLOAD_VARIANTS[workload]
    wanted = args.variants or supported
    if set(wanted) - set(supported):
        parser.error(f"--workload {workload} runs only the variants {supported}")
    results_path = Path(args.results) if args.results else RESULTS[workload]
    chart_path = (args.chart if args.chart is not None
                  else "" if args.results else str(CHART[workload]))
    if not admin.broker_answers(bootstrap):
        parser.error(f"no Kafka broker answers at {bootstrap}")
    if args.repeat < 3:
        _log(f"only {args.repeat} round(s): a functional check, not a measurement")
    timeout = args.timeout or max(180.0, args.count / 1000)
    work = scratch_dir(args.work_dir, "wbench-")
    _log(f"logs and state in {work}")

    load_before = loadavg()
    oracle = prepare(bootstrap, args.count, args.partitions, args.reuse_input, drivers, workload,
                     input_meta_path(bootstrap, args.work_dir))
    what = "driver" if workload == "driver-repartition" else "city"
    _log(f"oracle: {len(oracle.windows)} ({what}, window)s, {len(oracle.surely_closed())} that "
         f"must be closed, {len(oracle.possibly_closed())} that may be")

    chosen = [v for v in variants(bootstrap, args.partitions, workload) if v.key in wanted]
    runs: dict[str, list[Run]] = {v.key: [] for v in chosen}
    finals: dict[str, dict[Window, Agg]] = {}
    failures: dict[str, str] = {}
    orders: list[str] = []
    for rnd, order in enumerate(round_orders(chosen, args.repeat), start=1):
        orders.append("".join(v.key for v in order))
        for v in order:
            if v.key in failures:
                continue
            reset_for(v, bootstrap, args.partitions)
            run_dir = work / f"{v.key}-{rnd}"
            _log(f"({v.key}) {v.label}, round {rnd}/{args.repeat}")
            load = loadavg()
            try:
                run = asyncio.run(measure(v, bootstrap, args.count, timeout, run_dir))
            except RuntimeError as exc:
                failures[v.key] = str(exc)
                _log(f"({v.key}) FAILED: {exc}")
                continue
            got, dups = v.reader(bootstrap, args.partitions, run_dir)
            run.check = verify(v.key, got, dups, oracle)
            run.load_average = load
            if v.late_reader is not None:
                run.late_reported = v.late_reader(bootstrap, run_dir)
            if v.key in ("a", "b", "c"):
                finals[v.key] = got  # the last run's results are compared across variants
            runs[v.key].append(run)
            _log(f"({v.key}) {run.seconds:.2f}s, {run.events_per_s:,.0f} events/s, "
                 f"stop {run.stop_seconds:.1f}s, exit {run.exit_code}, late reported "
                 f"{run.late_reported}; check {'ok' if run.check['ok'] else 'FAILED'}: "
                 f"{ {k: x for k, x in run.check.items() if not k.endswith('examples')} }")

    summary: dict[str, dict[str, Any]] = {}
    for v in chosen:
        rs = runs[v.key]
        if not rs:
            continue
        secs = [r.seconds for r in rs]
        summary[v.key] = {
            "label": v.label, "runs": len(rs), "seconds": secs,
            "seconds_min": min(secs), "seconds_median": round(statistics.median(secs), 3),
            "seconds_max": max(secs),
            "events_per_s_best": round(args.count / min(secs), 1),
            "events_per_s_median": round(args.count / statistics.median(secs), 1),
            "events_per_s_worst": round(args.count / max(secs), 1),
            "late_reported": [r.late_reported for r in rs],
            "rides_missing_from_closed_windows": [
                r.check.get("rides_missing_from_closed_windows") for r in rs],
            "all_checks_ok": all(r.check.get("ok") for r in rs) and all(
                r.exit_code == 0 for r in rs),
            "runs_detail": [asdict(r) for r in rs],
        }
    agree = agreement(finals)

    def ratio(a: str, b: str, field_: str) -> float | None:
        if a in summary and b in summary:
            return round(summary[a][field_] / summary[b][field_], 3)
        return None
    ratios = {f"a_over_{b}": {"median": ratio("a", b, "events_per_s_median"),
                              "best": ratio("a", b, "events_per_s_best"),
                              "worst": ratio("a", b, "events_per_s_worst")}
              for b in "bcd" if b in summary}

    profile = None
    if args.profile and "a" in summary:
        v = next(v for v in chosen if v.key == "a")
        _log("(a) once more under cProfile")
        try:
            profile = profile_a(v, bootstrap, args.count, timeout * 3, work / "a-profile",
                                args.partitions)
        except RuntimeError as exc:
            profile = {"error": str(exc)}

    load_after = loadavg()
    print()
    print(f"windows ({workload}): {args.count:,} rides, {args.partitions} partitions, "
          f"{len(CITIES)} cities, {drivers:,} drivers, 1-min tumbling windows per {what}, "
          f"grace 30 s; {args.repeat} round(s) ({' '.join(orders)}); broker {bootstrap}; "
          f"load average {load_before} -> {load_after}")
    print(f"{'variant':<30} {'median ev/s':>12} {'min-max ev/s':>19} {'median s':>9}  "
          f"{'late':>12} {'lost':>12}  checks")
    for k, s in summary.items():
        span = f"{s['events_per_s_worst']:,.0f}-{s['events_per_s_best']:,.0f}"
        late = "/".join("?" if x is None else str(x) for x in s["late_reported"]) \
            if any(x is not None for x in s["late_reported"]) else "-"
        lost = "/".join("-" if x is None else str(x)
                        for x in s["rides_missing_from_closed_windows"])
        print(f"({k}) {s['label']:<26} {s['events_per_s_median']:>12,.0f} {span:>19} "
              f"{s['seconds_median']:>9.2f}  {late:>12} {lost:>12}  "
              f"{'ok' if s['all_checks_ok'] else 'FAILED'}")
    print("late = rides the variant reported it dropped as late, per round; lost = the "
          "oracle's rides missing from the windows that must be closed, per round")
    for k, msg in failures.items():
        print(f"({k}) FAILED: {msg.splitlines()[0]}")
    for name, r in ratios.items():
        if r["median"] is not None:
            print(f"ratio (a)/({name[-1]}) events/s: median {r['median']:.3f}, "
                  f"best {r['best']:.3f}, worst {r['worst']:.3f}")
    print(f"agreement of {', '.join(f'({k})' for k in finals)}: {json.dumps(agree)}")
    if profile and "hot_path" in profile:
        print("(a) under cProfile, per-record framework functions by cumulative share:")
        for r in profile["hot_path"][:6]:
            print(f"  {r['cumtime_share']:6.1%}  {r['function']}  ({r['calls']} calls)")

    chart_note = None
    if chart_path:
        chart_note = write_chart(Path(chart_path), summary, args.count, what)
        print(chart_note or f"chart written to {chart_path}")
    if workload == "city":
        description = ("rides keyed by city -> per city, 1-minute tumbling windows (grace 30 s, "
                       "event time = ts) -> {rides, fare_total (Decimal sum, 2 places)}")
    else:
        description = ("rides keyed by city, all produced before any variant starts (a "
                       "backlog) -> re-keyed by driver_id through a repartition topic -> per "
                       "driver, 1-minute tumbling windows (grace 30 s, event time = ts) -> "
                       "{rides, fare_total (Decimal sum, 2 places)}, emitted when final; "
                       "late rides counted (correct count: 0)")
    doc = {
        "benchmark": "windows",
        "workload_name": workload,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "broker": bootstrap, "count": args.count, "partitions": args.partitions,
        "cities": len(CITIES), "drivers": drivers, "seed": SEED, "repeat": args.repeat,
        "round_orders": orders,
        "workload": f"{description}; input one ride per {SPACING_MS} ms of event time, up to "
                    f"{DISORDER_MS} ms out of order (none late)",
        "measure": "seconds from subprocess start until the variant's consumer group has "
                   "committed the end offset of every input partition (and, behind a "
                   "repartition, of every partition of its repartition topic), "
                   "polled every 0.1 s; events/s = count / seconds; rounds run every variant "
                   "once, in an order rotated each round; best / median / worst = from the "
                   "fastest / median / slowest run",
        "late_counts": "late_reported: (a) records in its late topic (the topology's "
                       "late_topic), (c) calls of the window's on_late callback; "
                       "rides_missing_from_closed_windows: oracle rides minus reported rides "
                       "over the windows that must be closed",
        "settings": "commit interval 1 s for all variants; (a) at_least_once, (b) at-least-once "
                    "(faust default), (c) at-least-once; state: (a) RocksDB, (b) faust memory "
                    "store + changelog, (c) RocksDB + changelog, (d) a dict",
        "comparison": verify.__doc__.strip() + " " + agreement.__doc__.strip(),
        "versions": versions(),
        "machine": {**machine(), "load_average_1_5_15_min": {"start": load_before,
                                                              "end": load_after}},
        "oracle": {"windows": len(oracle.windows), "surely_closed": len(oracle.surely_closed()),
                   "possibly_closed": len(oracle.possibly_closed())},
        "variants": summary,
        "failures": failures,
        "ratios": ratios,
        "agreement": agree,
        "profile_a": profile,
        "chart": None if chart_note or not chart_path else str(chart_path),
        "scratch_dir": str(work),
    }
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"results written to {results_path}")
    ok = (not failures and all(s["all_checks_ok"] for s in summary.values())
          and agree.get("agree") is not False)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
