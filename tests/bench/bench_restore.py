"""Benchmark: restoring a table from its changelog (streams.state.recovery.Restoration, as the
worker restores).

Steps (all in one run, against one broker):

1. (Re)create the compacted changelog topic ``bench-restore-changelog`` with ``--partitions``
   partitions (default 1) and produce ``--keys`` records with distinct keys (key i to partition
   i % partitions), JSON values of about ``--value-bytes`` bytes and the header
   ``streams-offsets={"bench-input:<p>": i+1}`` (one commit per record: the filter's worst case).
2. Baseline: a bare aiokafka consume of all partitions from beginning to end that only counts
   records, with the consumer settings the restore uses (read_committed, 8 MiB partition
   fetches, 64 MiB fetches, getmany max_records=50000): the floor Kafka+aiokafka deliver.
3. Restore: one fresh TaskStore (table ``t``) per partition, as the worker has one per task,
   all restored together as the worker does (:class:`streams.state.restorer.ChangelogRestorer`,
   one consumer) with every record committed; verify the keys and sample values.
4. Filtered restore: only the first half of each partition committed -> exactly those keys.
5. Steps 2 and 3 run ``--repeat`` rounds (default 3), in an order rotated each round (baseline
   restore, restore baseline, ...). Print the median and min-max records/s of baseline and
   restore and the ratio of the medians; write them, every run and the load average at start
   and end to ``--results`` (default tests/bench/results/restore.json), with the headline in
   ``summary``: ``restore_over_raw`` = {median, min, max} of the per-round ratio restore
   records/s / baseline records/s (each round's two runs are back to back).

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
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streams.kafka.admin import TopicSpec, delete_topics, ensure_topics  # noqa: E402
from streams.state.meta import OFFSETS_HEADER  # noqa: E402
from streams.state.recovery import (ChangelogFilter, OpenDecision, Restoration,  # noqa: E402
                                    apply_changelog, restore_consumer)
from streams.state.restorer import MAX_RECORDS, ChangelogRestorer  # noqa: E402
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


def make_header(i: int, partitions: int = 1) -> bytes:
    """Record i's commit header: the input offset after it in its own partition."""
    return encode_offsets({(INPUT_TOPIC, i % partitions): i // partitions + 1})


def per_partition(n: int, partitions: int) -> list[int]:
    """How many of the n records each partition holds (key i goes to partition i % partitions)."""
    return [len(range(p, n, partitions)) for p in range(partitions)]


# -- produce --------------------------------------------------------------------------------------
async def produce(broker: str, n: int, value_bytes: int, partitions: int) -> dict:
    await delete_topics(broker, [TOPIC])
    await ensure_topics(broker, [TopicSpec(TOPIC, partitions, {"cleanup.policy": "compact"})])
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
                    TOPIC, make_value(i, value_bytes), key=make_key(i), partition=i % partitions,
                    headers=[(OFFSETS_HEADER, make_header(i, partitions))]))
            await asyncio.gather(*futures)
        await producer.flush()
    finally:
        await producer.stop()
    elapsed = time.perf_counter() - started
    return {"records": n, "seconds": elapsed, "records_per_s": n / elapsed}


def changelog_tps(partitions: int) -> list[TopicPartition]:
    return [TopicPartition(TOPIC, p) for p in range(partitions)]


# -- baseline -------------------------------------------------------------------------------------
async def baseline_consume(broker: str, partitions: int, batch: int = MAX_RECORDS) -> dict:
    """Count every record of the changelog, with the restore's consumer settings."""
    consumer = restore_consumer(broker)
    await consumer.start()
    try:
        tps = changelog_tps(partitions)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        started = time.perf_counter()
        count = 0
        while True:
            for records in (await consumer.getmany(*tps, timeout_ms=1000,
                                                   max_records=batch)).values():
                count += len(records)
            if all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                break
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
    return {"records": count, "seconds": elapsed, "records_per_s": count / elapsed}


# -- restore --------------------------------------------------------------------------------------
async def changelog_ends(broker: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker)
    await consumer.start()
    try:
        return {tp.partition: off
                for tp, off in (await consumer.end_offsets(changelog_tps(partitions))).items()}
    finally:
        await consumer.stop()


async def restore(broker: str, stores: list[TaskStore], committed: list[int]
                  ) -> tuple[int, float]:
    """Restore table ``t`` of every partition's store from the whole changelog together, as
    the worker restores its tasks; returns the records applied and the seconds it took. As in
    the baseline, the consumer is started and the ends are read before the clock starts."""
    partitions = len(stores)
    ends = await changelog_ends(broker, partitions)
    restorations = {}
    for p, store in enumerate(stores):
        decision = OpenDecision("restore", "benchmark", restore_from={TOPIC: 0})
        tp = (INPUT_TOPIC, p)
        restorations[p] = Restoration(f"bench_{p}", store, {TOPIC: TABLE}, p, decision,
                                      TaskMeta(), {tp: committed[p]}, {TOPIC: ends[p]}, [tp], "")
    consumer = restore_consumer(broker)
    await consumer.start()
    restorer = ChangelogRestorer(consumer)
    try:
        started = time.perf_counter()
        while not all(r.done for r in restorations.values()):
            await restorer.poll(restorations)
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
    return sum(r.applied for r in restorations.values()), elapsed


async def timed_restore(broker: str, paths: list[Path], committed: list[int]
                        ) -> tuple[list[TaskStore], dict]:
    stores = [TaskStore(path, [TABLE]) for path in paths]
    applied, elapsed = await restore(broker, stores, committed)
    return stores, {"applied": applied, "seconds": elapsed}


def restore_and_verify(broker: str, path: Path, committed: list[int], value_bytes: int) -> dict:
    """Restore with ``committed`` (per partition) committed, check exactly those keys came
    back."""
    paths = [path / f"p{p}" for p in range(len(committed))]
    stores, res = asyncio.run(timed_restore(broker, paths, committed))
    try:
        if res["applied"] != sum(committed):
            raise AssertionError(f"restore applied {res['applied']}, expected {sum(committed)}")
        res.update(verify(stores, committed, value_bytes))
    finally:
        for store in stores:
            store.close()
        TaskStore.destroy(path)
    return res


def verify(stores: list[TaskStore], committed: list[int], value_bytes: int,
           samples: int = 2000) -> dict:
    """Count keys, check that exactly the committed keys are there and values round-trip."""
    started = time.perf_counter()
    partitions = len(stores)
    count = 0
    for store in stores:
        for _ in store.items(TABLE):
            count += 1
    expected = sum(committed)
    if count != expected:
        raise AssertionError(f"stores hold {count} keys, expected {expected}")
    sampled = 0
    for p, (store, upto) in enumerate(zip(stores, committed, strict=True)):
        step = max(1, upto * partitions // samples)
        probe = sorted({*range(0, upto, step), upto - 1}) if upto else []
        for j in probe:  # j-th record of partition p is record j * partitions + p
            i = j * partitions + p
            got = store.get(TABLE, make_key(i))
            if got != make_value(i, value_bytes):
                raise AssertionError(f"key {make_key(i)!r}: got {got!r}")
            json.loads(got)
        sampled += len(probe)
        for j in (upto, upto + 1):  # records beyond the committed offsets were skipped
            if store.get(TABLE, make_key(j * partitions + p)) is not None:
                raise AssertionError(f"key {make_key(j * partitions + p)!r} should not have "
                                     "been restored")
    return {"keys": count, "sampled_values": sampled,
            "verify_seconds": time.perf_counter() - started}


# -- profile --------------------------------------------------------------------------------------
async def fetch_all(broker: str, partitions: int) -> list:
    consumer = restore_consumer(broker)
    await consumer.start()
    out: list = []
    try:
        tps = changelog_tps(partitions)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while not all([await consumer.position(tp) >= ends[tp] for tp in tps]):
            for records in (await consumer.getmany(*tps, timeout_ms=1000,
                                                   max_records=MAX_RECORDS)).values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


def isolated_costs(broker: str, n: int, partitions: int, tmp: Path) -> dict:
    """Time the restore's per-record steps in isolation over the same (prefetched) records."""
    records = asyncio.run(fetch_all(broker, partitions))
    committed = {(INPUT_TOPIC, p): upto for p, upto in enumerate(per_partition(n, partitions))}
    out: dict = {"records": len(records)}

    t0 = time.perf_counter()
    decide = ChangelogFilter(committed)
    for rec in records:
        decide.accept_pairs(rec.headers)
    out["filter_distinct_headers_s"] = time.perf_counter() - t0

    # In a real changelog all records of one commit share one header value.
    shared = [((OFFSETS_HEADER, make_header((i // 1000) * 1000)),) for i in range(len(records))]
    t0 = time.perf_counter()
    store = TaskStore(tmp / "isolated-apply", [TABLE])
    try:
        skipped: set[bytes] = set()
        decide = ChangelogFilter(committed)
        shared_records = [_Rec(r.key, r.value, h, r.offset)
                          for r, h in zip(records, shared, strict=True)]
        t0 = time.perf_counter()
        for lo in range(0, len(records), MAX_RECORDS):
            apply_changelog(store, TABLE, shared_records[lo:lo + MAX_RECORDS], decide, skipped,
                            {})
        out["apply_shared_headers_1000_per_commit_s"] = time.perf_counter() - t0
    finally:
        store.close()
        TaskStore.destroy(tmp / "isolated-apply")

    entries = [(rec.key, rec.value) for rec in records]
    store = TaskStore(tmp / "isolated", [TABLE])
    try:
        t0 = time.perf_counter()
        for lo in range(0, len(entries), MAX_RECORDS):
            store.write_raw(TABLE, entries[lo:lo + MAX_RECORDS])
        out["write_raw_s"] = time.perf_counter() - t0
    finally:
        store.close()
        TaskStore.destroy(tmp / "isolated")
    return out


class _Rec(NamedTuple):
    key: bytes
    value: bytes
    headers: tuple
    offset: int


def profile_restore(broker: str, n: int, partitions: int, tmp: Path,
                    top: int = 25) -> tuple[dict, str]:
    paths = [tmp / "profiled" / f"p{p}" for p in range(partitions)]
    stores = [TaskStore(path, [TABLE]) for path in paths]
    prof = cProfile.Profile()
    try:
        prof.enable()
        asyncio.run(restore(broker, stores, per_partition(n, partitions)))
        prof.disable()
    finally:
        for store in stores:
            store.close()
        TaskStore.destroy(tmp / "profiled")
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    # Cumulative time of the main suspects.
    suspects = {
        "ChangelogFilter.accept_pairs": "recovery.py:accept_pairs",
        "apply_changelog": "recovery.py:apply_changelog",
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
    ap.add_argument("--partitions", type=int, default=1,
                    help="changelog partitions = tasks restored together (default 1)")
    ap.add_argument("--profile", action="store_true",
                    help="also cProfile a restore and time its steps in isolation")
    ap.add_argument("--skip-produce", action="store_true",
                    help="reuse the topic from a previous run (must hold exactly --keys records)")
    add_run_options(ap, RESULTS)
    ap.add_argument("--output", dest="results", default=argparse.SUPPRESS,
                    help="the same as --results")
    args = ap.parse_args(argv)
    n = args.keys
    parts = args.partitions
    full = per_partition(n, parts)
    results_path = Path(args.results)
    info = RunInfo.start(args, "bench-restore-")

    results: dict = {"benchmark": "restore", "broker": args.broker, "keys": n,
                     "partitions": parts,
                     "value_bytes": args.value_bytes,
                     "actual_value_bytes": len(make_value(n - 1, args.value_bytes)),
                     "header_bytes": len(make_header(n - 1, parts)),
                     "python": sys.version.split()[0], "platform": platform.platform(),
                     "cpus": os.cpu_count()}

    if not args.skip_produce:
        print(f"producing {n} records to {TOPIC} ...", flush=True)
        results["produce"] = asyncio.run(produce(args.broker, n, args.value_bytes, parts))
        print(f"  produced in {results['produce']['seconds']:.2f}s "
              f"({results['produce']['records_per_s']:,.0f} records/s)", flush=True)

    baselines: list[dict] = []
    restores: list[dict] = []
    tmp = info.work
    for r, order in enumerate(info.order(["baseline", "restore"]), start=1):
        for step in order:
            if step == "baseline":
                b = asyncio.run(baseline_consume(args.broker, parts))
                if b["records"] != n:
                    raise AssertionError(f"baseline consumed {b['records']} records, "
                                         f"expected {n}")
                baselines.append(b)
                print(f"baseline #{r}: {b['records']} records in {b['seconds']:.2f}s "
                      f"({b['records_per_s']:,.0f} records/s)", flush=True)
                continue
            res = restore_and_verify(args.broker, tmp / f"full-{r}", full, args.value_bytes)
            res["records_per_s"] = n / res["seconds"]
            restores.append(res)
            print(f"restore  #{r}: {res['applied']} records in {res['seconds']:.2f}s "
                  f"({res['records_per_s']:,.0f} records/s); verified {res['keys']} keys, "
                  f"{res['sampled_values']} sampled values", flush=True)

    half = [k // 2 for k in full]
    filt = restore_and_verify(args.broker, tmp / "filtered", half, args.value_bytes)
    filt["records_read_per_s"] = n / filt["seconds"]
    print(f"filtered restore (half of each partition committed): applied {filt['applied']} "
          f"of {n} records in {filt['seconds']:.2f}s "
          f"({filt['records_read_per_s']:,.0f} records read/s); verified {filt['keys']} keys",
          flush=True)

    base_rate = spread((x["records_per_s"] for x in baselines), 0)
    rest_rate = spread((x["records_per_s"] for x in restores), 0)
    ratio = rest_rate["median"] / base_rate["median"]
    # (per round: the baseline and restore of one round ran back to back, under similar load)
    per_round = spread((x["records_per_s"] / b["records_per_s"]
                        for x, b in zip(restores, baselines, strict=True)), 3)
    results.update({
        "baseline_runs": baselines, "restore_runs": restores, "filtered_restore": filt,
        "baseline_records_per_s": base_rate,
        "baseline_seconds": spread((x["seconds"] for x in baselines), 3),
        "restore_records_per_s": rest_rate,
        "restore_seconds": spread((x["seconds"] for x in restores), 3),
        "ratio_restore_to_baseline": ratio,
        "measure": "median and min-max over the rounds; the ratio is of the medians",
        "summary": {"restore_over_raw": per_round},
    })
    print()
    print(f"baseline (aiokafka count only): {fmt_spread(base_rate):>30} records/s")
    print(f"restore (all applied):          {fmt_spread(rest_rate):>30} records/s")
    print(f"ratio restore/baseline:         {ratio:>12.3f} (medians)")
    print(f"ratio per round:                {fmt_spread(per_round, 3):>30}")

    if args.profile:
        iso = isolated_costs(args.broker, n, parts, tmp)
        results["isolated_costs"] = iso
        print("\nisolated per-step costs over the same records:")
        for k, v in iso.items():
            print(f"  {k:40s} {v:.3f}" if isinstance(v, float) else f"  {k:40s} {v}")
        cum, text = profile_restore(args.broker, n, parts, tmp)
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
