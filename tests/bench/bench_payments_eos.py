"""Benchmark: the payments topology with exactly_once against at_least_once, same input, same
run, real broker, one ``streams worker`` subprocess each.

    STREAMS_BROKER=127.0.0.1:9092 python tests/bench/bench_payments_eos.py \
        [--count 60000] [--accounts 1000] [--latency-seconds 30] [--latency-rate 1000] \
        [--repeat 3] [--results PATH] [--work-dir DIR]

1. Throughput: the input (deposits + ``--count`` payments) is produced first; a worker starts
   on fresh topics and state; the time from its start until the group's committed offsets
   reach the ends of ``deposits`` and ``payments`` and the internal credit topic is drained
   (its offsets reach its ends twice in a row) gives events/s. Topics recreated and the group
   deleted before each run, so every run reads the same records from the start.
2. Latency at a fixed rate: payments produced at ``--latency-rate``/s for
   ``--latency-seconds`` to a running worker (default settings: commit_interval_ms 1000); a
   read_committed consumer of payment-results records, per payment_id, the wall time its result
   arrived minus the wall time the payment was handed to the producer. p50/p99 per guarantee.

``--repeat`` rounds (default 3), each running both guarantees once for throughput and then
once for latency, in an order rotated each round; median and min-max per guarantee, the ratio
of the medians. Results (every run, load average at start and end) go to ``--results``
(default tests/bench/results/payments_eos.json); logs and worker state to one fresh directory
per run (``--work-dir`` names its parent).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from streams import registry  # noqa: E402
from streams.devtools import generate  # noqa: E402
from streams.kafka import admin  # noqa: E402
from streams.runtime.topics import topic_specs  # noqa: E402
from tests.bench.rounds import RunInfo, add_run_options, delete_groups, spread  # noqa: E402
from tests.bench.rounds import write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "payments_eos.json"
NAME = "payments"


def fresh_topics(kafka: str) -> Any:
    topology = registry.load(NAME)
    topics = (topology.input_topics() + topology.output_topics() + topology.internal_topics()
              + [topology.dlq_topic])
    admin.run(admin.delete_topics(kafka, topics))
    admin.run(admin.ensure_topics(kafka, topic_specs(topology, 4)))
    # no committed offsets: the worker reads the new topics from their earliest offsets
    admin.run(delete_groups(kafka, [NAME]))
    return topology


def start_worker(kafka: str, guarantee: str, work: Path) -> subprocess.Popen[bytes]:
    work.mkdir(parents=True, exist_ok=True)
    state = work / f"state-{guarantee}"
    shutil.rmtree(state, ignore_errors=True)
    config = work / f"{guarantee}.toml"
    config.write_text(f'processing_guarantee = "{guarantee}"\n')
    log = open(work / f"worker-{guarantee}.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", NAME, "--config", str(config),
         "--state-dir", str(state), "--metrics-port", "0"],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        env={**os.environ, "STREAMS_BROKER": kafka})


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def caught_up(kafka: str, topics: list[str]) -> bool:
    committed = admin.run(admin.committed_offsets(kafka, NAME, topics))
    for topic in topics:
        ends = admin.run(admin.end_offsets(kafka, topic))
        for part, end in ends.items():
            # Transaction markers sit behind the last record: one per transaction that wrote
            # to the partition and committed after its last record. The internal credit topic
            # is written by every upstream task (one per partition, transactions interleaved),
            # so its tail can hold as many markers as there are partitions.
            if committed.get((topic, part), 0) < end - max(2, len(ends)):
                return False
    return True


def throughput(kafka: str, guarantee: str, events: list[Any], work: Path) -> dict[str, Any]:
    topology = fresh_topics(kafka)
    asyncio.run(generate.produce(kafka, events))
    topics = topology.input_topics() + topology.repartition_topics()
    started = time.monotonic()
    proc = start_worker(kafka, guarantee, work)
    try:
        streak = 0
        while streak < 2:
            if proc.poll() is not None:
                raise SystemExit(f"{guarantee} worker exited; see {work}")
            time.sleep(0.5)
            streak = streak + 1 if caught_up(kafka, topics) else 0
        elapsed = time.monotonic() - started
    finally:
        stop_worker(proc)
    return {"events": len(events), "seconds": round(elapsed, 2),
            "events_per_s": round(len(events) / elapsed)}


async def _feed_timed(kafka: str, events: list[Any], rate: float,
                      sent: dict[bytes, float]) -> None:
    """Produce at ``rate``/s (paced every 10 events), noting each payment's send time."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=1, acks="all")
    await producer.start()
    try:
        started = time.monotonic()
        futures = []
        for i, (topic, key, value) in enumerate(events):
            data = value if isinstance(value, bytes) else json.dumps(value).encode()
            if isinstance(value, dict) and "payment_id" in value:
                sent.setdefault(str(value["payment_id"]).encode(), time.time() * 1000)
            futures.append(await producer.send(topic, data, key=key.encode()))
            if i % 10 == 9:
                ahead = (i + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _latencies(kafka: str, events: list[Any], rate: float) -> list[float]:
    """Per payment: wall time its result became visible to a read_committed consumer minus
    the wall time its payment was handed to the producer."""
    consumer = AIOKafkaConsumer("payment-results", bootstrap_servers=kafka,
                                isolation_level="read_committed", auto_offset_reset="latest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        await asyncio.sleep(2)  # (assignment; then only new results)
        expected = sum(1 for t, _k, v in events if t == "payments" and isinstance(v, dict))
        sent: dict[bytes, float] = {}
        feeder = asyncio.ensure_future(_feed_timed(kafka, events, rate, sent))
        out: list[float] = []
        seen: set[bytes] = set()
        deadline = time.monotonic() + len(events) / rate + 60
        while len(seen) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time() * 1000
            for recs in batch.values():
                for r in recs:
                    if r.key in seen or r.key not in sent:
                        continue
                    seen.add(r.key)
                    out.append(now - sent[r.key])
        await feeder
        return out
    finally:
        await consumer.stop()


def latency(kafka: str, guarantee: str, seconds: float, rate: float, work: Path,
            accounts: int) -> dict[str, Any]:
    fresh_topics(kafka)
    deposits = [e for e in generate.events(NAME, 0, accounts=accounts)]
    asyncio.run(generate.produce(kafka, deposits))
    proc = start_worker(kafka, guarantee, work)
    try:
        time.sleep(8)  # joined, tasks open, deposits applied
        payments = [e for e in generate.events(NAME, int(seconds * rate), seed=5, rate=rate,
                                               accounts=accounts) if e[0] == "payments"]
        lat = sorted(asyncio.run(_latencies(kafka, payments, rate)))
    finally:
        stop_worker(proc)
    pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 1)  # noqa: E731
    return {"rate": rate, "results": len(lat), "p50_ms": pick(0.50), "p99_ms": pick(0.99),
            "max_ms": round(lat[-1], 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=60000)
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--latency-seconds", type=float, default=30)
    ap.add_argument("--latency-rate", type=float, default=1000)
    add_run_options(ap, RESULTS)
    args = ap.parse_args(argv)
    kafka = os.environ.get("STREAMS_BROKER", "127.0.0.1:9092")
    info = RunInfo.start(args, "bench-payments-")
    events = generate.events(NAME, args.count, seed=3, accounts=args.accounts)
    guarantees = ["at_least_once", "exactly_once"]
    tput: dict[str, list[dict[str, Any]]] = {g: [] for g in guarantees}
    lat: dict[str, list[dict[str, Any]]] = {g: [] for g in guarantees}
    for rnd, order in enumerate(info.order(guarantees), start=1):
        for g in order:
            r = throughput(kafka, g, events, info.work / f"tput-{g}-{rnd}")
            tput[g].append(r)
            print(f"round {rnd} throughput {g}", r, flush=True)
        for g in order:
            r = latency(kafka, g, args.latency_seconds, args.latency_rate,
                        info.work / f"lat-{g}-{rnd}", args.accounts)
            lat[g].append(r)
            print(f"round {rnd} latency {g}", r, flush=True)
    out: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "command": " ".join(sys.argv),
        "throughput": {g: {"events_per_s": spread((r["events_per_s"] for r in rs), 0),
                           "runs": rs} for g, rs in tput.items()},
        "latency": {g: {"p50_ms": spread((r["p50_ms"] for r in rs), 1),
                        "p99_ms": spread((r["p99_ms"] for r in rs), 1), "runs": rs}
                    for g, rs in lat.items()},
        "measure": "median and min-max over the rounds; the ratio is of the medians",
        **info.finish(),
    }
    t = out["throughput"]
    out["exactly_once_vs_at_least_once"] = round(
        t["exactly_once"]["events_per_s"]["median"]
        / t["at_least_once"]["events_per_s"]["median"], 3)
    path = write_results(args.results, json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k not in ("throughput", "latency")}
                     | {"throughput": {g: v["events_per_s"] for g, v in t.items()},
                        "latency": {g: {"p50_ms": v["p50_ms"], "p99_ms": v["p99_ms"]}
                                    for g, v in out["latency"].items()}}, indent=2))
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
