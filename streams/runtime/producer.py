"""The worker's side of Kafka output: partitioning, batched sends, flush with error surfacing,
changelog end positions, and the group's offset commit (a :class:`CommitTransport`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, RebalanceInProgressError
from aiokafka.partitioner import DefaultPartitioner

from ..state.meta import Offsets
from .task import Output

log = logging.getLogger(__name__)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class KafkaTransport:
    """Sends outputs as one ``send_batch`` per partition and commits the group's offsets.

    The partition of a keyed record is computed here with Kafka's default partitioner (murmur2
    of the key, as the Java client does), so co-partitioning with other producers holds.
    """

    def __init__(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer | None,
                 on_produced: Any = None) -> None:
        self.producer = producer
        self.consumer = consumer
        self.on_produced = on_produced  # f(topic, n): metrics
        self._partitions: dict[str, list[int]] = {}
        self._partitioner = DefaultPartitioner()
        # (future of a batch, number of records) since the last flush
        self._inflight: list[tuple[asyncio.Future[Any], int]] = []

    async def partitions_for(self, topic: str) -> list[int]:
        parts = self._partitions.get(topic)
        if parts is None:
            parts = sorted(await self.producer.partitions_for(topic) or [])
            if not parts:
                raise RuntimeError(f"topic {topic!r} has no partitions")
            self._partitions[topic] = parts
        return parts

    async def send(self, outputs: list[Output]) -> None:
        if not outputs:
            return
        groups: dict[tuple[str, int], list[Output]] = {}
        partitioner = self._partitioner
        for out in outputs:
            topic, partition = out[0], out[1]
            if partition is None:
                parts = self._partitions.get(topic) or await self.partitions_for(topic)
                partition = partitioner(out[2], parts, parts)
            group = groups.get((topic, partition))
            if group is None:
                groups[(topic, partition)] = group = []
            group.append(out)
        create, send_batch, inflight = (self.producer.create_batch, self.producer.send_batch,
                                        self._inflight)
        for (topic, partition), group in groups.items():
            batch, n = create(), 0
            for _t, _p, key, value, ts, headers in group:
                if batch.append(key=key, value=value, timestamp=ts, headers=headers or []) is None:
                    inflight.append((await send_batch(batch, topic, partition=partition), n))
                    batch, n = create(), 0
                    batch.append(key=key, value=value, timestamp=ts, headers=headers or [])
                n += 1
            inflight.append((await send_batch(batch, topic, partition=partition), n))
            if self.on_produced is not None:
                self.on_produced(topic, len(group))

    async def flush(self) -> dict[tuple[str, int], int]:
        """One flush instead of awaiting tens of thousands of futures; then surface any failed
        send (which aborts the commit) and collect end offsets per partition."""
        if not self._inflight:
            return {}
        await self.producer.flush()
        ends: dict[tuple[str, int], int] = {}
        inflight, self._inflight = self._inflight, []
        for i, (fut, n) in enumerate(inflight):
            try:
                meta = await fut  # raises the send's error
            except BaseException:
                for rest, _ in inflight[i + 1:]:  # retrieved: no "never retrieved" noise
                    rest.add_done_callback(_retrieve)
                raise
            key = (meta.topic, meta.partition)
            end = meta.offset + n
            if end > ends.get(key, -1):
                ends[key] = end
        return ends

    async def commit_offsets(self, offsets: Offsets) -> None:
        if self.consumer is None:
            return
        try:
            await self.consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
        except (CommitFailedError, RebalanceInProgressError) as exc:
            # A rebalance took the partitions: state already holds these offsets and its
            # changelog positions, so the next owner (or we) can tell on open.
            log.warning("consumer offset commit failed during a rebalance (%s); local state is "
                        "ahead of the group", exc)
