"""Exactly-once commits: one Kafka transaction per task and commit interval.

With ``processing_guarantee = "exactly_once"`` each task owns a transactional producer whose
``transactional.id`` is stable per task: ``<topology>-<task id>`` (e.g. ``payments-0_3``). One
commit of a task is one transaction holding

1. the task's outputs of the interval (sent after each batch inside the task's open
   transaction, :meth:`TaskTransactions.send`, so they travel while the task keeps processing;
   a read_committed reader sees them only at the commit);
2. its changelog records (the table changes of the interval);
3. its input offsets, through ``send_offsets_to_transaction`` to the topology's group;

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

Changelog positions. A transaction's commit marker takes one offset in every partition the
transaction wrote, so the end offset after a commit is the last record's offset + 2. The
position written to RocksDB is that end (see :func:`_positions_after_commit`), which keeps
``decide_open``'s "position == end means nobody wrote after this state" true; if anything else
moved the end (an aborted transaction of a fenced zombie, a commit whose outcome we did not
see), the position is below the end and the task restores the difference, which under
read_committed contains only committed records.

Failures of a task's commit (:func:`classify`):

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka import errors
from aiokafka.errors import InvalidProducerEpoch, KafkaConnectionError, KafkaError, ProducerFenced

from ..kafka.clients import Kafka, client_kwargs
from ..state.meta import Offsets, TaskId
from .transport import KafkaTransport, stop_producer
from .task import Task

log = logging.getLogger(__name__)

EXACTLY_ONCE = "exactly_once"  # Settings.processing_guarantee

FailureKind = Literal["fenced", "retriable", "fatal"]

#: Test hook: when set to a task id (or ``*``), that task's next commit raises after its
#: records were produced and before the transaction commits (the injected-abort test).
FAIL_COMMIT_ENV = "STREAMS_TEST_FAIL_COMMIT"


class InjectedFailure(KafkaConnectionError):
    """Raised by the test hook :data:`FAIL_COMMIT_ENV` (handled as a retriable failure)."""


# Failures that happen again however often the transaction is retried: the worker stops.
# Everything else a Kafka client raises (a lost broker, timeouts, a leader not elected yet after
# a restart, aiokafka's "Unexpected error during batch delivery" when its sender gave up, an
# expired batch's sequence gap) ends with an abort and a reopen from the last commit, which is
# always safe under exactly-once: nothing of the transaction became visible.
_PERMANENT: tuple[type[BaseException], ...] = (
    errors.TopicAuthorizationFailedError, errors.GroupAuthorizationFailedError,
    errors.ClusterAuthorizationFailedError, errors.TransactionalIdAuthorizationFailed,
    errors.SaslAuthenticationFailed, errors.AuthenticationFailedError,
    errors.MessageSizeTooLargeError, errors.RecordListTooLargeError, errors.RecordTooLargeError,
    errors.InvalidTopicError, errors.InvalidTimestampError, errors.UnsupportedVersionError,
    errors.UnsupportedForMessageFormatError, errors.IncompatibleBrokerVersion,
    errors.InvalidTransactionTimeout, errors.KafkaConfigurationError,
    errors.UnsupportedCodecError, errors.PolicyViolationError, errors.InvalidRequiredAcksError)


def classify(exc: BaseException) -> FailureKind:
    """What a failed commit (or task open) means for its task (see the module docstring).

    ``retriable`` covers every outage symptom, however long the broker is away; ``fatal`` is
    kept for what a retry cannot fix (authorization, a record the broker refuses, an
    incompatible broker) and for errors that are not Kafka's (a bug must not loop)."""
    if isinstance(exc, (ProducerFenced, InvalidProducerEpoch)):
        return "fenced"
    if isinstance(exc, _PERMANENT):
        return "fatal"
    if isinstance(exc, (KafkaError, asyncio.TimeoutError, ConnectionError)):
        return "retriable"
    return "fatal"


def transactional_id(topology: str, task_id: TaskId) -> str:
    """Stable per task, so the next owner of a task fences the previous one."""
    return f"{topology}-{task_id}"


def _positions_after_commit(ends: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """End offsets after the commit: the flushed ends + the commit marker of each partition."""
    return {tp: end + 1 for tp, end in ends.items()}


async def _fence_previous_owner(producer: AIOKafkaProducer) -> None:
    # aiokafka runs InitProducerId in its sender in the background and waits for it only in
    # begin_transaction(); the opener must know the previous owner is fenced (and its open
    # transaction ended) BEFORE it reads the group's offsets and the changelog ends, so it
    # waits for the producer id here, in the one place that touches the transaction manager.
    await producer._txn_manager.wait_for_pid()  # noqa: SLF001


@dataclass
class _TaskProducer:
    producer: AIOKafkaProducer
    transport: KafkaTransport
    committed: Offsets = field(default_factory=dict)  # the input offsets of its last commit
    in_transaction: bool = False  # outputs of this interval were sent already (see send())
    failed: BaseException | None = None  # an eager send failed: the commit raises it


@dataclass
class CommitResult:
    committed: Offsets = field(default_factory=dict)
    failed: dict[TaskId, BaseException] = field(default_factory=dict)


class TaskTransactions:
    """The transactional producers of a worker's tasks: opened with the task (which fences the
    previous owner), one transaction per task and commit, closed with the task."""

    def __init__(self, topology: str, group_id: str, bootstrap: Kafka, *,
                 transaction_timeout_ms: int, commit_timeout_s: float,
                 request_timeout_ms: int = 30000,
                 on_produced: Callable[[str, int], None] | None = None,
                 on_result: Callable[[str], None] | None = None,
                 fail_commit: str | None = None) -> None:
        self.topology = topology
        self.group_id = group_id
        self.bootstrap = bootstrap
        self.transaction_timeout_ms = transaction_timeout_ms
        self.request_timeout_ms = request_timeout_ms
        self.commit_timeout_s = commit_timeout_s
        self.on_produced = on_produced
        self.on_result = on_result  # f("committed" | "aborted" | "fenced"): metrics
        self.fail_commit = fail_commit
        self._producers: dict[TaskId, _TaskProducer] = {}

    # -- producers --------------------------------------------------------------------------------
    async def open(self, task_id: TaskId) -> None:
        """Start the task's producer and fence every earlier producer of the task."""
        await self.close(task_id)
        producer = AIOKafkaProducer(
            **client_kwargs(self.bootstrap), transactional_id=transactional_id(
                self.topology, task_id),
            transaction_timeout_ms=self.transaction_timeout_ms, enable_idempotence=True,
            acks="all", linger_ms=5, max_batch_size=512 * 1024,
            request_timeout_ms=self.request_timeout_ms)
        try:
            await producer.start()
            await asyncio.wait_for(_fence_previous_owner(producer), self.commit_timeout_s)
        except BaseException:
            await _stop(producer)
            raise
        self._producers[task_id] = _TaskProducer(
            producer, KafkaTransport(producer, None, on_produced=self.on_produced),
            {})

    def set_committed(self, task_id: TaskId, offsets: Offsets) -> None:
        tp = self._producers.get(task_id)
        if tp is not None:
            tp.committed = dict(offsets)

    async def close(self, task_id: TaskId) -> None:
        tp = self._producers.pop(task_id, None)
        if tp is not None:
            await _stop(tp.producer)

    async def close_all(self) -> None:
        producers, self._producers = self._producers, {}
        await asyncio.gather(*(_stop(tp.producer) for tp in producers.values()))

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
                await tp.producer.begin_transaction()
                tp.in_transaction = True
            await tp.transport.send(outputs)
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
        for task, result in zip(tasks, results):
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
            tp.transport.discard()  # (its sends' failures are this one: nothing to report)
            await self.close(task.id)
            raise
        tp.committed = offsets
        tp.in_transaction = False
        return offsets

    async def _transaction(self, task: Task, tp: _TaskProducer, outputs: list[Any],
                           changes: list[Any], offsets: Offsets) -> None:
        producer, transport = tp.producer, tp.transport
        if not tp.in_transaction:
            await producer.begin_transaction()
            tp.in_transaction = True
        await transport.send(outputs)
        await transport.send(changes)
        ends = await transport.flush()
        if offsets:
            await producer.send_offsets_to_transaction(
                {TopicPartition(t, p): o for (t, p), o in offsets.items()}, self.group_id)
        if self.fail_commit and self.fail_commit in ("*", str(task.id)):
            self.fail_commit = None  # once
            raise InjectedFailure(f"{FAIL_COMMIT_ENV}: injected failure before the commit of "
                                  f"task {task.id}")
        await producer.commit_transaction()
        task.write_commit(_positions_after_commit(ends))


async def _stop(producer: AIOKafkaProducer, timeout_s: float = 5.0) -> None:
    """Stop a producer without waiting long for an unreachable broker (its unsent records
    belong to a transaction that is abandoned anyway)."""
    await stop_producer(producer, timeout_s)


__all__ = ["EXACTLY_ONCE", "FAIL_COMMIT_ENV", "CommitResult",
           "TaskTransactions", "classify", "transactional_id"]
