"""Stream-stream join benchmark at saturation: order_shipments' join (this framework) vs. Quix
Streams' ``join_interval``, on 1,000,000 orders and their shipments.

Standalone script (not collected by pytest), against a running broker::

    python tests/bench/bench_joins.py                      # 1,000,000 orders (+ ~900k shipments)
    python tests/bench/bench_joins.py --count 20000        # quick check

1. deletes its topics and consumer groups (all named ``jbench...``), produces COUNT orders and
   their shipments once with ``streams generate``'s order_shipments generator (seed 42, one
   order per 100 ms of event time; ~10 % never shipped, ~5 % shipped 7-9 days later; up to
   10 min out of order; event time from an hour ago on, so that the broker's time retention
   deletes nothing during the run) into ``jbench-orders`` / ``jbench-shipments`` (4 partitions
   each, keyed by order id, Kafka timestamp = ts);
2. runs ``--repeat`` rounds (default 3), each running every variant once in an order rotated
   each round; each run is a subprocess with a fresh consumer group, state directory and
   output/internal topics. Its rate is measured at saturation (tests/bench/saturation.py): the
   group's committed offsets over both inputs between two commit events ``--span`` (30 s)
   apart, ``--warmup`` (5 s) after its first commit. Then it is stopped with SIGTERM (it
   commits what it processed; with ``--drain`` only once every input offset is committed):

   a. ``join``: the framework running order_shipments' left join (tests/bench/joins_topology.py);
   b. ``quix``: Quix Streams' inner ``join_interval`` (tests/bench/joins_quix.py), the same
      interval (0 to 7 days after the order);
   c. ``window`` (only with ``--variants``): a tumbling 1 h count per key on the same two
      topics, the same records through windowed aggregations: a baseline for a;

3. checks each run's outputs against an oracle computed here (pairs: same order id, shipment
   in [order ts, order ts + 7 d]; unshipped: orders without one), over the records the run
   processed (its committed offsets; records go to partition crc32(order id) mod 4 of both
   topics, in order, so the oracle knows each one's offset): 0 of the pairs whose order and
   shipment were both processed missing, none outside the oracle, none twice; reports the
   median and min-max events/s per variant, the ratios of the medians, and the disk usage
   (like ``du``) of each run's state directory after the stop (both join sides' buffers: the
   framework's RocksDB, Quix's stores), and writes ``--results`` (default
   tests/bench/results/joins.json) with the load average at start and end and a ``summary``
   for tests/bench/run_all.py.

Logs and state go under one fresh directory per run (``--work-dir`` names its parent).
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
import zlib
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streams.devtools import generate  # noqa: E402
from streams.kafka import admin  # noqa: E402
from tests.bench.rounds import RunInfo, add_run_options, delete_groups, fmt_spread, spread  # noqa: E402,E501
from tests.bench.rounds import write_results  # noqa: E402
from tests.bench.saturation import BacklogTooSmall, Saturation, measure as saturation  # noqa: E402

INPUTS = ["jbench-orders", "jbench-shipments"]
PARTITIONS = 4
SEED = 42
DAY = 86_400_000
RESULTS = HERE / "results" / "joins.json"

# "topics": the variant's own output and internal topics (names, or prefixes ending in "-"),
# deleted before each of its runs so that it starts without state and writes fresh outputs
VARIANTS: dict[str, dict[str, Any]] = {
    "join": {"group": "jbench_join", "label": "streams: order_shipments join",
             "cmd": [sys.executable, str(HERE / "joins_runner.py")],
             "env": {"BENCH_VARIANT": "join"},
             "topics": ["jbench-out-pairs", "jbench-out-unshipped", "jbench_join-"]},
    "window": {"group": "jbench_window", "label": "streams: tumbling 1 h count (same input)",
               "cmd": [sys.executable, str(HERE / "joins_runner.py")],
               "env": {"BENCH_VARIANT": "window"},
               "topics": ["jbench-out-windows", "jbench_window-"]},
    "quix": {"group": "jbench-quix", "label": "Quix Streams join_interval (inner)",
             "cmd": [sys.executable, str(HERE / "joins_quix.py")],
             "env": {"BENCH_GROUP": "jbench-quix"},
             "topics": ["jbench-out-quix", "changelog__jbench-quix-", "repartition__jbench-quix-"]},
}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


Position = tuple[int, int]          # (partition, offset) of a record in its input topic


def positions(events: list[tuple[str, str, dict[str, Any]]]) -> list[Position]:
    """Where each event lands: partition = crc32(key) mod PARTITIONS (the same for both
    topics, so they are co-partitioned), offsets in production order (idempotent producer)."""
    nxt: dict[tuple[str, int], int] = {}
    out = []
    for topic, key, _v in events:
        p = zlib.crc32(key.encode()) % PARTITIONS
        off = nxt.get((topic, p), 0)
        nxt[(topic, p)] = off + 1
        out.append((p, off))
    return out


def oracle(events: list[tuple[str, str, dict[str, Any]]],
           where: list[Position]) -> tuple[dict[tuple[str, str], tuple[Position, Position]],
                                           set[str]]:
    """Pairs (order id, shipment id) with the positions of the order and of the shipment, and
    the orders without a shipment in [order ts, order ts + 7 d]."""
    shipments: dict[str, list[tuple[dict, Position]]] = {}
    for (topic, _k, v), pos in zip(events, where, strict=True):
        if topic == "shipments":
            shipments.setdefault(v["order_id"], []).append((v, pos))
    pairs: dict[tuple[str, str], tuple[Position, Position]] = {}
    unshipped = set()
    for (topic, _k, o), pos in zip(events, where, strict=True):
        if topic != "orders":
            continue
        matched = [(s["shipment_id"], spos) for s, spos in shipments.get(o["order_id"], [])
                   if o["ts"] <= s["ts"] <= o["ts"] + 7 * DAY]
        for sid, spos in matched:
            pairs[(o["order_id"], sid)] = (pos, spos)
        if not matched:
            unshipped.add(o["order_id"])
    return pairs, unshipped


def pairs_within(pairs: dict[tuple[str, str], tuple[Position, Position]],
                 committed: dict[tuple[str, int], int]) -> set[tuple[str, str]]:
    """The pairs whose order and shipment are both in the processed (committed) prefix of
    their partitions."""
    return {pair for pair, ((op, oo), (sp, so)) in pairs.items()
            if oo < committed.get(("jbench-orders", op), 0)
            and so < committed.get(("jbench-shipments", sp), 0)}


def produce(bootstrap: str, events: list[tuple[str, str, dict[str, Any]]],
            where: list[Position]) -> None:
    from confluent_kafka import Producer

    prod = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                     "linger.ms": 50, "batch.size": 1_000_000,
                     "queue.buffering.max.messages": 1_000_000})
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for i, ((topic, key, value), (part, _off)) in enumerate(zip(events, where, strict=True)):
        payload = json.dumps(value, separators=(",", ":")).encode()
        while True:
            try:
                prod.produce(f"jbench-{topic}", payload, key.encode(), partition=part,
                             timestamp=value["ts"], on_delivery=on_delivery)
                break
            except BufferError:
                prod.poll(0.05)
        if i % 10_000 == 0:
            prod.poll(0)
    if prod.flush(120):
        raise SystemExit("could not deliver every record within 120 s")
    if errors:
        raise SystemExit(f"{len(errors)} records not delivered: {errors[0]}")


def delete_ours(bootstrap: str) -> None:
    admin.run(delete_groups(bootstrap, [v["group"] for v in VARIANTS.values()]))
    doomed = [t for t in admin.run(admin.list_topics(bootstrap))
              if t.startswith(("jbench-", "jbench_")) or "jbench" in t]
    if doomed:
        admin.run(admin.delete_topics(bootstrap, doomed))


def reset_variant(bootstrap: str, key: str) -> None:
    """A fresh group and no output or internal topics of ``key``'s previous run."""
    v = VARIANTS[key]
    admin.run(delete_groups(bootstrap, [v["group"]]))
    doomed = [t for t in admin.run(admin.list_topics(bootstrap))
              if t in v["topics"] or any(t.startswith(p) for p in v["topics"] if p.endswith("-"))]
    if doomed:
        admin.run(admin.delete_topics(bootstrap, doomed))


def du_bytes(path: Path) -> int:
    """Disk usage of ``path`` (allocated blocks, as ``du`` counts them)."""
    return sum(f.lstat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) \
        if path.exists() else 0


async def _measure(bootstrap: str, proc: subprocess.Popen, group: str, total: int,
                   started: float, warmup: float, span: float, timeout: float, drain: bool,
                   log_path: Path) -> tuple[Saturation | None, float | None]:
    """The rate at saturation over both inputs' committed offsets; with ``drain`` (or when the
    backlog drains before the span is over) also the wait, outside the span, until every input
    offset is committed: (saturation or None, seconds from process start to drained or
    None)."""
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await client.start()
    try:
        async def sample() -> tuple[float, int]:
            if proc.poll() is not None:
                raise RuntimeError(f"{group} exited with {proc.returncode}; see {log_path}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{group}: not done after {timeout:.0f} s; see {log_path}")
            try:
                offsets = await client.list_consumer_group_offsets(group)
            except Exception:                    # coordinator not ready yet
                return time.monotonic(), 0
            return time.monotonic(), sum(m.offset for tp, m in offsets.items()
                                         if tp.topic in INPUTS and m.offset > 0)
        try:
            sat: Saturation | None = await saturation(sample, end_total=total, warmup_s=warmup,
                                                      span_s=span, timeout_s=timeout)
        except BacklogTooSmall:
            sat = None
        if sat is not None and not drain:
            return sat, None
        last = time.monotonic()
        while True:
            t, done = await sample()
            if done >= total:
                return sat, t - started
            if t - last > 30:
                _log(f"  ... {group}: {done}/{total} committed")
                last = t
            await asyncio.sleep(0.2)
    finally:
        await client.close()


def run(key: str, bootstrap: str, total: int, run_dir: Path, timeout: float,
        warmup: float, span: float, drain: bool) -> dict[str, Any]:
    """One run of ``key``: its rate at saturation, then SIGTERM (it commits what it processed;
    with ``drain`` only once every input offset is committed); the state directory's disk
    usage after the stop."""
    v = VARIANTS[key]
    run_dir.mkdir(parents=True, exist_ok=True)
    state = run_dir / f"state-{key}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_BROKER": bootstrap,
           "BENCH_STATE_DIR": str(state), "TMPDIR": str(run_dir), **v["env"],
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log_path = run_dir / f"{key}.log"
    with open(log_path, "wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(v["cmd"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        try:
            sat, drained_s = asyncio.run(_measure(bootstrap, proc, v["group"], total, started,
                                                  warmup, span, timeout, drain, log_path))
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    if sat is not None:
        rate = sat.rate
    else:
        assert drained_s is not None
        rate = total / drained_s
    processed = sum(admin.run(admin.committed_offsets(bootstrap, v["group"], INPUTS)).values())
    return {"label": v["label"], "events_per_s": round(rate, 1), "saturated": sat is not None,
            "span": sat.as_dict() if sat else None, "processed": processed,
            "seconds_to_drain": None if drained_s is None else round(drained_s, 2),
            "state_du_bytes": du_bytes(state), "exit_code": proc.returncode}


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


def check_pairs(bootstrap: str, topic: str, pairs: dict, expected: set) -> dict[str, Any]:
    """``expected``: the pairs both of whose records were processed; none of them may be
    missing, and no pair emitted may be outside the oracle's pairs."""
    got: dict[tuple[str, str], int] = {}
    for r in asyncio.run(read(bootstrap, topic)):
        v = json.loads(r.value)
        k = (v["order_id"], v["shipment_id"])
        got[k] = got.get(k, 0) + 1
    return {"pairs_expected": len(expected), "pairs_emitted": len(got),
            "pairs_missing": len(expected - got.keys()),
            "pairs_extra": len(got.keys() - pairs.keys()),
            "duplicates": sum(got.values()) - len(got)}


def check(key: str, bootstrap: str, pairs: dict, unshipped: set) -> dict[str, Any]:
    """The run's outputs against the oracle over the records it processed (its group's
    committed offsets after the stop)."""
    if key == "window":
        return {}
    committed = admin.run(admin.committed_offsets(bootstrap, VARIANTS[key]["group"], INPUTS))
    expected = pairs_within(pairs, committed)
    if key == "join":
        out = check_pairs(bootstrap, "jbench-out-pairs", pairs, expected)
        got_unshipped = {json.loads(r.value)["order_id"]
                         for r in asyncio.run(read(bootstrap, "jbench-out-unshipped"))}
        out.update(unshipped_emitted=len(got_unshipped),
                   unshipped_extra=len(got_unshipped - unshipped))
        out["ok"] = not (out["pairs_missing"] or out["pairs_extra"] or out["duplicates"]
                         or out["unshipped_extra"])
        return out
    out = check_pairs(bootstrap, "jbench-out-quix", pairs, expected)
    out["ok"] = not (out["pairs_missing"] or out["pairs_extra"] or out["duplicates"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000, help="orders (shipments: ~0.9x)")
    ap.add_argument("--variants", default="join,quix",
                    help="join, quix, window (the framework's windowed count of the same "
                         "input: a baseline, not run by default)")
    ap.add_argument("--warmup", type=float, default=5.0,
                    help="seconds after the first commit before the span starts")
    ap.add_argument("--span", type=float, default=30.0, help="measured seconds")
    ap.add_argument("--drain", action="store_true",
                    help="let every variant finish the input before stopping it (default: "
                         "stop after the span and check the pairs of the records processed)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--broker", default=os.environ.get("STREAMS_BROKER", "127.0.0.1:9092"))
    add_run_options(ap, RESULTS)
    args = ap.parse_args(argv)
    bootstrap = args.broker
    keys = args.variants.split(",")
    if set(keys) - set(VARIANTS):
        ap.error(f"--variants: choose from {','.join(VARIANTS)}")
    info = RunInfo.start(args, "jbench-", _log)
    _log(f"generating {args.count} orders and their shipments")
    # Event time starts an hour ago: records (and outputs, written with event time) older than
    # the broker's 7-day time retention would be deleted under the running benchmark.
    start_ms = (int(time.time()) - 3600) * 1000
    events = generate.events("order_shipments", args.count, seed=SEED, start_ms=start_ms,
                             step_ms=100)
    where = positions(events)
    pairs, unshipped = oracle(events, where)
    delete_ours(bootstrap)
    admin.run(admin.ensure_topics(bootstrap, [admin.TopicSpec(t, PARTITIONS) for t in INPUTS]))
    _log(f"producing {len(events)} records")
    t0 = time.monotonic()
    produce(bootstrap, events, where)
    _log(f"produced in {time.monotonic() - t0:.1f}s")
    ends = {}
    for t in INPUTS:
        ends.update({(t, p): o for p, o in admin.run(admin.end_offsets(bootstrap, t)).items()})
    total = sum(ends.values())
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
    for rnd, order in enumerate(info.order(keys), start=1):
        for key in order:
            _log(f"running {key}, round {rnd}/{args.repeat}")
            reset_variant(bootstrap, key)
            r = run(key, bootstrap, total, info.work / f"{key}-{rnd}", args.timeout,
                    args.warmup, args.span, args.drain)
            r.update(check(key, bootstrap, pairs, unshipped))
            runs[key].append(r)
            _log(f"  {key}: {r['events_per_s']} events/s "
                 f"({'span ' + str(r['span']) if r['saturated'] else 'NOT saturated'}), "
                 f"processed {r['processed']:,}, state on disk "
                 f"{r['state_du_bytes'] / 1e6:.1f} MB, pairs missing {r.get('pairs_missing')} "
                 f"of {r.get('pairs_expected')}, extra {r.get('pairs_extra')}")

    results: dict[str, Any] = {}
    for key, rs in runs.items():
        results[key] = {"label": VARIANTS[key]["label"],
                        "events_per_s": spread((r["events_per_s"] for r in rs), 1),
                        "processed": [r["processed"] for r in rs],
                        "state_du_bytes": spread((r["state_du_bytes"] for r in rs), 0),
                        "saturated": all(r["saturated"] for r in rs),
                        "pairs_missing": [r.get("pairs_missing") for r in rs],
                        "runs": rs}

    def ratio(a: str, b: str) -> float | None:
        if a in results and b in results:
            return round(results[a]["events_per_s"]["median"]
                         / results[b]["events_per_s"]["median"], 3)
        return None

    import quixstreams

    rows = []
    for r in results.values():
        done = sorted(r["processed"])[len(r["processed"]) // 2]
        note = [f"state on disk {r['state_du_bytes']['median'] / 1e6:,.0f} MB after "
                f"{done:,} of {total:,} records" if not args.drain else
                f"state on disk {r['state_du_bytes']['median'] / 1e6:,.0f} MB"]
        missing = [m for m in r["pairs_missing"] if m is not None]
        if missing:
            note.append(f"pairs missing {'/'.join(str(m) for m in missing)}")
        if not r["saturated"]:
            note.append("backlog drained: not at saturation")
        rows.append({"label": r["label"], "unit": "events/s", **r["events_per_s"],
                     "note": "; ".join(note)})
    summary = {
        "summary": {"rows": rows, "measurement": args.repeat >= 3 and args.span >= 30},
        "command": "python tests/bench/bench_joins.py " + " ".join(argv or sys.argv[1:]),
        "orders": args.count, "records": total, "partitions": PARTITIONS,
        "results": results,
        "ratio_join_to_window": ratio("join", "window"),
        "ratio_join_to_quix": ratio("join", "quix"),
        "quixstreams": quixstreams.__version__, "python": platform.python_version(),
        "cpus": os.cpu_count(), **info.finish(),
        "notes": ("events_per_s: the group's committed input offsets (both inputs) between "
                  "two commit events >= span apart, warm-up after its first commit "
                  "(tests/bench/saturation.py); median and min-max over the rounds, ratios of "
                  "the medians. Then each variant is stopped (SIGTERM: it commits what it "
                  "processed; with --drain only after every input offset is committed) and its "
                  "outputs are checked against the pairs whose order and shipment it both "
                  "processed (its committed offsets): pairs_missing must be 0, pairs_extra "
                  "(not in the oracle at all) 0, duplicates 0. state_du_bytes: disk usage "
                  "(allocated blocks, like du) "
                  "of the run's state directory after SIGTERM: for 'join' the framework's "
                  "RocksDB with both sides' join buffers and the unmatched markers, for 'quix' "
                  "Quix's RocksDB stores of both sides of join_interval; after a stop at the span "
                  "end it holds the records processed so far. With 100 ms per order the "
                  "whole input spans less than the 7-day window, so the buffers hold every "
                  "record until the end. Unshipped orders are emitted only once window + grace "
                  "closed by stream time; the last ones stay open (no later record closes "
                  "them)."),
    }
    print()
    print(f"joins: {args.count:,} orders, {total:,} records, {args.repeat} round(s) "
          f"({'; '.join(info.orders)}), load average {summary['load_average_1_5_15_min']}")
    for key, r in results.items():
        print(f"{key:<7} {r['label']:<42} events/s {fmt_spread(r['events_per_s'])}, state on "
              f"disk {fmt_spread(r['state_du_bytes'])} B, pairs missing {r['pairs_missing']}")
    print(f"ratio join/window {summary['ratio_join_to_window']}, "
          f"join/quix {summary['ratio_join_to_quix']} (medians)")
    out = write_results(args.results, json.dumps(summary, indent=2) + "\n")
    _log(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
