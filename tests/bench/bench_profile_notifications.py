"""Throughput benchmark: the framework worker vs. faust vs. a bare aiokafka loop on the
profile_notifications topology (filter notable viewers, re-key by profile_id).

Standalone script (not collected by pytest)::

    python tests/bench/bench_profile_notifications.py --broker 127.0.0.1:29092 --count 200000

It needs a running broker (``streams kafka start --port PORT``) and:

1. deletes and recreates the topics it uses (so every consumer group starts without committed
   offsets), then produces the same COUNT profile views (seed 42) once into ``profile-views``;
2. runs ``--repeat`` rounds (default 3), each running every variant once in an order rotated
   each round (a b c d, b c d a, ...); each run is a subprocess with its own consumer group
   (deleted before the run) and its own output topic (recreated empty before the run), timed
   from process start until the output topic holds the expected number of notifications
   (computed here with the same filter), then stopped with SIGTERM:

   a. ``streams worker profile_notifications`` (group ``profile_notifications``, output
      ``profile-view-notifications``);
   b. a hand-written faust-streaming agent (tests/bench/faust_baseline.py, output
      ``bench-faust-out``);
   c. a bare aiokafka getmany/filter/send loop (tests/bench/raw_baseline.py, output
      ``bench-raw-out``);
   d. the same logic as a Faust-style agent of this framework (tests/bench/agent_baseline.py,
      group ``bench-agent``, output ``bench-agent-out``): ``async for view in stream`` and
      ``await topic.send(key=profile_id, value=view)``, as the faust agent (b) is written;
3. checks each run's output (exact count, same keys and values as expected), prints the median
   and min-max events/s per variant and writes them, every run and the load average at start
   and end as JSON to ``--results`` (default tests/bench/results/profile_notifications.json).

Logs and worker state go under one fresh directory per run (``--work-dir`` names its parent).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streams.devtools import generate  # noqa: E402
from streams.kafka import admin  # noqa: E402
from tests.bench.rounds import RunInfo, add_run_options, delete_groups, fmt_spread, spread  # noqa: E402,E501
from tests.bench.rounds import write_results  # noqa: E402

TOPOLOGY = "profile_notifications"
INPUT_TOPIC = "profile-views"
WORKER_OUT = "profile-view-notifications"
WORKER_GROUP = TOPOLOGY
WORKER_DLQ = f"{TOPOLOGY}-dlq"
FAUST_OUT = "bench-faust-out"
FAUST_APP = "bench-faust"
RAW_OUT = "bench-raw-out"
RAW_GROUP = "bench-raw"
AGENT_OUT = "bench-agent-out"
AGENT_APP = "bench-agent"
SEED = 42
NOTABLE_TITLES = ("Recruiter", "Hiring Manager", "CEO", "CTO")
RESULTS = HERE / "results" / "profile_notifications.json"


def is_notable(view: dict[str, Any]) -> bool:
    """The topology's filter, restated here so the expected output does not come from the code
    under test."""
    title = view.get("viewer_title") or ""
    return any(t in title for t in NOTABLE_TITLES)


@dataclass
class Variant:
    key: str
    label: str
    group: str
    out_topic: str
    cmd: list[str]
    env: dict[str, str]
    dlq: str | None = None    # its dead-letter topic, recreated empty with the output


@dataclass
class Result:
    key: str
    label: str
    seconds: float
    events_per_s: float
    first_output_s: float  # process start -> first notification on the output topic
    output_records: int
    exact: bool
    content_ok: bool | None
    exit_code: int | None
    stop_seconds: float
    committed_input: int
    log: str
    notes: list[str] = field(default_factory=list)


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- setup -----------------------------------------------------------------------------------------
def prepare(bootstrap: str, count: int, partitions: int) -> Counter[tuple[bytes, bytes]]:
    """Fresh topics, input produced once; returns the expected output as (key, value) counts."""
    existing = admin.run(admin.list_topics(bootstrap))
    doomed = [INPUT_TOPIC, WORKER_OUT, WORKER_DLQ, FAUST_OUT, RAW_OUT, AGENT_OUT,
              f"{AGENT_APP}-dlq"]
    doomed += [t for t in existing if t.startswith(f"{FAUST_APP}-")]  # faust's internal topics
    # No duplicate names: the broker rejects a DeleteTopics request naming a topic twice.
    deleted = admin.run(admin.delete_topics(bootstrap, list(dict.fromkeys(doomed))))
    if deleted:
        _log(f"deleted topics: {', '.join(sorted(deleted))}")
    specs = [admin.TopicSpec(t, partitions) for t in
             (INPUT_TOPIC, WORKER_OUT, WORKER_DLQ, FAUST_OUT, RAW_OUT, AGENT_OUT)]
    admin.run(admin.ensure_topics(bootstrap, specs))

    events = generate.events(TOPOLOGY, count, SEED)
    expected: Counter[tuple[bytes, bytes]] = Counter()
    for _topic, _key, view in events:
        if is_notable(view):
            expected[(view["profile_id"].encode(),
                      json.dumps(view, separators=(",", ":")).encode())] += 1
    started = time.monotonic()
    sent = asyncio.run(generate.produce(bootstrap, events))
    _log(f"produced {sent} events to {INPUT_TOPIC} ({partitions} partitions) in "
         f"{time.monotonic() - started:.1f}s; expected notifications: {sum(expected.values())}")
    ends = admin.run(admin.end_offsets(bootstrap, INPUT_TOPIC))
    if sum(ends.values()) != count:
        raise SystemExit(f"input topic holds {sum(ends.values())} records, not {count}")
    return expected


def committed_offsets(bootstrap: str, group: str, topics: list[str],
                      timeout: float = 60.0) -> dict[tuple[str, int], int]:
    """admin.committed_offsets, retried while the broker's group coordinator comes up (a fresh
    broker creates __consumer_offsets on first use)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return admin.run(admin.committed_offsets(bootstrap, group, topics))
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def reset_variant(bootstrap: str, v: Variant, partitions: int) -> None:
    """No committed offsets for ``v``'s group, its output (and dead-letter) topic empty."""
    admin.run(delete_groups(bootstrap, [v.group]))
    topics = [v.out_topic] + ([v.dlq] if v.dlq else [])
    admin.run(admin.delete_topics(bootstrap, topics))
    admin.run(admin.ensure_topics(bootstrap, [admin.TopicSpec(t, partitions) for t in topics]))
    check_fresh_group(bootstrap, v.group)


def check_fresh_group(bootstrap: str, group: str) -> None:
    committed = committed_offsets(bootstrap, group, [INPUT_TOPIC])
    if committed:
        raise SystemExit(f"group {group} still has committed offsets on {INPUT_TOPIC}: "
                         f"{committed}; it would not read the input from the start")


# -- measuring -------------------------------------------------------------------------------------
async def _output_count(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> int:
    return sum((await consumer.end_offsets(tps)).values())


async def measure(v: Variant, bootstrap: str, partitions: int, expected: int, count: int,
                  timeout: float, log_dir: Path) -> Result:
    tps = [TopicPartition(v.out_topic, p) for p in range(partitions)]
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await probe.start()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{v.key}.log"
    notes: list[str] = []
    try:
        if await _output_count(probe, tps):
            raise SystemExit(f"{v.out_topic} is not empty before {v.label}")
        log_fh = open(log_path, "wb")
        started = time.monotonic()
        proc = subprocess.Popen(v.cmd, stdout=log_fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **v.env})
        try:
            n = 0
            first = 0.0
            while True:
                n = await _output_count(probe, tps)
                if n and not first:
                    first = time.monotonic() - started
                if n >= expected:
                    elapsed = time.monotonic() - started
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"{v.label} exited early with {proc.returncode} after "
                                       f"{n}/{expected} outputs; log {log_path}:\n"
                                       f"{log_path.read_text(errors='replace')[-3000:]}")
                if time.monotonic() - started > timeout:
                    raise RuntimeError(f"{v.label}: only {n}/{expected} outputs after {timeout}s; "
                                       f"log {log_path}")
                await asyncio.sleep(0.05)
            stop_started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            while proc.poll() is None and time.monotonic() - stop_started < 60:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                notes.append("did not stop within 60s of SIGTERM: killed")
                proc.kill()
                proc.wait(30)
            stop_seconds = time.monotonic() - stop_started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
            log_fh.close()
        await asyncio.sleep(0.5)
        final = await _output_count(probe, tps)
    finally:
        await probe.stop()
    if final != expected:
        notes.append(f"output holds {final} records after stop, expected exactly {expected}")
    committed = await asyncio.to_thread(committed_offsets, bootstrap, v.group, [INPUT_TOPIC])
    committed_sum = sum(committed.values())
    if committed_sum != count:
        notes.append(f"group {v.group} committed {committed_sum} of {count} input offsets")
    return Result(v.key, v.label, round(elapsed, 3), round(count / elapsed, 1), round(first, 3),
                  final,
                  final == expected, None, proc.returncode, round(stop_seconds, 2),
                  committed_sum, str(log_path), notes)


async def read_output(bootstrap: str, topic: str, partitions: int,
                      expect: int) -> Counter[tuple[bytes, bytes]]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         max_partition_fetch_bytes=4 * 1024 * 1024)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        out: Counter[tuple[bytes, bytes]] = Counter()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for recs in (await c.getmany(timeout_ms=500, max_records=10000)).values():
                for r in recs:
                    out[(r.key, r.value)] += 1
            positions = [await c.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
        return out
    finally:
        await c.stop()


def same_content(got: Counter[tuple[bytes, bytes]], want: Counter[tuple[bytes, bytes]]) -> bool:
    """Same keys and same JSON values (compared as parsed objects, so key order/spacing of the
    encoders does not matter)."""
    def norm(c: Counter[tuple[bytes, bytes]]) -> Counter[tuple[bytes, str]]:
        out: Counter[tuple[bytes, str]] = Counter()
        for (k, v), n in c.items():
            out[(k, json.dumps(json.loads(v), sort_keys=True))] += n
        return out
    return norm(got) == norm(want)


# -- main ------------------------------------------------------------------------------------------
def variants(bootstrap: str, partitions: int, work: Path) -> list[Variant]:
    py = sys.executable
    return [
        Variant("a", "streams worker", WORKER_GROUP, WORKER_OUT,
                [py, "-m", "streams.cli", "worker", TOPOLOGY, "--state-dir", str(work / "state"),
                 "--metrics-port", "0"],
                {"STREAMS_BROKER": bootstrap}, WORKER_DLQ),
        Variant("b", "faust agent", FAUST_APP, FAUST_OUT,
                [py, str(HERE / "faust_baseline.py"), "worker", "-l", "warn", "--without-web"],
                {"BENCH_BROKER": bootstrap, "BENCH_FAUST_APP_ID": FAUST_APP,
                 "BENCH_IN_TOPIC": INPUT_TOPIC, "BENCH_OUT_TOPIC": FAUST_OUT,
                 "BENCH_PARTITIONS": str(partitions),
                 "BENCH_FAUST_DATADIR": str(work / "faust-data")}),
        Variant("c", "raw aiokafka", RAW_GROUP, RAW_OUT,
                [py, str(HERE / "raw_baseline.py")],
                {"BENCH_BROKER": bootstrap, "BENCH_GROUP": RAW_GROUP,
                 "BENCH_IN_TOPIC": INPUT_TOPIC, "BENCH_OUT_TOPIC": RAW_OUT}),
        Variant("d", "streams agent", AGENT_APP, AGENT_OUT,
                [py, str(HERE / "agent_baseline.py")],
                {"BENCH_BROKER": bootstrap, "BENCH_AGENT_APP": AGENT_APP,
                 "BENCH_IN_TOPIC": INPUT_TOPIC, "BENCH_OUT_TOPIC": AGENT_OUT,
                 "BENCH_STATE_DIR": str(work / "agent-state")}, f"{AGENT_APP}-dlq"),
    ]


def ratio(summary: dict[str, dict[str, Any]], a: str, b: str) -> float | None:
    """Ratio of the median events/s."""
    if a in summary and b in summary:
        return round(summary[a]["events_per_s"]["median"] / summary[b]["events_per_s"]["median"],
                     3)
    return None


def run_ok(r: Result) -> bool:
    return r.exact and r.content_ok is not False and not r.notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default=os.environ.get("STREAMS_BROKER", "127.0.0.1:9092"),
                        help="bootstrap address (default: $STREAMS_BROKER or 127.0.0.1:9092)")
    parser.add_argument("--count", type=int, default=200_000, help="input events (default 200000)")
    parser.add_argument("--partitions", type=int, default=4,
                        help="partitions of every topic (default 4)")
    parser.add_argument("--variants", default="abcd",
                        help="which to run: a=streams worker, b=faust, c=raw aiokafka, "
                             "d=streams agent (default abcd)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per variant (default max(120, count/500))")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip comparing output contents with the expected records")
    add_run_options(parser, RESULTS)
    args = parser.parse_args(argv)

    bootstrap = args.broker
    host = bootstrap.rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        parser.error("--broker must be a local address (127.0.0.1:PORT)")
    if not admin.broker_answers(bootstrap):
        parser.error(f"no Kafka broker answers at {bootstrap} "
                     "(start one with `streams kafka start --port PORT`)")
    timeout = args.timeout or max(120.0, args.count / 500)

    info = RunInfo.start(args, "bench-profile-notifications-", _log)
    expected = prepare(bootstrap, args.count, args.partitions)
    n_expected = sum(expected.values())
    keys = [k for k in "abcd" if k in args.variants]
    runs: dict[str, list[Result]] = {k: [] for k in keys}
    for rnd, order in enumerate(info.order(keys), start=1):
        for key in order:
            run_dir = info.work / f"{key}-{rnd}"
            [v] = [v for v in variants(bootstrap, args.partitions, run_dir) if v.key == key]
            reset_variant(bootstrap, v, args.partitions)
            _log(f"({v.key}) {v.label}, round {rnd}/{args.repeat}: {' '.join(v.cmd[1:])}")
            r = asyncio.run(measure(v, bootstrap, args.partitions, n_expected, args.count,
                                    timeout, run_dir))
            if not args.no_verify:
                got = asyncio.run(read_output(bootstrap, v.out_topic, args.partitions,
                                              n_expected))
                r.content_ok = same_content(got, expected)
                if not r.content_ok:
                    r.notes.append("output records differ from the expected keys/values")
            if v.dlq:
                dlq = sum(admin.run(admin.end_offsets(bootstrap, v.dlq)).values())
                if dlq:
                    r.notes.append(f"{dlq} records in {v.dlq}")
            runs[key].append(r)
            _log(f"({v.key}) {v.label}: {r.seconds:.2f}s, {r.events_per_s:,.0f} events/s"
                 + (f" -- {'; '.join(r.notes)}" if r.notes else ""))

    summary: dict[str, dict[str, Any]] = {}
    for key, rs in runs.items():
        summary[key] = {"label": rs[0].label, "runs": len(rs),
                        "events_per_s": spread((r.events_per_s for r in rs), 1),
                        "seconds": spread((r.seconds for r in rs), 3),
                        "first_output_s": spread((r.first_output_s for r in rs), 3),
                        "all_ok": all(run_ok(r) for r in rs),
                        "runs_detail": [asdict(r) for r in rs]}
    r_ab, r_ac = ratio(summary, "a", "b"), ratio(summary, "a", "c")
    r_da, r_db = ratio(summary, "d", "a"), ratio(summary, "d", "b")
    finish = info.finish()
    print()
    print(f"profile_notifications: {args.count} events, {n_expected} notifications, "
          f"{args.partitions} partitions, broker {bootstrap}; {args.repeat} round(s) "
          f"({'; '.join(info.orders)}); load average "
          f"{finish['load_average_1_5_15_min']['start']} -> "
          f"{finish['load_average_1_5_15_min']['end']}")
    print(f"{'variant':<18} {'events/s median [min-max]':>32} {'median s':>9} "
          f"{'1st out s':>10}  ok")
    for key, sm in summary.items():
        bad = [n for r in runs[key] for n in r.notes]
        print(f"({key}) {sm['label']:<14} {fmt_spread(sm['events_per_s']):>32} "
              f"{sm['seconds']['median']:>9.2f} {sm['first_output_s']['median']:>10.2f}  "
              f"{'yes' if sm['all_ok'] else 'NO: ' + '; '.join(bad)}")
    if r_ab is not None:
        print(f"throughput ratio (a)/(b) streams/faust: {r_ab:.3f}")
    if r_ac is not None:
        print(f"throughput ratio (a)/(c) streams/raw:   {r_ac:.3f}")
    if r_da is not None:
        print(f"throughput ratio (d)/(a) agent/declarative: {r_da:.3f} (target >= 0.667)")
    if r_db is not None:
        print(f"throughput ratio (d)/(b) agent/faust agent: {r_db:.3f} (target >= 5)")

    rows = [{"label": f"({key}) {sm['label']}", "unit": "events/s", **sm["events_per_s"],
             "note": "process start to every output; not at saturation"
             + ("" if sm["all_ok"] else "; outputs FAILED the check")}
            for key, sm in summary.items()]
    doc = {
        "benchmark": "profile_notifications",
        "summary": {"rows": rows, "measurement": args.repeat >= 3},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "broker": bootstrap, "count": args.count, "partitions": args.partitions, "seed": SEED,
        "expected_outputs": n_expected,
        "measure": "seconds from subprocess start until the output topic holds the expected "
                   "number of records; events/s = count / seconds; median and min-max over "
                   "the rounds (every variant once per round, order rotated), ratios of the "
                   "medians",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        **finish,
        "variants": summary,
        "ratios": {"a_over_b": r_ab, "a_over_c": r_ac, "d_over_a": r_da, "d_over_b": r_db},
    }
    out = write_results(args.results, json.dumps(doc, indent=2) + "\n")
    print(f"results written to {out}")
    return 0 if all(sm["all_ok"] for sm in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
