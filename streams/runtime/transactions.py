"""Exactly-once commits: one Kafka transaction per task and commit interval.

With ``processing_guarantee = "exactly_once"`` (the :class:`~streams.runtime.committer.ExactlyOnce`
committer) each task owns a transactional producer whose
``transactional.id`` is stable per task: ``<topology>-<task id>`` (e.g. ``payments-0_3``). One
commit of a task is one transaction holding

1. the task's outputs of the interval (sent after each batch inside the task's open
   transaction, :meth:`TaskTransactions.send`, so they travel while the task keeps processing;
   a read_committed reader sees them only at the commit);
2. its changelog records (the table changes of the interval);
3. its input offsets, through ``send_offsets_to_transaction`` to the topology's group (while
   the records are flushed: see :meth:`TaskTransactions._flush_and_send_offsets`);

and only after ``commit_transaction`` returned, the task's RocksDB WriteBatch (state + input
offsets + changelog positions) is written. A crash anywhere before leaves no trace: Kafka
aborts the transaction (or the next owner's ``init_transactions`` does), local state and the
group's offsets are as of the previous commit. A crash after the commit but before the
WriteBatch leaves local state behind its changelog, which ``decide_open`` restores.

Fencing. aiokafka sends TxnOffsetCommit v0 (no consumer-group metadata, no KIP-447), so a
zombie cannot be fenced through the group generation. It is fenced through the transactional
id instead: whoever opens the task next (on this or another worker) first starts a producer
with the same id and waits for ``InitProducerId``, which bumps the epoch, aborts (or finishes)
the old owner's open transaction and makes every later request of the old producer fail with
``ProducerFenced``/``InvalidProducerEpoch``. Only then are the group's offsets and the changelog
ends read, so they include everything the previous owner ever committed.

The producers are :class:`TransactionalProducer` s: Kafka's (:class:`KafkaTaskProducer`) in the
worker, in-memory ones in the :class:`~streams.testing.TopologyTestDriver`; the protocol above is
the same code for both.

Changelog positions. A transaction's commit marker takes one offset in every partition the
transaction wrote, so the end offset after a commit is the last record's offset + 2. The
position written to RocksDB is that end (see :func:`_positions_after_commit`), which keeps
``decide_open``'s "position == end means nobody wrote after this state" true; if anything else
moved the end (an aborted transaction of a fenced zombie, a commit whose outcome we did not
see), the position is below the end and the task restores the difference, which under
read_committed contains only committed records.

Failures of a task's commit (:func:`~streams.runtime.commit_outcome.classify`):

* ``fenced``: another owner took the task. It is dropped (uncommitted changes abandoned,
  producer closed, partitions paused) until the group assigns it again;
* ``retriable`` (broker unreachable for however long, timeouts, leaders not elected yet, a
  producer whose sender gave up): the transaction is abandoned (closing the producer; the next
  ``init_transactions`` aborts it) and the task is reopened from its last committed state, its
  input re-read from its committed offsets; reopening retries with backoff until the broker
  answers;
* ``fatal``: what retrying cannot fix (a record too large, authorization, an incompatible
  broker) and errors that are not Kafka's: the worker stops with one line; nothing of the
  transaction is committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from ..kafka.clients import Kafka, client_kwargs
from ..state.meta import Offsets, TaskId
from .commit_outcome import CommitResult, classify
from .task import Output, Task
from .transport import E2E_SAMPLES_PER_BATCH, KafkaTransport, stop_producer

log = logging.getLogger(__name__)

EXACTLY_ONCE = "exactly_once"  # Settings.processing_guarantee

#: Test hook: when set to a task id (or ``*``), that task's next commit raises after its
#: records were produced and before the transaction commits (the injected-abort test).
FAIL_COMMIT_ENV = "STREAMS_TEST_FAIL_COMMIT"
MAX_LATENCY_SAMPLES = 64  # end-to-end latency samples per transaction


class InjectedFailure(KafkaConnectionError):
    """Raised by the test hook :data:`FAIL_COMMIT_ENV` (handled as a retriable failure)."""


def transactional_id(topology: str, task_id: TaskId) -> str:
    """Stable per task, so the next owner of a task fences the previous one."""
    return f"{topology}-{task_id}"


def _positions_after_commit(ends: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """End offsets after the commit: the flushed ends + the commit marker of each partition."""
    return {tp: end + 1 for tp, end in ends.items()}


class TransactionalProducer(Protocol):
    """One task's transactional producer, started and its producer id initialised (the previous
    owner fenced)."""

    async def begin(self) -> None: ...

    async def send(self, outputs: list[Output]) -> None:
        """Hand records to the open transaction (a Kafka failure is raised by :meth:`flush`)."""

    async def flush(self) -> dict[tuple[str, int], int]:
        """Wait for every record sent; per partition written, its end offset."""

    async def send_offsets(self, offsets: Offsets, group_id: str) -> None: ...

    async def commit(self) -> None: ...

    def discard(self) -> None:
        """Forget the sends of a transaction that will never commit."""

    async def close(self) -> None: ...


#: Starts the producer of a transactional id and waits until it is initialised (fenced).
OpenProducer = Callable[[str], Awaitable[TransactionalProducer]]


class KafkaTaskProducer:
    """A :class:`TransactionalProducer` on aiokafka (outputs through a :class:`KafkaTransport`)."""

    def __init__(self, producer: AIOKafkaProducer,
                 on_produced: Callable[[str, int], None] | None = None,
                 on_latency: Callable[[float], None] | None = None,
                 latency_topics: Collection[str] = ()) -> None:
        self.producer = producer
        self.transport = KafkaTransport(producer, None, on_produced=on_produced)
        # End-to-end latency under exactly-once ends when the transaction commits (its outputs
        # become visible to read_committed consumers then), not when the broker acknowledges a
        # send: a few timestamps per send, observed at the commit.
        self.on_latency = on_latency
        self.latency_topics = frozenset(latency_topics) if on_latency is not None else frozenset()
        self._stamps: list[int] = []

    async def begin(self) -> None:
        await self.producer.begin_transaction()

    async def send(self, outputs: list[Output]) -> None:
        await self.transport.send(outputs)
        if self.latency_topics and len(self._stamps) < MAX_LATENCY_SAMPLES:
            timed = [out[4] for out in outputs if out[0] in self.latency_topics and out[4]]
            self._stamps += timed[::max(1, len(timed) // E2E_SAMPLES_PER_BATCH)]

    async def flush(self) -> dict[tuple[str, int], int]:
        return await self.transport.flush()

    async def send_offsets(self, offsets: Offsets, group_id: str) -> None:
        await self.producer.send_offsets_to_transaction(
            {TopicPartition(t, p): o for (t, p), o in offsets.items()}, group_id)

    async def commit(self) -> None:
        await self.producer.commit_transaction()
        stamps, self._stamps = self._stamps, []
        if stamps and self.on_latency is not None:
            now_ms = time.time() * 1000
            for ts in stamps:
                self.on_latency(max(0.0, (now_ms - ts) / 1000))

    def discard(self) -> None:
        self.transport.discard()
        self._stamps = []   # never visible: no latency

    async def close(self) -> None:
        # (without waiting long for an unreachable broker: its unsent records belong to a
        # transaction that is abandoned anyway)
        await stop_producer(self.producer, 5.0)


async def _fence_previous_owner(producer: AIOKafkaProducer) -> None:
    # The opener must know the previous owner is fenced (and its open transaction ended)
    # BEFORE it reads the group's offsets and the changelog ends, so it waits for the producer
    # id here, in the one place that touches the transaction manager. (aiokafka 0.14's start()
    # already waits for it; older versions ran InitProducerId in the background and waited
    # only in begin_transaction(): this keeps the guarantee whatever start() does.)
    await producer._txn_manager.wait_for_pid()  # noqa: SLF001


def kafka_producers(bootstrap: Kafka, *, transaction_timeout_ms: int,
                    request_timeout_ms: int = 30000,
                    on_produced: Callable[[str, int], None] | None = None,
                    on_latency: Callable[[float], None] | None = None,
                    latency_topics: Collection[str] = ()) -> OpenProducer:
    """Opens :class:`KafkaTaskProducer` s on ``bootstrap``."""

    async def open_producer(txn_id: str) -> TransactionalProducer:
        producer = AIOKafkaProducer(
            **client_kwargs(bootstrap), transactional_id=txn_id,
            transaction_timeout_ms=transaction_timeout_ms, enable_idempotence=True,
            acks="all", linger_ms=5, max_batch_size=512 * 1024,
            request_timeout_ms=request_timeout_ms)
        try:
            await producer.start()
            await _fence_previous_owner(producer)
        except BaseException:
            await stop_producer(producer, 5.0)
            raise
        return KafkaTaskProducer(producer, on_produced, on_latency, latency_topics)

    return open_producer


@dataclass
class _TaskProducer:
    producer: TransactionalProducer
    committed: Offsets = field(default_factory=dict)  # the input offsets of its last commit
    in_transaction: bool = False  # outputs of this interval were sent already (see send())
    failed: BaseException | None = None  # an eager send failed: the commit raises it


class TaskTransactions:
    """The transactional producers of a worker's tasks: opened with the task (which fences the
    previous owner), one transaction per task and commit, closed with the task.
    ``open_producer``: how a task's producer is started (default: Kafka's, on ``bootstrap``)."""

    def __init__(self, topology: str, group_id: str, bootstrap: Kafka, *,
                 transaction_timeout_ms: int, commit_timeout_s: float,
                 request_timeout_ms: int = 30000,
                 on_produced: Callable[[str, int], None] | None = None,
                 on_result: Callable[[str], None] | None = None,
                 on_latency: Callable[[float], None] | None = None,
                 latency_topics: Collection[str] = (),
                 fail_commit: str | None = None,
                 open_producer: OpenProducer | None = None) -> None:
        self.topology = topology
        self.group_id = group_id
        self.commit_timeout_s = commit_timeout_s
        self.on_result = on_result  # f("committed" | "aborted" | "fenced"): metrics
        self.fail_commit = fail_commit
        self.open_producer = open_producer or kafka_producers(
            bootstrap, transaction_timeout_ms=transaction_timeout_ms,
            request_timeout_ms=request_timeout_ms, on_produced=on_produced,
            on_latency=on_latency, latency_topics=latency_topics)
        self._producers: dict[TaskId, _TaskProducer] = {}

    # -- producers --------------------------------------------------------------------------------
    async def open(self, task_id: TaskId) -> None:
        """Start the task's producer and fence every earlier producer of the task."""
        await self.close(task_id)
        producer = await asyncio.wait_for(
            self.open_producer(transactional_id(self.topology, task_id)), self.commit_timeout_s)
        self._producers[task_id] = _TaskProducer(producer)

    def set_committed(self, task_id: TaskId, offsets: Offsets) -> None:
        tp = self._producers.get(task_id)
        if tp is not None:
            tp.committed = dict(offsets)

    async def close(self, task_id: TaskId) -> None:
        tp = self._producers.pop(task_id, None)
        if tp is not None:
            await tp.producer.close()

    async def close_all(self) -> None:
        producers, self._producers = self._producers, {}
        await asyncio.gather(*(tp.producer.close() for tp in producers.values()))

    # -- sending --------------------------------------------------------------------------------
    async def send(self, task: Task) -> None:
        """Send the task's outputs so far inside its open transaction (begun here if needed):
        they travel while the task keeps processing, and become visible at the commit. A
        failure is kept for the commit to raise (the transaction is lost anyway)."""
        tp = self._producers.get(task.id)
        if tp is None or tp.failed is not None:
            return  # (outputs stay in the task; the commit reports the failure)
        outputs = task.take_outputs()
        if not outputs:
            return
        try:
            if not tp.in_transaction:
                await tp.producer.begin()
                tp.in_transaction = True
            await tp.producer.send(outputs)
        except Exception as exc:  # noqa: BLE001 - raised by the commit, classified there
            tp.failed = exc

    # -- commit -----------------------------------------------------------------------------------
    async def commit(self, tasks: Iterable[Task]) -> CommitResult:
        """Commit every task in its own transaction, concurrently. A task whose transaction
        failed is reported in ``failed`` (its in-memory changes are NOT abandoned here: the
        caller drops or reopens it, see :func:`classify`)."""
        tasks = [t for t in tasks if t.id in self._producers]
        results = await asyncio.gather(*(self._commit_one(t) for t in tasks),
                                       return_exceptions=True)
        out = CommitResult()
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                out.failed[task.id] = result
                if self.on_result is not None:
                    self.on_result("fenced" if classify(result) == "fenced" else "aborted")
            elif result is not None:
                out.committed.update(result)
                if self.on_result is not None:
                    self.on_result("committed")
        return out

    async def _commit_one(self, task: Task) -> Offsets | None:
        tp = self._producers[task.id]
        outputs = task.take_outputs()
        changes = task.prepare_commit()
        offsets = dict(task.offsets)
        if (not outputs and not changes and offsets == tp.committed and not tp.in_transaction
                and tp.failed is None):
            return None  # nothing happened since the last commit
        try:
            if tp.failed is not None:
                raise tp.failed
            await asyncio.wait_for(self._transaction(task, tp, outputs, changes, offsets),
                                   self.commit_timeout_s)
        except BaseException:
            # The producer's transaction state is unknown now (aiokafka may be mid-request):
            # it is never reused; the next owner's init_transactions ends the transaction.
            tp.producer.discard()  # (its sends' failures are this one: nothing to report)
            await self.close(task.id)
            raise
        tp.committed = offsets
        tp.in_transaction = False
        return offsets

    async def _transaction(self, task: Task, tp: _TaskProducer, outputs: list[Output],
                           changes: list[Output], offsets: Offsets) -> None:
        producer = tp.producer
        if not tp.in_transaction:
            await producer.begin()
            tp.in_transaction = True
        await producer.send(outputs)
        await producer.send(changes)
        ends = await self._flush_and_send_offsets(producer, offsets)
        if self.fail_commit and self.fail_commit in ("*", str(task.id)):
            self.fail_commit = None  # once
            raise InjectedFailure(f"{FAIL_COMMIT_ENV}: injected failure before the commit of "
                                  f"task {task.id}")
        await producer.commit()
        task.write_commit(_positions_after_commit(ends))

    async def _flush_and_send_offsets(self, producer: TransactionalProducer,
                                      offsets: Offsets) -> dict[tuple[str, int], int]:
        """Flush the records and add the input offsets to the transaction at the same time:
        the offsets' round trips (AddOffsetsToTxn, TxnOffsetCommit) need not wait for the
        records' acknowledgements, both only have to be done before the commit. The task is
        stopped while it commits, so every round trip saved shortens that pause."""
        if not offsets:
            return await producer.flush()
        flush = asyncio.ensure_future(producer.flush())
        add_offsets = asyncio.ensure_future(producer.send_offsets(offsets, self.group_id))
        try:
            await asyncio.wait([flush, add_offsets])   # (both done: no orphan on a failure)
        except BaseException:
            flush.cancel()
            add_offsets.cancel()
            await asyncio.gather(flush, add_offsets, return_exceptions=True)
            raise
        # A failure of either raises here (nothing is committed); the records' first, since
        # theirs decides what the failure means (a record too large is fatal).
        flush_error, offsets_error = flush.exception(), add_offsets.exception()
        if flush_error is not None:
            raise flush_error
        if offsets_error is not None:
            raise offsets_error
        return flush.result()


__all__ = ["EXACTLY_ONCE", "FAIL_COMMIT_ENV", "KafkaTaskProducer", "OpenProducer",
           "TaskTransactions", "TransactionalProducer", "classify", "kafka_producers",
           "transactional_id"]
