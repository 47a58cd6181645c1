"""Helpers for the exactly-once tests: a small counting topology with uniquely named topics,
an in-process worker, and read_committed / read_uncommitted readers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import hypothesis  # noqa: F401 - see below
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams import Topology
from streams.config import Settings
from streams.kafka import admin
from streams.runtime.topics import topic_specs
from streams.runtime.worker import Worker


# (hypothesis is imported above, before any agent runs in this process: after agents ran
# in-process, pytest's late import of its hypothesis plugin module failed to compile under
# CPython 3.11.7 with "SystemError: AST constructor recursion depth mismatch".)


def counting_topology() -> tuple[Topology, str, str]:
    """``<name>-in`` (keyed) -> agent counting events per key in table ``counts`` -> ``<name>-out``
    ``{"key", "n", "seq"}``: under exactly-once, key k's outputs are n = 1, 2, ... once each."""
    name = f"eos_t_{uuid.uuid4().hex[:8]}"
    source, sink = f"{name}-in", f"{name}-out"
    topology = Topology(name, description="exactly-once test: counts per key")
    counts = topology.table_store("counts", default=int)

    @topology.agent(source, sink=[sink])
    async def count(stream):  # noqa: ANN001
        async for key, event in stream.items():
            n = counts[key] + 1
            counts[key] = n
            yield {"key": key, "n": n, "seq": event["seq"]}

    return topology, source, sink


def create_topics(kafka: str, topology: Topology, partitions: int) -> None:
    admin.run(admin.ensure_topics(kafka, topic_specs(topology, partitions)))


def delete_topics(kafka: str, topology: Topology) -> None:
    topics = (topology.input_topics() + topology.output_topics() + topology.internal_topics()
              + [topology.dlq_topic])
    admin.run(admin.delete_topics(kafka, topics))


def eos_settings(kafka: str, state_dir: Path, **overrides: Any) -> Settings:
    return Settings(broker=kafka, state_dir=str(state_dir), partitions=2,
                    processing_guarantee="exactly_once", commit_interval_ms=200,
                    session_timeout_ms=6000, metrics_port=-1).with_overrides(**overrides)


async def produce(kafka: str, topic: str, events: list[tuple[str, dict[str, Any]]]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
    await p.start()
    try:
        futs = [await p.send(topic, json.dumps(v).encode(), key=k.encode()) for k, v in events]
        await asyncio.gather(*futs)
    finally:
        await p.stop()


async def read_all(kafka: str, topic: str, committed: bool = True) -> list[Any]:
    """Every record of ``topic`` up to its current end (LSO for read_committed)."""
    parts = (await admin.topic_partitions(kafka, [topic])).get(topic, [])
    c = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False,
                         isolation_level="read_committed" if committed else "read_uncommitted")
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in parts]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        out: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            behind = [tp for tp in tps if await c.position(tp) < ends[tp]]
            if not behind:
                return out
            if loop.time() > deadline:  # (a position that never reaches the end offset)
                raise AssertionError(f"reader of {topic} stuck before the end: {behind}")
            for recs in (await c.getmany(timeout_ms=500)).values():
                out.extend(recs)
    finally:
        await c.stop()


def counts_by_key(records: list[Any]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for r in records:
        v = json.loads(r.value)
        out[v["key"]].append(v["n"])
    return dict(out)


async def wait_for(predicate: Any, timeout: float, what: str, poll: float = 0.5) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await predicate():
            return
        await asyncio.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class InProcessWorker:
    """A :class:`Worker` running as a task of the test's event loop."""

    def __init__(self, topology: Topology, settings: Settings) -> None:
        self.worker = Worker(topology, settings)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Worker:
        self.task = asyncio.ensure_future(self.worker.run())
        return self.worker

    async def __aexit__(self, *exc: Any) -> None:
        self.worker.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 60)
