"""Windowed aggregations against the real broker: final windows under kill -9, idle close, and
bounded window stores over hours of event time.

(a) runs the reference topology trip_stats; (b) and (c) run small topologies of their own
(topics ``ops-*``, written to a temporary project directory that the worker loads them from),
so they own their topics and measure one window operator, not the whole reference topology.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.devtools import generate
from streams.kafka import admin
from topologies.trip_stats import topology as trip_stats

from tests.conftest import (ROOT, create_topology_topics, delete_topology_topics, produce,
                            produce_in_background, read_topic, stop_gracefully)
from tests.integration.tables_support import wait_drained

pytestmark = pytest.mark.broker

MIN, GRACE = 60_000, 30_000
NODE_1M = "rides-per-city-1m-window"
REPARTITION = trip_stats.repartition_topics()


def _config(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _wait_split(workers: list[Any], partitions: int, timeout: float = 60.0) -> None:
    """Wait until each worker's latest assignment is its equal share of ``partitions``."""
    share = f"assigned {partitions // len(workers)} partitions"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = [[ln for ln in w.log().splitlines() if "assigned" in ln][-1:] for w in workers]
        if all(x and share in x[0] for x in last):
            return
        time.sleep(0.3)
    raise AssertionError("workers did not split the partitions:\n" +
                         "\n".join(w.log()[-1500:] for w in workers))


# -- (a) trip_stats, two workers, kill -9 mid-stream -----------------------------------------------
def _late_offsets(records: list[Any], node: str) -> set[tuple[int, int]]:
    """(partition, offset) of the `rides` records that ``node`` dropped as late (replays may
    repeat a late record; the set removes the repeats)."""
    out = set()
    for rec in records:
        h = {k: v.decode() for k, v in rec.headers}
        if h.get("node") == node:
            assert h["reason"] == "late" and h["source-topic"] == "rides"
            out.add((int(h["source-partition"]), int(h["source-offset"])))
    return out


def test_trip_stats_final_windows_survive_kill_9_of_one_of_two_workers(kafka: str, workers,
                                                                      tmp_path: Path) -> None:
    delete_topology_topics(kafka, trip_stats)
    create_topology_topics(kafka, trip_stats, partitions=4)
    events = generate.events("trip_stats", 8_000, seed=31)
    config = ["--config", str(_config(tmp_path, "chaos.toml", """
        commit_interval_ms = 200
        commit_every_records = 1000
        max_batch_records = 400
        session_timeout_ms = 6000
        """))]
    a = workers("trip_stats", kafka, state_dir=tmp_path / "a", args=config)
    b = workers("trip_stats", kafka, state_dir=tmp_path / "b", args=config)
    _wait_split([a, b], 4 * (1 + len(REPARTITION)))
    feeder = produce_in_background(kafka, events, chunk=400, pause=0.3)
    time.sleep(3.0)
    assert feeder.is_alive(), "the kill must land while input is still arriving"
    a.kill()
    a2 = workers("trip_stats", kafka, state_dir=tmp_path / "a", args=config)
    feeder.join(timeout=120)
    assert not feeder.is_alive()
    wait_drained(kafka, "trip_stats", ["rides", *REPARTITION], timeout=150)
    for w in (a2, b):
        assert w.terminate() == 0, w.log()[-3000:]
        assert "Traceback" not in w.log(), w.log()[-3000:]

    rides = {(r.partition, r.offset): json.loads(r.value) for r in read_topic(kafka, "rides")}
    assert len(rides) == len(events)
    late = _late_offsets(read_topic(kafka, "rides-late", idle=1.0), NODE_1M)
    assert late <= set(rides)
    # A city's windows live in the task of its partition of `rides` (keyed by city); the
    # task's stream time at the end is the largest ts it saw there (late records count too).
    city_part: dict[str, int] = {}
    end_time: dict[int, int] = {}
    for (part, _off), v in rides.items():
        city_part[v["city"]] = part
        end_time[part] = max(end_time.get(part, -1), v["ts"])
    oracle: dict[tuple[str, int], list[Any]] = {}
    for pos, v in rides.items():
        if pos in late:
            continue
        w = oracle.setdefault((v["city"], v["ts"] // MIN * MIN), [0, Decimal(0)])
        w[0] += 1
        w[1] += Decimal(v["fare"])
    closed = {k for k in oracle if k[1] + MIN + GRACE <= end_time[city_part[k[0]]]}

    emitted: dict[tuple[str, int], dict[str, Any]] = {}
    repeats = 0
    for rec in read_topic(kafka, "rides-per-city-1m"):
        v = json.loads(rec.value)
        key = (rec.key.decode(), v["window_start"])
        h = dict(rec.headers)
        assert h["window_start"] == str(v["window_start"]).encode()
        assert v["window_end"] == v["window_start"] + MIN and v["city"] == key[0]
        if key in emitted:
            assert emitted[key] == v, f"a repeat must be an exact duplicate: {emitted[key]} {v}"
            repeats += 1
        emitted[key] = v
    wrong = {k: (v["rides"], v["fare_total"], oracle.get(k)) for k, v in emitted.items()
             if oracle.get(k) != [v["rides"], Decimal(v["fare_total"])]}
    assert not wrong, f"{len(wrong)} windows differ from the oracle, e.g. {list(wrong.items())[:3]}"
    # Every window closed by the end was emitted, none that is still open; so every ride is in
    # exactly one emitted window, in a window still open, or in rides-late.
    assert set(emitted) == closed, (sorted(set(emitted) ^ closed)[:5])
    in_emitted = sum(v["rides"] for v in emitted.values())
    still_open = sum(n for k, (n, _f) in oracle.items() if k not in closed)
    assert in_emitted + still_open + len(late) == len(rides)
    assert 0.003 * len(rides) < len(late) < 0.02 * len(rides)
    print(f"\n(a) {len(rides)} rides, {len(emitted)} final 1-min windows "
          f"({repeats} exact repeats after the kill), {still_open} rides in still-open windows, "
          f"{len(late)} late rides in rides-late")


# -- a worker on a topology of the test's own ------------------------------------------------------
TOPOLOGY_TEMPLATE = '''
from decimal import Decimal
from streams import Topology, TumblingWindows

topology = Topology({name!r}, late_topic={late!r})


def new_stats():
    return {{"city": None, "rides": 0, "fare_total": "0.00"}}


def add(stats, ride):
    return {{"city": ride["city"], "rides": stats["rides"] + 1,
            "fare_total": f"{{Decimal(stats['fare_total']) + Decimal(ride['fare']):.2f}}"}}


(topology.stream({source!r}, timestamp="ts")
    .group_by(lambda ride: ride["city"], name="by-city")
    .window(TumblingWindows(size={size}, grace={grace}))
    .aggregate(new_stats, add, name="per-city", emit="final")
    .to({sink!r}))
'''


class OwnTopology:
    """A topology written to ``<tmp>/project/topologies/<name>.py``; its workers and CLI calls
    run in that project directory (``streams`` itself comes from the repository)."""

    def __init__(self, tmp_path: Path, name: str, size: int, grace: int) -> None:
        self.name = name
        self.source, self.sink, self.late = f"{name}-rides", f"{name}-per-city", f"{name}-late"
        self.project = tmp_path / "project"
        pkg = self.project / "topologies"
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").write_text("")
        self.module = name.replace("-", "_")
        (pkg / f"{self.module}.py").write_text(TOPOLOGY_TEMPLATE.format(
            name=name.replace("-", "_"), late=self.late, source=self.source, size=size,
            grace=grace, sink=self.sink))
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.procs: list[subprocess.Popen[bytes]] = []

    def topology(self) -> Any:
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            f"_own_{self.module}", self.project / "topologies" / f"{self.module}.py")
        mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        return mod.topology

    def worker(self, kafka: str, state: Path, log: Path, config: Path) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", self.module, "--state-dir", str(state),
             "--metrics-port", "0", "--config", str(config)],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=self.project,
            env={**self.env, "STREAMS_BROKER": kafka})
        self.procs.append(p)
        return p

    def cli(self, kafka: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True,
                              text=True, cwd=self.project,
                              env={**self.env, "STREAMS_BROKER": kafka}, timeout=60)

    def stop(self) -> None:
        stop_gracefully(self.procs)


@pytest.fixture
def own(tmp_path: Path):
    made: list[OwnTopology] = []

    def make(name: str, size: int, grace: int) -> OwnTopology:
        t = OwnTopology(tmp_path, name, size, grace)
        made.append(t)
        return t

    yield make
    for t in made:
        t.stop()


def _wait_log(log: Path, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in the worker log:\n{log.read_text()[-3000:]}")


def _rides(cities: list[str], ts: list[int]) -> list[tuple[str, str, dict[str, Any]]]:
    return [("", c, {"ride_id": f"r{i}", "city": c, "fare": "10.00", "ts": t})
            for i, (c, t) in enumerate(zip(cities, ts, strict=True))]


# -- (b) idle close --------------------------------------------------------------------------------
def test_idle_close_emits_the_last_windows_after_the_input_stops(kafka: str, own,
                                                                 tmp_path: Path) -> None:
    """Tumbling 10 s windows, grace 1 s; idle_close_ms = 3000. The input stops with each
    partition's stream time 1.5 s short of closing its last window: without idle close those
    windows would wait for the next record forever; with it they come out once the partition
    has been quiet for 3 s (the first advance is by those 3 s)."""
    t = own("ops-idle", size=10_000, grace=1_000)
    topo = t.topology()
    delete_topology_topics(kafka, topo)
    create_topology_topics(kafka, topo, partitions=4)
    idle_ms, commit_ms = 3_000, 200
    config = _config(tmp_path, "idle.toml", f"""
        idle_close_ms = {idle_ms}
        commit_interval_ms = {commit_ms}
        session_timeout_ms = 6000
        """)
    log = tmp_path / "idle-worker.log"
    t.worker(kafka, tmp_path / "state", log, config)
    _wait_log(log, "assigned")
    base = 1_700_000_000_000 // 10_000 * 10_000  # a window start
    cities = generate.CITIES
    # Two full windows per city, then the last window [base + 20 s, base + 30 s) with rides up
    # to base + 29.5 s: it closes at stream time base + 31 s, 1.5 s after the last ride.
    ts = [base + i * 500 for i in range(60)]
    first = _rides([cities[i % len(cities)] for i in range(40)], ts[:40])
    last = _rides([c for c in cities for _ in range(2)],
                  [base + 20_000 + j * 9_500 for _c in cities for j in range(2)])
    events = [(t.source, c, v) for _, c, v in first + last]
    produce(kafka, events)
    stopped = time.monotonic()
    got: dict[tuple[str, int], float] = {}
    expected = {(c, s) for c in cities for s in (base, base + 10_000)} | \
        {(c, base + 20_000) for c in cities}
    last_windows = {(c, base + 20_000) for c in cities}

    async def watch() -> None:
        parts = (await admin.topic_partitions(kafka, [t.sink]))[t.sink]
        c = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
        await c.start()
        try:
            c.assign([TopicPartition(t.sink, p) for p in parts])
            await c.seek_to_beginning()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not last_windows <= set(got):
                for recs in (await c.getmany(timeout_ms=50)).values():
                    for r in recs:
                        v = json.loads(r.value)
                        got.setdefault((r.key.decode(), v["window_start"]), time.monotonic())
        finally:
            await c.stop()

    admin.run(watch())
    with_rides = {(v["city"], v["ts"] // 10_000 * 10_000) for _, _, v in events}
    assert with_rides == expected and set(got) == expected
    delays = sorted(got[w] - stopped for w in last_windows)
    slack = 20.0  # how late is up to the machine's load; that it came, and not early, is the point
    assert delays[0] >= idle_ms / 1000 - 0.3, f"emitted before the partition was idle: {delays}"
    assert delays[-1] <= (idle_ms + commit_ms) / 1000 + slack, delays
    print(f"\n(b) idle_close_ms={idle_ms}: the last windows of {len(last_windows)} cities came "
          f"{delays[0]:.2f}-{delays[-1]:.2f} s after the input stopped")


def test_without_idle_close_the_last_windows_wait_for_input(kafka: str, own,
                                                            tmp_path: Path) -> None:
    """The control: the same input with idle_close_ms = 0 leaves the last windows open."""
    t = own("ops-noidle", size=10_000, grace=1_000)
    topo = t.topology()
    delete_topology_topics(kafka, topo)
    create_topology_topics(kafka, topo, partitions=4)
    config = _config(tmp_path, "noidle.toml", "commit_interval_ms = 200\n")
    log = tmp_path / "noidle-worker.log"
    t.worker(kafka, tmp_path / "state", log, config)
    _wait_log(log, "assigned")
    base = 1_700_000_000_000 // 10_000 * 10_000
    events = [(t.source, c, v) for _, c, v in _rides(generate.CITIES, [base + 500] * 8)]
    events += [(t.source, c, v) for _, c, v in _rides(generate.CITIES, [base + 10_500] * 8)]
    produce(kafka, events)
    time.sleep(5)
    windows = {(r.key.decode(), json.loads(r.value)["window_start"])
               for r in read_topic(kafka, t.sink, idle=0.5)}
    assert windows == set(), "stream time stays at base + 10.5 s: nothing has closed"


# -- (c) bounded state -----------------------------------------------------------------------------
def test_window_store_stays_bounded_over_two_hours_of_event_time(kafka: str, own,
                                                                 tmp_path: Path) -> None:
    """2 h of rides (out of order, a few late) through a 1-minute tumbling window with 30 s
    grace: a window is deleted when it closes, so per city at most the windows starting in the
    last size + grace = 90 s of stream time are stored: 2 per city, 16 for 8 cities (120 per
    city without expiry)."""
    t = own("ops-bounded", size=MIN, grace=GRACE)
    topo = t.topology()
    delete_topology_topics(kafka, topo)
    create_topology_topics(kafka, topo, partitions=4)
    config = _config(tmp_path, "bounded.toml", "commit_interval_ms = 200\n"
                                                "max_batch_records = 300\n")
    log = tmp_path / "bounded-worker.log"
    state = tmp_path / "state"
    t.worker(kafka, state, log, config)
    _wait_log(log, "assigned")
    n = 7_200  # one ride per second of event time: 2 h
    events = [(t.source, k, v) for _, k, v in generate.events(
        "trip_stats", n, seed=17, start_ms=int(time.time() * 1000) - 3 * 3_600_000,
        step_ms=1_000)]  # ends an hour ago: results stamped years back could be deleted by the
    # broker's 7-day time retention while the test reads them
    keys = len(generate.CITIES)
    bound = keys * -(-(MIN + GRACE) // MIN)
    samples: list[int] = []
    # Eight steps of 15 min of event time, each processed and committed before the store is
    # sampled: the samples do not depend on how fast the machine is.
    step = n // 8
    for i in range(0, n, step):
        produce(kafka, events[i:i + step])
        wait_drained(kafka, t.module, [t.source, *topo.repartition_topics()], timeout=120)
        listed = t.cli(kafka, "tables", "list", t.module, "--json", "--state-dir", str(state))
        assert listed.returncode == 0, listed.stderr
        (info,) = json.loads(listed.stdout)
        assert info["local_tasks"] and info["window"] == "tumbling 60000 ms, grace 30000 ms"
        assert info["keys"] <= keys
        samples.append(info["windows"])
    emitted = read_topic(kafka, t.sink, idle=1.0)
    assert len(samples) == 8 and max(samples) <= bound, samples
    assert info["windows"] > 0
    # The closed windows went out (about 2 h x 8 cities of them), not into the store.
    assert len(emitted) >= (n // 60 - 3) * keys
    print(f"\n(c) {n} rides over 2 h of event time: {len(emitted)} final windows emitted; "
          f"stored windows sampled {len(samples)} times while running: max {max(samples)}, "
          f"bound {bound} (without expiry: {len(emitted) + info['windows']})")
