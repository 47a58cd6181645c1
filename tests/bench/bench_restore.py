"""Benchmark: restoring a table from its changelog (streams.state.recovery.Restoration, as the
worker restores).

Steps (all in one run, against one broker):

1. (Re)create the 1-partition compacted changelog topic ``bench-restore-changelog`` and produce
   ``--keys`` records with distinct keys, JSON values of about ``--value-bytes`` bytes and the
   header ``streams-offsets={"bench-input:0": i+1}``.
2. Baseline: a bare aiokafka consume of that partition from beginning to end that only counts
   records, with the consumer settings the restore uses (read_committed, 8 MiB partition
   fetches, 64 MiB fetches, getmany max_records=20000): the floor Kafka+aiokafka deliver.
3. Restore: a fresh TaskStore (table ``t``) in a temp dir, restored with
   committed={("bench-input", 0): N} (every record applies); verify N keys and sample values.
4. Filtered restore: committed={("bench-input", 0): N//2} -> exactly N//2 keys (verified).
5. Steps 2 and 3 run ``--repeat`` rounds (default 3), in an order rotated each round (baseline
   restore, restore baseline, ...). Print the median and min-max records/s of baseline and
   restore and the ratio of the medians; write them, every run and the load average at start
   and end to ``--results`` (default tests/bench/results/restore.json).

The restored stores go under one fresh directory per run (``--work-dir`` names its parent).

Optional ``--profile``: an extra full restore under cProfile (top functions printed and saved),
plus isolated timings of the header decode and of the RocksDB writes over the same data.

Usage:
  python tests/bench/bench_restore.py --broker 127.0.0.1:49092 --keys 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streams.kafka.admin import TopicSpec, delete_topics, ensure_topics  # noqa: E402
from streams.state.meta import OFFSETS_HEADER  # noqa: E402
from streams.state.recovery import (ChangelogFilter, OpenDecision, Restoration,  # noqa: E402
                                    restore_consumer)
from streams.state.meta import TaskMeta  # noqa: E402
from streams.state.meta import encode_offsets  # noqa: E402
from streams.state.store import TaskStore  # noqa: E402
from tests.bench.rounds import RunInfo, add_run_options, fmt_spread, spread  # noqa: E402
from tests.bench.rounds import write_results  # noqa: E402

TOPIC = "bench-restore-changelog"
INPUT_TOPIC = "bench-input"
TABLE = "t"
RESULTS = Path(__file__).resolve().parent / "results" / "restore.json"


# -- data -----------------------------------------------------------------------------------------
def make_key(i: int) -> bytes:
    return b"driver-%08d" % i


def make_value(i: int, value_bytes: int) -> bytes:
    """A deterministic JSON value of about ``value_bytes`` bytes (padded with a ``pad`` field)."""
    base = {"driver_id": f"driver-{i:08d}", "rides": i % 1000,
            "fare_total": f"{i % 100000}.{i % 100:02d}"}
    raw = json.dumps(base, separators=(",", ":"))
    room = value_bytes - len(raw) - len(',"pad":""')
    if room > 0:
        base["pad"] = "x" * room
        raw = json.dumps(base, separators=(",", ":"))
    return raw.encode()


def make_header(i: int) -> bytes:
    return encode_offsets({(INPUT_TOPIC, 0): i + 1})


# -- produce --------------------------------------------------------------------------------------
async def produce(broker: str, n: int, value_bytes: int) -> dict:
    await delete_topics(broker, [TOPIC])
    await ensure_topics(broker, [TopicSpec(TOPIC, 1, {"cleanup.policy": "compact"})])
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks=1, linger_ms=20,
                                max_batch_size=1024 * 1024, max_request_size=16 * 1024 * 1024)
    await producer.start()
    started = time.perf_counter()
    chunk = 50_000
    try:
        for lo in range(0, n, chunk):
            futures = []
            for i in range(lo, min(n, lo + chunk)):
                futures.append(await producer.send(
                    TOPIC, make_value(i, value_bytes), key=make_key(i), partition=0,
                    headers=[(OFFSETS_HEADER, make_header(i))]))
            await asyncio.gather(*futures)
        await producer.flush()
    finally:
        await producer.stop()
    elapsed = time.perf_counter() - started
    return {"records": n, "seconds": elapsed, "records_per_s": n / elapsed}


# -- baseline -------------------------------------------------------------------------------------
async def baseline_consume(broker: str, batch: int = 20000) -> dict:
    """Count every record of the partition, with the restore's consumer settings."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 * 1024 * 1024,
                                fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    try:
        tp = TopicPartition(TOPIC, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        started = time.perf_counter()
        count = 0
        while await consumer.position(tp) < end:
            records = (await consumer.getmany(tp, timeout_ms=1000, max_records=batch)).get(tp, [])
            count += len(records)
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
    return {"records": count, "seconds": elapsed, "records_per_s": count / elapsed}


# -- restore --------------------------------------------------------------------------------------
async def changelog_end(broker: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker)
    await consumer.start()
    try:
        tp = TopicPartition(TOPIC, 0)
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


async def restore(broker: str, store: TaskStore, accept: ChangelogFilter, end: int) -> int:
    """Restore table ``t`` from the whole changelog partition through the worker's own
    :class:`Restoration` steps; returns the records applied."""
    decision = OpenDecision("restore", "benchmark", restore_from={TOPIC: 0})
    restoration = Restoration("bench", store, {TOPIC: TABLE}, 0, decision, TaskMeta(), {},
                              {TOPIC: end}, [], "", accept)
    consumer = restore_consumer(broker)
    await consumer.start()
    try:
        while not restoration.done:
            await restoration.step(consumer)
    finally:
        await consumer.stop()
    return restoration.applied


async def timed_restore(broker: str, path: Path, committed_upto: int) -> tuple[TaskStore, dict]:
    store = TaskStore(path, [TABLE])
    started = time.perf_counter()
    ends = await changelog_end(broker)
    accept = ChangelogFilter({(INPUT_TOPIC, 0): committed_upto}, inputs=[(INPUT_TOPIC, 0)])
    applied = await restore(broker, store, accept, ends)
    elapsed = time.perf_counter() - started
    return store, {"applied": applied, "seconds": elapsed}


def restore_and_verify(broker: str, path: Path, committed_upto: int, value_bytes: int) -> dict:
    """Restore with ``committed_upto`` committed, check exactly that many keys came back."""
    store, res = asyncio.run(timed_restore(broker, path, committed_upto))
    try:
        if res["applied"] != committed_upto:
            raise AssertionError(f"restore applied {res['applied']}, expected {committed_upto}")
        res.update(verify(store, committed_upto, value_bytes))
    finally:
        store.close()
        TaskStore.destroy(path)
    return res


def verify(store: TaskStore, expected: int, value_bytes: int, samples: int = 2000) -> dict:
    """Count keys, check that exactly keys 0..expected-1 are there and values round-trip."""
    started = time.perf_counter()
    count = 0
    for _ in store.items(TABLE):
        count += 1
    if count != expected:
        raise AssertionError(f"store holds {count} keys, expected {expected}")
    step = max(1, expected // samples)
    probe = sorted({*range(0, expected, step), expected - 1}) if expected else []
    for i in probe:
        got = store.get(TABLE, make_key(i))
        if got != make_value(i, value_bytes):
            raise AssertionError(f"key {make_key(i)!r}: got {got!r}")
        json.loads(got)
    for i in (expected, expected + 1):  # records beyond the committed offsets were skipped
        if store.get(TABLE, make_key(i)) is not None:
            raise AssertionError(f"key {make_key(i)!r} should not have been restored")
    return {"keys": count, "sampled_values": len(probe),
            "verify_seconds": time.perf_counter() - started}


# -- profile --------------------------------------------------------------------------------------
async def fetch_all(broker: str) -> list:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False,
                                auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 * 1024 * 1024,
                                fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    out: list = []
    try:
        tp = TopicPartition(TOPIC, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            out.extend((await consumer.getmany(tp, timeout_ms=1000, max_records=20000)).get(tp, []))
    finally:
        await consumer.stop()
    return out


def isolated_costs(broker: str, n: int, tmp: Path) -> dict:
    """Time the restore's per-record steps in isolation over the same (prefetched) records."""
    records = asyncio.run(fetch_all(broker))
    committed = {(INPUT_TOPIC, 0): n}
    out: dict = {"records": len(records)}

    t0 = time.perf_counter()
    for rec in records:
        dict(rec.headers or ())
    out["headers_dict_s"] = time.perf_counter() - t0

    header_dicts = [dict(rec.headers or ()) for rec in records]
    t0 = time.perf_counter()
    decide = ChangelogFilter(committed)
    for h in header_dicts:
        decide.accept(h)
    out["filter_distinct_headers_s"] = time.perf_counter() - t0

    # In a real changelog all records of one commit share one header value.
    shared = [{OFFSETS_HEADER: make_header((i // 1000) * 1000)} for i in range(len(records))]
    t0 = time.perf_counter()
    decide = ChangelogFilter(committed)
    for h in shared:
        decide.accept(h)
    out["filter_shared_headers_1000_per_commit_s"] = time.perf_counter() - t0

    entries = [(rec.key, rec.value) for rec in records]
    store = TaskStore(tmp / "isolated", [TABLE])
    try:
        t0 = time.perf_counter()
        for lo in range(0, len(entries), 20000):
            store.write_raw(TABLE, entries[lo:lo + 20000])
        out["write_raw_s"] = time.perf_counter() - t0
    finally:
        store.close()
        TaskStore.destroy(tmp / "isolated")
    return out


def profile_restore(broker: str, n: int, tmp: Path, top: int = 25) -> tuple[dict, str]:
    store = TaskStore(tmp / "profiled", [TABLE])
    prof = cProfile.Profile()
    try:
        prof.enable()
        asyncio.run(restore(broker, store, ChangelogFilter({(INPUT_TOPIC, 0): n},
                                                           inputs=[(INPUT_TOPIC, 0)]),
                            asyncio.run(changelog_end(broker))))
        prof.disable()
    finally:
        store.close()
        TaskStore.destroy(tmp / "profiled")
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    # Cumulative time of the main suspects.
    suspects = {
        "ChangelogFilter.accept": "recovery.py:accept",
        "json.loads": "json/__init__.py:loads",
        "write_raw": "store.py:write_raw",
        "getmany": "consumer.py:getmany",
        "record_parse(_unpack/fetcher)": "fetcher.py:_unpack_records",
    }
    cum: dict = {"total_s": sum(v[2] for v in stats.stats.values())}  # type: ignore[attr-defined]
    for label, needle in suspects.items():
        path_part, _, func = needle.partition(":")
        total = 0.0
        for (filename, _line, funcname), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            if funcname == func and filename.endswith(path_part):
                total += ct
        cum[label + "_cum_s"] = total
    return cum, buf.getvalue()


# -- main -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--broker", default=os.environ.get("STREAMS_BROKER", "127.0.0.1:9092"))
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value-bytes", type=int, default=60)
    ap.add_argument("--profile", action="store_true",
                    help="also cProfile a restore and time its steps in isolation")
    ap.add_argument("--skip-produce", action="store_true",
                    help="reuse the topic from a previous run (must hold exactly --keys records)")
    add_run_options(ap, RESULTS)
    ap.add_argument("--output", dest="results", default=argparse.SUPPRESS,
                    help="the same as --results")
    args = ap.parse_args(argv)
    n = args.keys
    results_path = Path(args.results)
    info = RunInfo.start(args, "bench-restore-")

    results: dict = {"benchmark": "restore", "broker": args.broker, "keys": n,
                     "value_bytes": args.value_bytes,
                     "actual_value_bytes": len(make_value(n - 1, args.value_bytes)),
                     "header_bytes": len(make_header(n - 1)),
                     "python": sys.version.split()[0], "platform": platform.platform(),
                     "cpus": os.cpu_count()}

    if not args.skip_produce:
        print(f"producing {n} records to {TOPIC} ...", flush=True)
        results["produce"] = asyncio.run(produce(args.broker, n, args.value_bytes))
        print(f"  produced in {results['produce']['seconds']:.2f}s "
              f"({results['produce']['records_per_s']:,.0f} records/s)", flush=True)

    baselines: list[dict] = []
    restores: list[dict] = []
    tmp = info.work
    for r, order in enumerate(info.order(["baseline", "restore"]), start=1):
        for step in order:
            if step == "baseline":
                b = asyncio.run(baseline_consume(args.broker))
                if b["records"] != n:
                    raise AssertionError(f"baseline consumed {b['records']} records, "
                                         f"expected {n}")
                baselines.append(b)
                print(f"baseline #{r}: {b['records']} records in {b['seconds']:.2f}s "
                      f"({b['records_per_s']:,.0f} records/s)", flush=True)
                continue
            res = restore_and_verify(args.broker, tmp / f"full-{r}", n, args.value_bytes)
            res["records_per_s"] = n / res["seconds"]
            restores.append(res)
            print(f"restore  #{r}: {res['applied']} records in {res['seconds']:.2f}s "
                  f"({res['records_per_s']:,.0f} records/s); verified {res['keys']} keys, "
                  f"{res['sampled_values']} sampled values", flush=True)

    half = n // 2
    filt = restore_and_verify(args.broker, tmp / "filtered", half, args.value_bytes)
    filt["records_read_per_s"] = n / filt["seconds"]
    print(f"filtered restore (committed={half}): applied {filt['applied']} of {n} records "
          f"in {filt['seconds']:.2f}s ({filt['records_read_per_s']:,.0f} records read/s); "
          f"verified {filt['keys']} keys", flush=True)

    base_rate = spread((x["records_per_s"] for x in baselines), 0)
    rest_rate = spread((x["records_per_s"] for x in restores), 0)
    ratio = rest_rate["median"] / base_rate["median"]
    results.update({
        "baseline_runs": baselines, "restore_runs": restores, "filtered_restore": filt,
        "baseline_records_per_s": base_rate,
        "baseline_seconds": spread((x["seconds"] for x in baselines), 3),
        "restore_records_per_s": rest_rate,
        "restore_seconds": spread((x["seconds"] for x in restores), 3),
        "ratio_restore_to_baseline": ratio,
        "measure": "median and min-max over the rounds; the ratio is of the medians",
    })
    print()
    print(f"baseline (aiokafka count only): {fmt_spread(base_rate):>30} records/s")
    print(f"restore (all applied):          {fmt_spread(rest_rate):>30} records/s")
    print(f"ratio restore/baseline:         {ratio:>12.3f} (medians)")

    if args.profile:
        iso = isolated_costs(args.broker, n, tmp)
        results["isolated_costs"] = iso
        print("\nisolated per-step costs over the same records:")
        for k, v in iso.items():
            print(f"  {k:40s} {v:.3f}" if isinstance(v, float) else f"  {k:40s} {v}")
        cum, text = profile_restore(args.broker, n, tmp)
        results["profile_cumulative"] = cum
        print("\ncProfile of the restore (cumulative seconds, under profiler overhead):")
        for k, v in cum.items():
            print(f"  {k:40s} {v:.3f}")
        print(text)
        prof_path = results_path.with_name(results_path.stem + "_profile.txt")
        prof_path.parent.mkdir(parents=True, exist_ok=True)
        prof_path.write_text(text)

    results.update(info.finish())
    write_results(results_path, json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
