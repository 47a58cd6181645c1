"""What ``scripts/demo.sh`` shows: offsets before a run, waiting until a topology's consumer
group has caught up, and what this run added to the reference topologies' topics.

``python -m streams.devtools.demo mark FILE`` records the end offsets of the demo's topics;
``wait NAME...`` waits until each group NAME has committed everything its topics hold;
``report FILE NAME...`` prints what the records after the marked offsets say (this run's, not
the whole topic's, which would include earlier runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    KafkaConnectionError,
    NotCoordinatorError,
    RequestTimedOutError,
)

from .. import registry
from ..config import load_settings
from ..kafka import admin
from ..kafka.clients import Kafka, KafkaConnection, client_kwargs
from ..runtime.compile import subtopologies

Offsets = dict[str, dict[int, int]]  # topic -> partition -> offset
COORDINATOR_NOT_READY = (CoordinatorNotAvailableError, CoordinatorLoadInProgressError,
                         NotCoordinatorError, KafkaConnectionError, RequestTimedOutError)


def group_topics(name: str) -> list[str]:
    """The topics consumer group ``name`` (the topology's) reads, internal ones included."""
    topology = registry.load(name)
    return list(dict.fromkeys(t for sub in subtopologies(topology) for t in sub.topics))


async def end_offsets(bootstrap: Kafka, topics: list[str]) -> Offsets:
    return {t: await admin.end_offsets(bootstrap, t) for t in topics}


async def _only_markers_left(bootstrap: Kafka, tp: TopicPartition, start: int, end: int) -> bool:
    """Between ``start`` and ``end`` there is no committed record, only transaction markers (an
    exactly-once topic's committed offset stops before its trailing commit markers)."""
    consumer = AIOKafkaConsumer(**client_kwargs(bootstrap), enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        records = await consumer.getmany(tp, timeout_ms=1000)
        return not records.get(tp) and await consumer.position(tp) >= end
    finally:
        await consumer.stop()


async def behind(bootstrap: Kafka, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """Records of ``topics`` that ``group`` has not committed yet, per partition (only those
    behind)."""
    ends = await end_offsets(bootstrap, topics)
    committed = await admin.committed_offsets(bootstrap, group, topics)
    out: dict[tuple[str, int], int] = {}
    for topic, parts in ends.items():
        for partition, end in parts.items():
            done = committed.get((topic, partition), 0)
            if done >= end:
                continue
            if end - done <= 4 and await _only_markers_left(
                    bootstrap, TopicPartition(topic, partition), done, end):
                continue
            out[(topic, partition)] = end - done
    return out


async def wait_caught_up(bootstrap: Kafka, group: str, topics: list[str], timeout: float,
                         say: Callable[[str], None] = print) -> bool:
    """Until ``group``'s committed offsets reach the end offsets of ``topics``, twice in a row a
    second apart (a repartition topic grows while the sub-topology before it still works)."""
    deadline = time.monotonic() + timeout
    started, settled = time.monotonic(), 0
    left: dict[tuple[str, int], int] = {}
    while time.monotonic() < deadline:
        try:
            left = await behind(bootstrap, group, topics)
        except COORDINATOR_NOT_READY:   # a fresh broker creates __consumer_offsets on first use
            left, settled = {("(group coordinator not available yet)", -1): 0}, 0
            await asyncio.sleep(1.0)
            continue
        settled = 0 if left else settled + 1
        if settled >= 2:
            say(f"{group}: caught up after {time.monotonic() - started:.0f} s "
                "(committed offsets == end offsets)")
            return True
        await asyncio.sleep(1.0)
    worst = ", ".join(f"{t}[{p}] {n}" for (t, p), n in sorted(left.items())[:6])
    say(f"{group}: NOT caught up after {timeout:.0f} s: records not committed yet: {worst}")
    return False


@dataclass
class Record:
    key: str | None
    value: Any  # the decoded JSON, or the raw bytes when it is not JSON
    headers: dict[str, str]


async def read_since(bootstrap: Kafka, topic: str, since: dict[int, int]) -> list[Record]:
    """The committed records of ``topic`` from ``since`` (per partition; a partition not in
    it: from its beginning) up to the current end."""
    parts = (await admin.topic_partitions(bootstrap, [topic])).get(topic, [])
    if not parts:
        return []
    tps = [TopicPartition(topic, p) for p in parts]
    consumer = AIOKafkaConsumer(**client_kwargs(bootstrap), enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    out: list[Record] = []
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        todo = set()
        for tp in tps:
            start = max(begins[tp], since.get(tp.partition, 0))
            if start < ends[tp]:
                consumer.seek(tp, start)
                todo.add(tp)
        empty = 0
        while todo and empty < 3:  # (trailing markers never come back as records)
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            empty = 0 if batch else empty + 1
            for tp, recs in batch.items():
                for rec in recs:
                    if rec.offset < ends[tp]:
                        out.append(_decode(rec))
            todo = {tp for tp in todo if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return out


def _decode(rec: Any) -> Record:
    try:  # (UTF-8 only, as the workers decode: json.loads would also take UTF-16 bytes)
        value: Any = json.loads(rec.value.decode()) if rec.value is not None else None
    except ValueError:
        value = rec.value
    headers = {k: v.decode(errors="replace") for k, v in (rec.headers or ())}
    return Record(rec.key.decode(errors="replace") if rec.key else None, value, headers)


class Run:
    """The records this run added to each topic (after the marked offsets)."""

    def __init__(self, bootstrap: Kafka, marks: Offsets) -> None:
        self.bootstrap, self.marks = bootstrap, marks
        self._cache: dict[str, list[Record]] = {}

    def records(self, topic: str) -> list[Record]:
        if topic not in self._cache:
            self._cache[topic] = asyncio.run(read_since(self.bootstrap, topic,
                                                        self.marks.get(topic, {})))
        return self._cache[topic]

    def values(self, topic: str) -> list[Any]:
        return [r.value for r in self.records(topic)]

    def count(self, topic: str) -> int:
        return len(self.records(topic))


def _show(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": ")) if not isinstance(value, bytes) \
        else repr(value)


def report_trip_stats(run: Run) -> None:
    rides = run.values("rides")
    windows = run.values("rides-per-city-1m")
    late = run.records("rides-late")
    late_rides = {r.value.get("ride_id") for r in late if isinstance(r.value, dict)}
    per_node = Counter(r.headers.get("node", "?") for r in late)
    print(f"rides this run: {len(rides)}")
    print(f"1-minute windows closed and emitted this run: {len(windows)} "
          f"(8 cities x the minutes of event time this run covered; a window is emitted once, "
          f"30 s of event time after it ends)")
    for w in windows[:3]:
        print(f"  {_show(w)}")
    print(f"late rides: {len(late_rides)} of {len(rides)} arrived after their window's grace "
          f"and were dropped from it; rides-late got {len(late)} records, one per windowed "
          f"aggregation a ride missed: {dict(sorted(per_node.items()))}")


def report_order_shipments(run: Run) -> None:
    orders, shipments = run.count("orders"), run.count("shipments")
    pairs = run.values("order-shipments")
    unshipped = run.count("unshipped-orders")
    print(f"orders this run: {orders}, shipments: {shipments}")
    print(f"joined (shipment within 7 days of its order): {len(pairs)}; orders with "
          f"no shipment in their window, emitted once it closed: {unshipped}")
    for p in pairs[:2]:
        print(f"  {_show(p)}")


def report_enrichment(run: Run) -> None:
    txns = run.count("transactions")
    counts = {t: run.count(t) for t in ("premium-transactions", "regular-transactions",
                                         "other-transactions", "unenriched-transactions")}
    print(f"transactions this run: {txns} -> " +
          ", ".join(f"{t}: {n}" for t, n in counts.items()) +
          f" (sum {sum(counts.values())})")
    for v in run.values("premium-transactions")[:2]:
        print(f"  {_show(v)}")


def report_payments(run: Run) -> None:
    payments = run.values("payments")
    deposits = run.count("deposits")
    ids = [v["payment_id"] for v in payments if isinstance(v, dict) and "payment_id" in v]
    results = run.values("payment-results")
    outcome = Counter(f"{v.get('status')}" + (f" {v['reason']}" if v.get("reason") else "")
                      for v in results if isinstance(v, dict))
    result_ids = Counter(v.get("payment_id") for v in results if isinstance(v, dict))
    dlq = run.records("payments-dlq")
    print(f"deposits this run: {deposits}; payments: {len(payments)} "
          f"({len(ids) - len(set(ids))} sent twice, "
          f"{len(payments) - len(ids)} not JSON objects with a payment_id)")
    one_each = set(result_ids) == set(ids) and max(result_ids.values(), default=1) == 1
    print(f"payment-results: {len(results)} for {len(set(ids))} distinct payment ids "
          f"(exactly one each: {'yes' if one_each else 'NO'}): "
          + ", ".join(f"{k} {n}" for k, n in sorted(outcome.items())))
    print(f"payments-dlq: {len(dlq)} records, reasons "
          f"{dict(Counter(r.headers.get('reason', '?') for r in dlq))}")
    balances = run.values("account-balances")
    if balances:
        print(f"account-balances updates this run: {len(balances)}, e.g. {_show(balances[-1])}")


# topology -> (the topics its report reads, its title, the report)
REPORTS: dict[str, tuple[tuple[str, ...], str, Callable[[Run], None]]] = {
    "trip_stats": (("rides", "rides-per-city-1m", "rides-late"),
                   "trip_stats: windows (tumbling 1 min, grace 30 s, emitted once final)",
                   report_trip_stats),
    "order_shipments": (("orders", "shipments", "order-shipments", "unshipped-orders"),
                        "order_shipments: orders joined with their shipments",
                        report_order_shipments),
    "enrichment": (("transactions", "premium-transactions", "regular-transactions",
                    "other-transactions", "unenriched-transactions"),
                   "enrichment: transactions joined with users and products, by tier",
                   report_enrichment),
    "payments": (("deposits", "payments", "payment-results", "payments-dlq",
                  "account-balances"), "payments (exactly-once)", report_payments),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.devtools.demo")
    sub = parser.add_subparsers(dest="cmd", required=True)
    mark = sub.add_parser("mark", help="record the end offsets of the demo's topics")
    mark.add_argument("file")
    wait = sub.add_parser("wait", help="wait until topologies' groups have caught up")
    wait.add_argument("names", nargs="+")
    wait.add_argument("--timeout", type=float, default=90.0, help="seconds, per group")
    report = sub.add_parser("report", help="what this run added to topologies' topics")
    report.add_argument("file")
    report.add_argument("names", nargs="+", choices=sorted(REPORTS))
    args = parser.parse_args(argv)
    bootstrap = KafkaConnection.from_settings(load_settings())
    if args.cmd == "mark":
        topics = [t for topics, _, _ in REPORTS.values() for t in topics]
        marks = asyncio.run(end_offsets(bootstrap, topics))
        Path(args.file).write_text(json.dumps(marks))
        return 0
    if args.cmd == "wait":
        for name in args.names:
            if not asyncio.run(wait_caught_up(bootstrap, name, group_topics(name),
                                              args.timeout)):
                return 1
        return 0
    marks = {t: {int(p): o for p, o in parts.items()}
             for t, parts in json.loads(Path(args.file).read_text()).items()}
    run = Run(bootstrap, marks)
    for name in args.names:
        _, title, show = REPORTS[name]
        print(f"\n== {title}")
        show(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
