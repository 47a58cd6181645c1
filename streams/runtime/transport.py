"""The worker's side of Kafka output: partitioning, batched sends, flush with error surfacing,
changelog end positions, and the group's offset commit (a :class:`CommitTransport`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (CommitFailedError, MessageSizeTooLargeError,
                             RebalanceInProgressError, RecordTooLargeError)
from aiokafka.partitioner import DefaultPartitioner

from ..state.meta import Offsets
from .record_limits import (BROKER_MAX_MESSAGE_BYTES, RecordTooLarge, describe_output,
                            headers_bytes)
from .task import Output

log = logging.getLogger(__name__)

# End-to-end latency is observed for at most this many records of each produced batch (spread
# over the batch): a handful of histogram observations per request, whatever the batch size.
E2E_SAMPLES_PER_BATCH = 8


def _check_batch_size(batch: Any, group: list[Output], end: int, n: int,
                      partition: int) -> None:
    """Refuse, naming the record, a batch the broker would refuse for its size: only a lone
    record can make one (a batch takes more records only up to ``max_batch_size``). The
    runtime checks every record it makes, so this is a bug showing, never bad input: without
    it the error would be a bare MessageSizeTooLargeError from the broker."""
    if batch.size() > BROKER_MAX_MESSAGE_BYTES:
        topic, _p, key, value, _ts, headers = _largest(group[end - n:end], text=False)
        raise RecordTooLarge(f"{describe_output(topic, partition, key, value, headers)} would "
                             f"exceed the broker's {BROKER_MAX_MESSAGE_BYTES} bytes")


def _largest(outputs: list[Output], text: bool = True) -> Any:
    out = max(outputs, key=lambda o: len(o[2] or b"") + len(o[3] or b"") + headers_bytes(o[5]))
    return describe_output(out[0], out[1], out[2], out[3], out[5]) if text else out


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _from_kafka_client(exc: BaseException) -> bool:
    """A failure of the Kafka client (what a lost broker raises), not of our code."""
    return (isinstance(exc, (asyncio.TimeoutError, ConnectionError))
            or type(exc).__module__.startswith("aiokafka"))


class KafkaTransport:
    """Sends outputs as one ``send_batch`` per partition and commits the group's offsets.

    The partition of a keyed record is computed here with Kafka's default partitioner (murmur2
    of the key, as the Java client does), so co-partitioning with other producers holds.
    """

    def __init__(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer | None,
                 on_produced: Any = None,
                 on_latency: Callable[[float], None] | None = None,
                 latency_topics: Collection[str] = (),
                 on_commit_failed: Callable[[], None] | None = None,
                 producer_factory: Callable[[], AIOKafkaProducer] | None = None) -> None:
        self.producer = producer
        # Builds a replacement after a failed flush (see discard()); None: never replaced.
        self.producer_factory = producer_factory
        # A send that failed: the next flush raises it (a send never raises, so a lost broker
        # reaches the commit, which decides what to do, instead of killing the processing).
        self._failed: BaseException | None = None
        self._replace = False
        self.consumer = consumer
        self.on_produced = on_produced  # f(topic, n): metrics
        # f(seconds) per sampled record of ``latency_topics`` (the topology's outputs), from the
        # record's timestamp to the broker's acknowledgement of its batch.
        self.on_latency = on_latency
        self.latency_topics = frozenset(latency_topics) if on_latency is not None else frozenset()
        self.on_commit_failed = on_commit_failed
        self._partitions: dict[str, list[int]] = {}
        self._partitioner = DefaultPartitioner()
        # (future of a batch, number of records, the outputs it is the last records of, the
        # index after its last record) since the last flush
        self._inflight: list[tuple[asyncio.Future[Any], int, list[Output], int]] = []

    async def partitions_for(self, topic: str) -> list[int]:
        parts = self._partitions.get(topic)
        if parts is None:
            parts = sorted(await self.producer.partitions_for(topic) or [])
            if not parts:
                raise RuntimeError(f"topic {topic!r} has no partitions")
            self._partitions[topic] = parts
        return parts

    async def send(self, outputs: list[Output]) -> None:
        """Hand ``outputs`` to the producer. A Kafka failure (the broker unreachable, a
        timeout) is kept for :meth:`flush` to raise: the commit fails, so these outputs are
        produced again after the replay. Anything else (a bug, a record too large) raises."""
        if not outputs or self._failed is not None:
            return
        try:
            if self._replace:
                await self._replace_producer()
            await self._send_now(outputs)
        except Exception as exc:  # noqa: BLE001
            if not _from_kafka_client(exc):
                raise
            self._failed = exc  # raised by flush()

    def discard(self) -> None:
        """Forget the sends since the last flush (the commit that needed them failed: they are
        replayed) and replace the producer before the next send: an idempotent producer whose
        batches failed may be left with a sequence gap, or a sender that gave up."""
        inflight, self._inflight, self._failed = self._inflight, [], None
        for fut, *_ in inflight:
            fut.add_done_callback(_retrieve)
        self._replace = self.producer_factory is not None

    async def _replace_producer(self) -> None:
        assert self.producer_factory is not None
        new = self.producer_factory()
        try:
            await new.start()  # raises while the broker is unreachable: the next send retries
        except BaseException:
            await stop_producer(new)
            raise
        old, self.producer, self._replace = self.producer, new, False
        await stop_producer(old)

    async def _send_now(self, outputs: list[Output]) -> None:
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
            timed = topic in self.latency_topics
            batch, n = create(), 0
            for i, (_t, _p, key, value, ts, headers) in enumerate(group):
                if batch.append(key=key, value=value, timestamp=ts, headers=headers or []) is None:
                    _check_batch_size(batch, group, i, n, partition)
                    fut = await send_batch(batch, topic, partition=partition)
                    inflight.append((fut, n, group, i))
                    if timed:
                        self._time_batch(fut, group, i, n)
                    batch, n = create(), 0
                    batch.append(key=key, value=value, timestamp=ts, headers=headers or [])
                n += 1
            _check_batch_size(batch, group, len(group), n, partition)
            fut = await send_batch(batch, topic, partition=partition)
            inflight.append((fut, n, group, len(group)))
            if timed:
                self._time_batch(fut, group, len(group), n)
            if self.on_produced is not None:
                self.on_produced(topic, len(group))

    def _time_batch(self, fut: asyncio.Future[Any], group: list[Output], end: int, n: int) -> None:
        """Observe the end-to-end latency of a few records of the batch ``group[end-n:end]``
        when the broker acknowledges it."""
        step = max(1, n // E2E_SAMPLES_PER_BATCH)
        stamps = [out[4] for out in group[end - n:end:step] if out[4]]
        if stamps:
            fut.add_done_callback(partial(self._acked, stamps))

    def _acked(self, stamps: list[int], fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return  # flush() raises it; a lost record has no latency
        now_ms = time.time() * 1000
        observe = self.on_latency
        assert observe is not None
        for ts in stamps:
            observe(max(0.0, (now_ms - ts) / 1000))

    async def flush(self) -> dict[tuple[str, int], int]:
        """One flush instead of awaiting tens of thousands of futures; then surface any failed
        send (which aborts the commit) and collect end offsets per partition."""
        if self._failed is not None:
            failed = self._failed
            self.discard()
            raise failed
        if not self._inflight:
            return {}
        await self.producer.flush()
        ends: dict[tuple[str, int], int] = {}
        inflight, self._inflight = self._inflight, []
        for i, (fut, n, group, end) in enumerate(inflight):
            try:
                meta = await fut  # raises the send's error
            except BaseException as exc:
                for rest, *_ in inflight[i + 1:]:  # retrieved: no "never retrieved" noise
                    rest.add_done_callback(_retrieve)
                if isinstance(exc, (MessageSizeTooLargeError, RecordTooLargeError)):
                    # (a topic whose max.message.bytes is below the runtime's record limit)
                    raise RecordTooLarge(
                        f"the broker refused a batch of {n} records as too large "
                        f"({type(exc).__name__}); its largest: "
                        f"{_largest(group[end - n:end])}") from exc
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
            if self.on_commit_failed is not None:
                self.on_commit_failed()
            # A rebalance took the partitions: state already holds these offsets and its
            # changelog positions, so the next owner (or we) can tell on open.
            log.warning("consumer offset commit failed during a rebalance (%s); local state is "
                        "ahead of the group", exc)


async def stop_producer(producer: AIOKafkaProducer, timeout_s: float = 5.0) -> None:
    """Stop a producer without waiting long for an unreachable broker (its unsent batches
    belong to a commit that failed or a transaction that is abandoned: they are produced again
    anyway). aiokafka's ``stop()`` waits until every batch is delivered and, cut short, leaves
    its tasks pending; so the batches get ``timeout_s`` to be delivered, and if they are not,
    the producer's sender and connections are closed without ``stop()`` (aiokafka internals,
    in this one place)."""
    try:
        await asyncio.wait_for(producer.flush(), timeout_s)
    except Exception as exc:  # noqa: BLE001 - abandoned below
        log.debug("producer flush before stop: %s", exc)
        sender = getattr(producer, "_sender", None)
        try:
            if sender is not None:
                await sender.close()
            await producer.client.close()
        except Exception as close_exc:  # noqa: BLE001 - discarded either way
            log.debug("producer close: %s", close_exc)
        producer._closed = True  # noqa: SLF001 - stop() would wait for the batches again
        return
    try:
        await asyncio.wait_for(producer.stop(), timeout_s)
    except Exception as exc:  # noqa: BLE001 - discarded either way
        log.debug("producer stop: %s", exc)
