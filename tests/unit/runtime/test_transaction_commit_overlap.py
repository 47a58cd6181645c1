"""An exactly-once commit adds the input offsets to the transaction while its records are
flushed (the task is stopped while it commits: the offsets' round trips need not wait for the
records' acknowledgements), and a failure of either still fails the commit."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest
from aiokafka.errors import KafkaConnectionError, RecordTooLargeError

from streams.runtime.transactions import TaskTransactions
from streams.state.meta import Offsets


class Producer:
    """A transactional producer whose flush is acknowledged only once the offsets were added
    (as a broker could answer them in any order)."""

    def __init__(self, flush_error: BaseException | None = None,
                 offsets_error: BaseException | None = None) -> None:
        self.offsets_added = asyncio.Event()
        self.flush_error, self.offsets_error = flush_error, offsets_error
        self.offsets: Offsets = {}

    async def flush(self) -> dict[tuple[str, int], int]:
        await self.offsets_added.wait()
        if self.flush_error is not None:
            raise self.flush_error
        return {("out", 0): 7}

    async def send_offsets(self, offsets: Offsets, group_id: str) -> None:
        self.offsets_added.set()
        if self.offsets_error is not None:
            raise self.offsets_error
        self.offsets = dict(offsets)


def _transactions() -> TaskTransactions:
    async def never(_txn_id: str) -> object:
        raise AssertionError("no producer is opened here")
    return TaskTransactions("t", "g", "127.0.0.1:1", transaction_timeout_ms=60000,
                            commit_timeout_s=10, open_producer=never)  # type: ignore[arg-type]


def _flush(producer: Producer, offsets: Offsets) -> dict[tuple[str, int], int]:
    async def run() -> dict[tuple[str, int], int]:
        # generous: sequential steps would never finish (the flush waits for the offsets)
        return await asyncio.wait_for(
            _transactions()._flush_and_send_offsets(producer, offsets),  # type: ignore[arg-type]
            timeout=30)
    return asyncio.run(run())


def test_the_offsets_are_added_while_the_records_are_flushed() -> None:
    producer = Producer()
    assert _flush(producer, {("in", 0): 42}) == {("out", 0): 7}
    assert producer.offsets == {("in", 0): 42}


def test_a_failed_flush_fails_the_commit_before_a_failed_offset_commit() -> None:
    producer = Producer(flush_error=RecordTooLargeError("big"),
                        offsets_error=KafkaConnectionError("gone"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RecordTooLargeError):
            _flush(producer, {("in", 0): 42})
        gc.collect()
    assert not [w for w in caught if "never retrieved" in str(w.message)]


def test_failed_offsets_fail_the_commit() -> None:
    with pytest.raises(KafkaConnectionError):
        _flush(Producer(offsets_error=KafkaConnectionError("gone")), {("in", 0): 42})


def test_without_offsets_only_the_records_are_flushed() -> None:
    producer = Producer()
    producer.offsets_added.set()
    assert _flush(producer, {}) == {("out", 0): 7}
    assert producer.offsets == {}
