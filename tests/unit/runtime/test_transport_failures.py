"""A lost broker reaches the commit, never the processing: a failed send is raised by the next
flush, and after a failed commit the producer is replaced before the next send."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from streams.runtime.transport import KafkaTransport


class Batch:
    def append(self, **_: Any) -> int:
        return 1

    def size(self) -> int:
        return 10


class FakeProducer:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.started = self.stopped = False
        self.sent = 0

    def create_batch(self) -> Batch:
        return Batch()

    async def send_batch(self, batch: Batch, topic: str, partition: int) -> asyncio.Future[Any]:
        if self.fail:
            raise KafkaTimeoutError("buffer full: broker unreachable")
        self.sent += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(type("Meta", (), {"topic": topic, "partition": partition, "offset": 0}))
        return fut

    async def flush(self) -> None:
        pass

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True


OUT = [("out", 0, b"k", b"v", 1, None)]


def test_a_failed_send_fails_the_flush_and_the_producer_is_replaced() -> None:
    async def scenario() -> None:
        broken, fresh = FakeProducer(fail=True), FakeProducer(fail=False)
        factory: Any = lambda: fresh  # noqa: E731
        transport = KafkaTransport(broken, None, producer_factory=factory)  # type: ignore[arg-type]
        await transport.send(OUT)  # does not raise: processing goes on
        await transport.send(OUT)
        with pytest.raises(KafkaTimeoutError):
            await transport.flush()  # the commit fails: nothing past it is committed
        assert transport.producer is broken  # (replaced only when needed again)
        await transport.send(OUT)
        assert transport.producer is fresh and fresh.started and broken.stopped
        assert await transport.flush() == {("out", 0): 1}

    asyncio.run(scenario())
