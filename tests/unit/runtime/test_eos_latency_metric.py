"""Under exactly-once an output reaches its readers when its transaction commits, so that is
when its end-to-end latency is observed: not at the broker's acknowledgement, and never for a
transaction that aborts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from streams.runtime.transactions import KafkaTaskProducer


class Producer:
    """What KafkaTaskProducer calls on aiokafka's producer, minus the network."""

    async def begin_transaction(self) -> None:
        return None

    async def commit_transaction(self) -> None:
        return None


def producer(seen: list[float]) -> KafkaTaskProducer:
    p = KafkaTaskProducer(Producer(), None, seen.append, latency_topics=["out"])  # type: ignore[arg-type]

    async def send(outputs: list[Any]) -> None:  # (the transport's own sends are tested apart)
        return None
    p.transport.send = send  # type: ignore[method-assign]
    p.transport.discard = lambda: None  # type: ignore[method-assign]
    return p


def test_latency_is_observed_at_commit_for_output_topics_only() -> None:
    seen: list[float] = []
    p = producer(seen)
    sent_ms = int(time.time() * 1000) - 2_000
    asyncio.run(p.send([("out", 0, b"k", b"v", sent_ms, None),
                        ("out-dlq", 0, b"k", b"v", sent_ms, None)]))
    assert seen == []                                   # sent, not yet visible
    asyncio.run(p.commit())
    assert len(seen) == 1 and 1.9 <= seen[0] < 60       # the output's record, about 2 s old
    asyncio.run(p.commit())
    assert len(seen) == 1                               # each sample is observed once


def test_an_aborted_transaction_has_no_latency() -> None:
    seen: list[float] = []
    p = producer(seen)
    asyncio.run(p.send([("out", 0, b"k", b"v", int(time.time() * 1000), None)]))
    p.discard()
    asyncio.run(p.commit())
    assert seen == []
