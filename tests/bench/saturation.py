"""Throughput at saturation: how fast a consumer group gets through a backlog, measured from its
committed input offsets over a span of at least ``span_s`` seconds, after start-up.

Every variant (ours, Quix Streams, faust, a raw aiokafka loop) commits its input offsets to a
consumer group, so the rate is read the same way for all of them, from outside the process:

- the span starts at the first commit seen once the group has committed something and
  ``warmup_s`` more seconds have passed (start-up, the first fetches and the JIT-less warm-up of
  caches are outside it);
- it ends at the first commit seen after ``span_s`` seconds;
- both ends are commit events, so the records counted are exactly those committed in between,
  whatever the variant's commit interval (ours 1 s, faust 2.8 s, Quix 5 s);
- the backlog must outlast the span: if the group reaches the end of its input first, the
  measurement fails with :class:`BacklogTooSmall` instead of reporting a rate that includes the
  drain's tail.

Waiting for completion (every record processed, outputs checked) happens after, outside the span.

Example (with a fake sampler; a bench passes :func:`group_sampler`)::

    >>> samples = iter([(0.0, 0), (2.0, 10), (9.0, 80), (10.0, 100), (25.0, 250), (41.0, 410),
    ...                 (42.0, 410), (43.0, 430)])
    >>> async def sample() -> tuple[float, int]:
    ...     return next(samples)
    >>> asyncio.run(measure(sample, end_total=10_000, warmup_s=5, span_s=30, pause=0))
    Saturation(records=330, seconds=33.0)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

Sampler = Callable[[], Awaitable[tuple[float, int]]]   # -> (monotonic seconds, committed total)

DEFAULT_WARMUP_S = 5.0
DEFAULT_SPAN_S = 30.0


class BacklogTooSmall(RuntimeError):
    """The group drained its input before the span was over: produce a larger backlog."""


@dataclass(frozen=True)
class Saturation:
    records: int      # input records committed within the span
    seconds: float    # the span, from one commit event to another

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"records": self.records, "seconds": round(self.seconds, 3),
                "rate": round(self.rate, 1)}


async def measure(sample: Sampler, *, end_total: int, warmup_s: float = DEFAULT_WARMUP_S,
                  span_s: float = DEFAULT_SPAN_S, pause: float = 0.2,
                  timeout_s: float = 900.0) -> Saturation:
    """The committed-offset rate between two commit events at least ``span_s`` apart, the first
    one ``warmup_s`` after the group's first commit. ``end_total`` is the committed total at which
    the input is drained."""
    started = time.monotonic()

    async def next_sample() -> tuple[float, int]:
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"no saturation measurement within {timeout_s:.0f} s")
        if pause:
            await asyncio.sleep(pause)
        return await sample()

    def drained(total: int) -> None:
        if total >= end_total:
            raise BacklogTooSmall(
                f"the group committed all {end_total:,} input records before a {span_s:.0f} s "
                f"span after a {warmup_s:.0f} s warm-up was over: produce a larger backlog")

    t, total = await next_sample()
    while total <= 0:                        # start-up: nothing committed yet
        t, total = await next_sample()
    first_commit = t
    while t - first_commit < warmup_s:
        t, total = await next_sample()
    drained(total)
    t0, c0 = await _next_commit(next_sample, total)
    drained(c0)
    t, total = t0, c0
    while t - t0 < span_s:
        t, total = await next_sample()
        drained(total)
    t1, c1 = await _next_commit(next_sample, total)
    return Saturation(records=c1 - c0, seconds=t1 - t0)


async def _next_commit(next_sample: Sampler, last: int) -> tuple[float, int]:
    """The first sample whose committed total moved past ``last``."""
    t, total = await next_sample()
    while total <= last:
        t, total = await next_sample()
    return t, total


async def end_offsets_total(bootstrap: str, topics: Iterable[str]) -> int:
    """The sum of the end offsets of every partition of ``topics``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics
               for p in sorted(consumer.partitions_for_topic(t) or await _partitions(consumer, t))]
        ends = await consumer.end_offsets(tps)
        return sum(ends.values())
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()   # a topic created after the client started
    return consumer.partitions_for_topic(topic) or set()


def group_sampler(admin: AIOKafkaAdminClient, group: str, topics: Iterable[str]) -> Sampler:
    """A sampler of the sum of ``group``'s committed offsets on ``topics``."""
    wanted = set(topics)

    async def sample() -> tuple[float, int]:
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        except Exception:                    # coordinator not ready yet: nothing committed
            return time.monotonic(), 0
        total = sum(meta.offset for tp, meta in offsets.items()
                    if tp.topic in wanted and meta.offset > 0)
        return time.monotonic(), total

    return sample


async def measure_group(bootstrap: str, group: str, topics: Iterable[str], *,
                        warmup_s: float = DEFAULT_WARMUP_S, span_s: float = DEFAULT_SPAN_S,
                        timeout_s: float = 900.0) -> Saturation:
    """:func:`measure` of ``group`` over ``topics`` (a backlog produced before the variant
    started), with an admin client of its own."""
    names = list(topics)
    end_total = await end_offsets_total(bootstrap, names)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        return await measure(group_sampler(admin, group, names), end_total=end_total,
                             warmup_s=warmup_s, span_s=span_s, timeout_s=timeout_s)
    finally:
        await admin.close()


__all__ = ["BacklogTooSmall", "Saturation", "end_offsets_total", "group_sampler", "measure",
           "measure_group"]
