"""In-memory Kafka for the :class:`~streams.testing.TopologyTestDriver`: topics of one partition
each, a consumer group's offsets, and transactions with Kafka's visibility rules.

What the driver's runtime code sees of it is what the worker sees of Kafka:

* :class:`MemoryTopics` is an at-least-once
  :class:`~streams.runtime.checkpoint.CommitTransport` (records are visible when sent);
* :func:`memory_producers` opens :class:`~streams.runtime.transactions.TransactionalProducer` s
  over it for exactly-once: a producer's records are in the log from the send on but readable
  (``read_committed``) only once its transaction commits, never if it aborts; the commit or abort
  marker takes an offset of its own; opening a producer of a transactional id fences the previous
  one (its open transaction is aborted, its later calls raise ``ProducerFenced``); the input
  offsets sent to a transaction reach the group with its commit.

Readers (restores, replays, the driver's downstream tasks, ``read_output``) all read
committed: :meth:`MemoryTopics.read_committed`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiokafka.errors import ProducerFenced

from .runtime.context import Output
from .runtime.transactions import OpenProducer, TransactionalProducer
from .state.meta import Offsets
from .state.store import TaskStore

T = TypeVar("T")


@dataclass(eq=False)
class MemoryTransaction:
    """One transaction: its records stay in the logs whatever its outcome (as in Kafka)."""

    state: Literal["open", "committed", "aborted"] = "open"
    offsets: Offsets = field(default_factory=dict)  # sent to the transaction for the group
    topics: set[str] = field(default_factory=set)   # written: each gets its marker


@dataclass
class TestRecord:
    """A record as the driver's topics hold it (the same fields aiokafka's records have).
    ``control``: a transaction marker (never handed to a reader); ``txn``: the transaction
    that wrote it (None: written outside any)."""

    __test__ = False  # not a pytest class

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    control: bool = field(default=False, repr=False)
    txn: MemoryTransaction | None = field(default=None, repr=False, compare=False)


def committed(rec: TestRecord | None) -> bool:
    """Whether a read_committed reader gets ``rec`` (``None``: removed by compaction)."""
    return rec is not None and not rec.control and (rec.txn is None
                                                    or rec.txn.state == "committed")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (in-memory transports) without an event loop, so the
    driver works inside users' async tests too."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("an in-memory commit tried to wait on I/O")


_loops = threading.local()


def run_in_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that needs an event loop (the exactly-once commit runs the tasks'
    transactions concurrently, under a timeout) to its end: on a loop of the driver's own, or,
    called from a running loop (a user's async test), on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = getattr(_loops, "loop", None)
        if loop is None:
            loop = _loops.loop = asyncio.new_event_loop()
        return loop.run_until_complete(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class MemoryTopics:
    """In-memory topics (one partition each: records for other partitions, progress markers
    to partitions the driver does not run, are dropped) and a consumer group's offsets."""

    def __init__(self, wall_clock: Callable[[], int]) -> None:
        self.logs: dict[str, list[Any]] = {}  # TestRecord, or None once compacted away
        self.group: Offsets = {}
        self._wall_clock = wall_clock
        self._written: dict[tuple[str, int], int] = {}
        self.fail_next_flush: Exception | None = None  # for tests of failed sends
        self._epochs: dict[str, int] = {}  # transactional id -> its current producer's epoch
        self._open: dict[str, MemoryTransaction] = {}  # transactional id -> open transaction

    def append(self, topic: str, key: bytes | None, value: bytes | None, ts: int | None,
               headers: list | None, txn: MemoryTransaction | None = None) -> TestRecord:
        log = self.logs.setdefault(topic, [])
        rec = TestRecord(topic, 0, len(log), key, value,
                         self._wall_clock() if ts is None else ts, list(headers or []),
                         txn=txn)
        log.append(rec)
        self._written[(topic, 0)] = len(log)
        return rec

    # -- at-least-once: the CommitTransport -------------------------------------------------------
    async def send(self, outputs: list[Output]) -> None:
        for out in outputs:
            if out.partition in (None, 0):
                self.append(out.topic, out.key, out.value, out.timestamp, out.headers)

    async def flush(self) -> dict[tuple[str, int], int]:
        if self.fail_next_flush is not None:
            exc, self.fail_next_flush = self.fail_next_flush, None
            raise exc
        written, self._written = self._written, {}
        return written

    async def commit_offsets(self, offsets: Offsets) -> None:
        self.group.update(offsets)

    def discard(self) -> None:
        """(What was sent stays in the logs: at-least-once outputs may repeat.)"""

    # -- reading ----------------------------------------------------------------------------------
    def end(self, topic: str) -> int:
        return len(self.logs.get(topic, []))

    def stable_end(self, topic: str) -> int:
        """The last stable offset: the first record of a transaction still open (a
        read_committed reader stops there), else the end."""
        log = self.logs.get(topic, [])
        for txn in self._open.values():
            if topic in txn.topics:
                return next(i for i, r in enumerate(log)
                            if r is not None and r.txn is txn)
        return len(log)

    def read_committed(self, topic: str, start: int) -> tuple[list[TestRecord], int]:
        """The records a read_committed reader at ``start`` gets, and its next position."""
        end = self.stable_end(topic)
        return [r for r in self.logs.get(topic, [])[start:end] if committed(r)], max(start, end)

    # -- transactions -----------------------------------------------------------------------------
    def init_producer(self, txn_id: str) -> int:
        """A new producer of ``txn_id`` (InitProducerId): the previous one is fenced and its open
        transaction aborted. Returns the new producer's epoch."""
        self._epochs[txn_id] = epoch = self._epochs.get(txn_id, -1) + 1
        txn = self._open.get(txn_id)
        if txn is not None:
            self._end(txn_id, txn, commit=False)
        return epoch

    def check(self, txn_id: str, epoch: int) -> None:
        if self._epochs.get(txn_id) != epoch:
            raise ProducerFenced()

    def begin(self, txn_id: str, epoch: int) -> MemoryTransaction:
        self.check(txn_id, epoch)
        txn = self._open[txn_id] = MemoryTransaction()
        return txn

    def end_transaction(self, txn_id: str, epoch: int, commit: bool) -> None:
        self.check(txn_id, epoch)
        self._end(txn_id, self._open[txn_id], commit)

    def _end(self, txn_id: str, txn: MemoryTransaction, commit: bool) -> None:
        del self._open[txn_id]
        txn.state = "committed" if commit else "aborted"
        for topic in sorted(txn.topics):  # the marker: one offset in every partition written
            self.append(topic, None, None, 0, None).control = True
        if commit:
            self.group.update(txn.offsets)


class MemoryTaskProducer:
    """A task's transactional producer over :class:`MemoryTopics`."""

    def __init__(self, kafka: MemoryTopics, txn_id: str) -> None:
        self.kafka, self.txn_id = kafka, txn_id
        self.epoch = kafka.init_producer(txn_id)
        self._txn: MemoryTransaction | None = None
        self._ends: dict[tuple[str, int], int] = {}

    async def begin(self) -> None:
        self._txn = self.kafka.begin(self.txn_id, self.epoch)

    async def send(self, outputs: list[Output]) -> None:
        self.kafka.check(self.txn_id, self.epoch)
        txn = self._txn
        assert txn is not None, "send outside a transaction"
        for out in outputs:
            if out.partition in (None, 0):
                rec = self.kafka.append(out.topic, out.key, out.value, out.timestamp,
                                        out.headers, txn)
                txn.topics.add(out.topic)
                self._ends[(out.topic, 0)] = rec.offset + 1

    async def flush(self) -> dict[tuple[str, int], int]:
        self.kafka.check(self.txn_id, self.epoch)
        ends, self._ends = self._ends, {}
        return ends

    async def send_offsets(self, offsets: Offsets, group_id: str) -> None:
        self.kafka.check(self.txn_id, self.epoch)
        assert self._txn is not None
        self._txn.offsets.update(offsets)

    async def commit(self) -> None:
        self.kafka.end_transaction(self.txn_id, self.epoch, commit=True)
        self._txn = None

    def discard(self) -> None:
        self._ends = {}

    async def close(self) -> None:
        pass  # (an open transaction stays open until the next producer of the id fences it)


def memory_producers(kafka: MemoryTopics) -> OpenProducer:
    async def open_producer(txn_id: str) -> TransactionalProducer:
        return MemoryTaskProducer(kafka, txn_id)

    return open_producer


class MemoryOpenIO:
    """:class:`~streams.runtime.opening.OpenIO` over in-memory topics (nothing suspends)."""

    def __init__(self, kafka: MemoryTopics) -> None:
        self.kafka = kafka

    async def committed(self, tps: list[tuple[str, int]]) -> Offsets:
        return {tp: off for tp, off in self.kafka.group.items() if tp in set(tps)}

    async def changelog_ends(self, topics: list[str], partition: int) -> dict[str, int]:
        return {topic: self.kafka.stable_end(topic) for topic in topics}

    async def commit_offsets(self, offsets: Offsets) -> None:
        await self.kafka.commit_offsets(offsets)

    async def open_store(self, path: Path, tables: list[str]) -> TaskStore:
        return TaskStore(path, tables)


class MemoryRestoreConsumer:
    """The part of a consumer :meth:`Restoration.step` uses, over in-memory topics: it reads
    committed records only (records removed by compaction, ``None`` in a log, are skipped)."""

    def __init__(self, kafka: MemoryTopics) -> None:
        self.kafka = kafka
        self._pos: dict[Any, int] = {}

    def assign(self, tps: list[Any]) -> None:
        pass

    async def seek_to_beginning(self, tp: Any) -> None:
        self._pos[tp] = 0

    def seek(self, tp: Any, offset: int) -> None:
        self._pos[tp] = offset

    async def getmany(self, tp: Any, timeout_ms: int = 0,
                      max_records: int = 20000) -> dict[Any, list[TestRecord]]:
        start = self._pos.get(tp, 0)
        end = min(start + max_records, self.kafka.stable_end(tp.topic))
        records = self.kafka.logs.get(tp.topic, [])[start:end]
        self._pos[tp] = max(start, end)
        return {tp: [r for r in records if committed(r)]}

    async def position(self, tp: Any) -> int:
        return self._pos.get(tp, 0)


__all__ = ["MemoryOpenIO", "MemoryRestoreConsumer", "MemoryTaskProducer", "MemoryTopics",
           "MemoryTransaction", "TestRecord", "committed", "memory_producers", "run_in_loop",
           "run_sync"]
