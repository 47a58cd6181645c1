"""Stream-stream join benchmark: order_shipments' join vs. a windowed aggregation of the same
input (this framework) vs. Quix Streams' ``join_interval``.

Standalone script (not collected by pytest), against a running broker::

    python tests/bench/bench_joins.py                      # 1,000,000 orders (+ ~900k shipments)
    python tests/bench/bench_joins.py --count 20000        # quick check

1. deletes its topics and consumer groups (all named ``jbench...``), produces COUNT orders and
   their shipments once with ``streams generate``'s order_shipments generator (seed 42, one
   order per 100 ms of event time; ~10 % never shipped, ~5 % shipped 7-9 days later; up to
   10 min out of order; event time from an hour ago on, so that the broker's time retention
   deletes nothing during the run) into ``jbench-orders`` / ``jbench-shipments`` (4 partitions
   each, keyed by order id, Kafka timestamp = ts);
2. runs each variant as a subprocess with a fresh consumer group and state directory, timing
   from process start until its group has committed the end offset of every input partition
   (polled every 0.2 s), then stops it with SIGTERM:

   a. ``join``: the framework running order_shipments' left join (tests/bench/joins_topology.py);
   b. ``window``: the framework running a tumbling 1 h count per key on the same two topics
      (the same records through windowed aggregations: the baseline for a);
   c. ``quix``: Quix Streams' inner ``join_interval`` (tests/bench/joins_quix.py);

3. checks the outputs against an oracle computed here (pairs: same order id, shipment in
   [order ts, order ts + 7 d]; unshipped: orders without one), reports events/s, the ratios
   a/b and a/c, and the size on disk of each run's state directory (for a: the join buffers),
   and writes tests/bench/results/joins.json.
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
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streams.devtools import generate  # noqa: E402
from streams.kafka import admin  # noqa: E402

INPUTS = ["jbench-orders", "jbench-shipments"]
PARTITIONS = 4
SEED = 42
DAY = 86_400_000
RESULTS = HERE / "results" / "joins.json"

VARIANTS: dict[str, dict[str, Any]] = {
    "join": {"group": "jbench_join", "label": "streams: order_shipments join",
             "cmd": [sys.executable, str(HERE / "joins_runner.py")],
             "env": {"BENCH_VARIANT": "join"}},
    "window": {"group": "jbench_window", "label": "streams: tumbling 1 h count (same input)",
               "cmd": [sys.executable, str(HERE / "joins_runner.py")],
               "env": {"BENCH_VARIANT": "window"}},
    "quix": {"group": "jbench-quix", "label": "Quix Streams join_interval (inner)",
             "cmd": [sys.executable, str(HERE / "joins_quix.py")],
             "env": {"BENCH_GROUP": "jbench-quix"}},
}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def oracle(events: list[tuple[str, str, dict[str, Any]]]) -> tuple[set, set]:
    shipments: dict[str, list[dict]] = {}
    for topic, _k, v in events:
        if topic == "shipments":
            shipments.setdefault(v["order_id"], []).append(v)
    pairs, unshipped = set(), set()
    for topic, _k, o in events:
        if topic != "orders":
            continue
        matched = [s["shipment_id"] for s in shipments.get(o["order_id"], [])
                   if o["ts"] <= s["ts"] <= o["ts"] + 7 * DAY]
        pairs.update((o["order_id"], s) for s in matched)
        if not matched:
            unshipped.add(o["order_id"])
    return pairs, unshipped


async def produce(bootstrap: str, events: list[tuple[str, str, dict[str, Any]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all",
                                max_batch_size=1024 * 1024)
    await producer.start()
    try:
        futures = []
        for topic, key, value in events:
            futures.append(await producer.send(
                f"jbench-{topic}", json.dumps(value, separators=(",", ":")).encode(),
                key=key.encode(), timestamp_ms=value["ts"]))
            if len(futures) >= 50_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def delete_ours(bootstrap: str) -> None:
    from tests.bench.bench_windows import _delete_groups

    admin.run(_delete_groups(bootstrap, [v["group"] for v in VARIANTS.values()]))
    doomed = [t for t in admin.run(admin.list_topics(bootstrap))
              if t.startswith(("jbench-", "jbench_")) or "jbench" in t]
    if doomed:
        admin.run(admin.delete_topics(bootstrap, doomed))


def done(bootstrap: str, group: str, ends: dict[tuple[str, int], int]) -> int:
    committed = admin.run(admin.committed_offsets(bootstrap, group, INPUTS))
    return sum(min(committed.get(tp, 0), end) for tp, end in ends.items())


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(key: str, bootstrap: str, total: int, ends: dict, run_dir: Path,
        timeout: float) -> dict[str, Any]:
    v = VARIANTS[key]
    state = run_dir / f"state-{key}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_BROKER": bootstrap,
           "BENCH_STATE_DIR": str(state), **v["env"],
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log_path = run_dir / f"{key}.log"
    with open(log_path, "wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(v["cmd"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        try:
            last = started
            while True:
                consumed = done(bootstrap, v["group"], ends)
                if consumed >= total:
                    elapsed = time.monotonic() - started
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"{key} exited with {proc.returncode}; see {log_path}")
                if time.monotonic() - started > timeout:
                    raise RuntimeError(f"{key}: {consumed}/{total} after {timeout}s; {log_path}")
                if time.monotonic() - last > 30:
                    _log(f"  ... {key}: {consumed}/{total} committed")
                    last = time.monotonic()
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    return {"label": v["label"], "seconds": round(elapsed, 2),
            "events_per_s": round(total / elapsed, 1), "state_bytes": dir_bytes(state),
            "exit_code": proc.returncode}


async def read(bootstrap: str, topic: str) -> list[Any]:
    parts = (await admin.topic_partitions(bootstrap, [topic])).get(topic, [])
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         max_partition_fetch_bytes=8 * 1024 * 1024)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in parts]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        out: list[Any] = []
        while not all([await c.position(tp) >= ends[tp] for tp in tps]):
            for recs in (await c.getmany(timeout_ms=500, max_records=50000)).values():
                out.extend(recs)
        return out
    finally:
        await c.stop()


def check_pairs(bootstrap: str, topic: str, pairs: set) -> dict[str, Any]:
    got: dict[tuple[str, str], int] = {}
    for r in asyncio.run(read(bootstrap, topic)):
        v = json.loads(r.value)
        k = (v["order_id"], v["shipment_id"])
        got[k] = got.get(k, 0) + 1
    return {"pairs_expected": len(pairs), "pairs_missing": len(pairs - set(got)),
            "pairs_extra": len(set(got) - pairs),
            "duplicates": sum(got.values()) - len(got)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000, help="orders (shipments: ~0.9x)")
    ap.add_argument("--variants", default="join,window,quix")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--broker", default=os.environ.get("STREAMS_BROKER", "127.0.0.1:9092"))
    args = ap.parse_args(argv)
    bootstrap = args.broker
    _log(f"generating {args.count} orders and their shipments")
    # Event time starts an hour ago: records (and outputs, written with event time) older than
    # the broker's 7-day time retention would be deleted under the running benchmark.
    start_ms = (int(time.time()) - 3600) * 1000
    events = generate.events("order_shipments", args.count, seed=SEED, start_ms=start_ms,
                             step_ms=100)
    pairs, unshipped = oracle(events)
    delete_ours(bootstrap)
    admin.run(admin.ensure_topics(bootstrap, [admin.TopicSpec(t, PARTITIONS) for t in INPUTS]))
    _log(f"producing {len(events)} records")
    t0 = time.monotonic()
    asyncio.run(produce(bootstrap, events))
    _log(f"produced in {time.monotonic() - t0:.1f}s")
    ends = {}
    for t in INPUTS:
        ends.update({(t, p): o for p, o in admin.run(admin.end_offsets(bootstrap, t)).items()})
    total = sum(ends.values())
    run_dir = Path(tempfile.mkdtemp(prefix="jbench-"))
    results: dict[str, Any] = {}
    for key in args.variants.split(","):
        _log(f"running {key}")
        results[key] = run(key, bootstrap, total, ends, run_dir, args.timeout)
        _log(f"  {key}: {results[key]['seconds']} s, {results[key]['events_per_s']} events/s, "
             f"state {results[key]['state_bytes'] / 1e6:.1f} MB")
    if "join" in results:
        results["join"].update(check_pairs(bootstrap, "jbench-out-pairs", pairs))
        got_unshipped = {json.loads(r.value)["order_id"]
                         for r in asyncio.run(read(bootstrap, "jbench-out-unshipped"))}
        results["join"]["unshipped_expected"] = len(unshipped)
        results["join"]["unshipped_emitted"] = len(got_unshipped & unshipped)
        results["join"]["unshipped_extra"] = len(got_unshipped - unshipped)
    if "quix" in results:
        results["quix"].update(check_pairs(bootstrap, "jbench-out-quix", pairs))

    def ratio(a: str, b: str) -> float | None:
        if a in results and b in results:
            return round(results[a]["events_per_s"] / results[b]["events_per_s"], 3)
        return None

    import quixstreams

    summary = {
        "command": "python tests/bench/bench_joins.py " + " ".join(argv or sys.argv[1:]),
        "orders": args.count, "records": total, "partitions": PARTITIONS,
        "results": results,
        "ratio_join_to_window": ratio("join", "window"),
        "ratio_join_to_quix": ratio("join", "quix"),
        "quixstreams": quixstreams.__version__, "python": platform.python_version(),
        "cpus": os.cpu_count(), "loadavg_after": list(os.getloadavg()),
        "notes": ("Timing: process start until the group committed every input offset. "
                  "state_bytes: the run's RocksDB directory after SIGTERM (for 'join': the join "
                  "buffers and unmatched markers). With 100 ms per order the whole input spans "
                  "less than the 7-day window, so the buffers hold every record until the end. "
                  "Unshipped orders are emitted only once window + grace closed by stream time; "
                  "the last ones stay open (no later record closes them)."),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    _log(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
