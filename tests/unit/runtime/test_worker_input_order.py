"""The worker's timestamp order across a join task's inputs when their fetches are not equally
recent (the catch-up after a restart or a rebalance): an empty input is waited for while its
last fetch is older than the other input's, even if that fetch said it was caught up."""

from __future__ import annotations

import asyncio
import json
from typing import Any, NamedTuple

from aiokafka import TopicPartition

from streams import JoinWindows, Topology
from streams.runtime.compile import subtopologies
from streams.runtime.ordering import PartitionGroup
from streams.metrics import Metrics
from streams.runtime.idle import IdleTracker
from streams.runtime.processing import Processing

ORDERS, SHIPMENTS = TopicPartition("orders", 0), TopicPartition("shipments", 0)


class Raw(NamedTuple):
    key: bytes
    value: bytes
    offset: int
    timestamp: int
    headers: list


def raw(offset: int, ts: int) -> Raw:
    return Raw(b"k", json.dumps({"id": offset, "ts": ts}).encode(), offset, ts, [])


class Consumer:
    """What the worker asks a consumer about an input: its last fetch (time, high watermark)
    and its position. Both inputs were caught up at their last fetch."""

    def __init__(self) -> None:
        self.polled = {ORDERS: 2_000, SHIPMENTS: 1_000}   # ms of wall time
        self.high = {ORDERS: 10, SHIPMENTS: 5}

    def last_poll_timestamp(self, tp: TopicPartition) -> int:
        return self.polled[tp]

    def last_stable_offset(self, tp: TopicPartition) -> int:
        return self.high[tp]

    def highwater(self, tp: TopicPartition) -> int:
        return self.high[tp]

    async def position(self, tp: TopicPartition) -> int:
        return self.high[tp]

    def assignment(self) -> set:
        return {ORDERS, SHIPMENTS}


class Task:
    def __init__(self, sub: Any) -> None:
        self.sub, self.id, self.partition = sub, "t0", 0
        self.tps = [("orders", 0), ("shipments", 0)]
        self.offsets: dict = {}
        self.runs: list[tuple[str, list[int]]] = []
        self.dead_letters: dict = {}
        self.dropped: dict = {}
        self.late: dict = {}

        self.group = PartitionGroup.for_sources(sub.sources)  # the real ordering

    def add(self, topic: str, raws: list[Raw]) -> dict[str, int]:
        self.group.add(topic, raws)
        return {}

    def buffered(self, topic: str | None = None) -> int:
        return self.group.buffered(topic)

    def drain(self, now_ms: int, more: Any = None) -> dict[str, int]:
        runs = self.group.drain(now_ms, more)
        self.runs.extend((t, [r.offset for r in raws]) for t, raws in runs)
        return {t: len(raws) for t, raws in runs}

    def take_outputs(self) -> list:
        return []

    def progress_due(self) -> bool:  # writes no repartition topic: no progress markers
        return False


class Tasks:
    def __init__(self, task: Task) -> None:
        self.running = {task.id: task}

    def task_for(self, tp: TopicPartition) -> Task:
        return self.running["t0"]


    async def send(self, task: Task) -> None:
        task.take_outputs()


def processing(t: Topology, consumer: Consumer, task: Task) -> Processing:
    return Processing(Metrics(t.name), consumer, Tasks(task), IdleTracker(0),  # type: ignore
                      repartition_idle_ms=2000)


def test_an_input_fetched_before_the_other_is_waited_for_although_it_was_caught_up() -> None:
    t = Topology("input-order")
    orders, shipments = t.stream("orders", timestamp="ts"), t.stream("shipments", timestamp="ts")
    orders.join(shipments, lambda o, s: o, JoinWindows(before=0, after=10), name="j").to("out")
    consumer = Consumer()
    task = Task(subtopologies(t)[0])
    worker = processing(t, consumer, task)
    # Orders fetched at 2000 ms; shipments' last fetch (1000 ms) said "caught up", but records
    # may have reached the broker since: the orders wait for a fetch of shipments.
    asyncio.run(worker.process({ORDERS: [raw(8, 100), raw(9, 200)]}))
    assert task.runs == []
    assert SHIPMENTS in worker.wanted
    # A fetch of shipments as recent as the orders' brings one record at 150: in order.
    consumer.polled[SHIPMENTS] = 2_000
    asyncio.run(worker.process({SHIPMENTS: [raw(4, 150)]}))
    assert task.runs == [("orders", [8]), ("shipments", [4]), ("orders", [9])]


def test_inputs_fetched_together_do_not_wait_for_each_other() -> None:
    t = Topology("input-order-2")
    orders, shipments = t.stream("orders", timestamp="ts"), t.stream("shipments", timestamp="ts")
    orders.join(shipments, lambda o, s: o, JoinWindows(before=0, after=10), name="j").to("out")
    consumer = Consumer()
    consumer.polled[SHIPMENTS] = 2_000    # the same fetch response: shipments had nothing new
    task = Task(subtopologies(t)[0])
    worker = processing(t, consumer, task)
    asyncio.run(worker.process({ORDERS: [raw(8, 100), raw(9, 200)]}))
    assert task.runs == [("orders", [8, 9])]
