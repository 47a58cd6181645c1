"""The delivery guarantee, behind one interface: a :class:`Committer`.

The worker builds one committer where it is built (:func:`committer_for`), and neither the
worker nor the task manager ever asks which guarantee is in force: they open tasks, send their
outputs, commit, abort and close through the committer.

* :class:`AtLeastOnce` runs :func:`streams.runtime.checkpoint.commit` over one shared
  producer: outputs are visible as soon as they are sent, a commit flushes, writes each task's
  WriteBatch and commits the group's offsets.
* :class:`ExactlyOnce` runs one Kafka transaction per task
  (:class:`~streams.runtime.transactions.TaskTransactions`): outputs, changelog records and input
  offsets become visible together, or never.

(Kafka Streams has the same split between its ``StreamsProducer`` and
``TaskExecutor.commitOffsetsOrTransaction``; here it is decided once, not at every commit.)
Both report a :class:`~streams.runtime.commit_outcome.CommitResult`; what a failed task means
(dropped, reopened, fatal) is read through :func:`~streams.runtime.commit_outcome.classify`
alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ..state.meta import TaskId
from . import checkpoint
from .commit_outcome import CommitResult, classify
from .task import Task
from .transactions import EXACTLY_ONCE, TaskTransactions


class Committer(Protocol):
    """How a task's work reaches Kafka under one delivery guarantee."""

    #: Opening a task does work of the committer even when the task has no state (fencing its
    #: previous owner): such tasks cannot start right at the assignment.
    opens_tasks: bool

    async def open(self, task_id: TaskId) -> None:
        """Before the task's offsets and changelog ends are read."""

    def started(self, task: Task) -> None:
        """The task runs, from ``task.offsets`` (what is committed)."""

    async def send(self, task: Task) -> None:
        """Hand the task's outputs so far to Kafka."""

    async def commit(self, tasks: Iterable[Task]) -> CommitResult:
        """Commit ``tasks``; raises only what is fatal for the worker."""

    async def abort(self, task_id: TaskId) -> None:
        """The task is dropped without a commit: forget what it sent since its last commit."""

    async def close(self) -> None:
        """Every task is closed."""


class Resendable(checkpoint.CommitTransport, Protocol):
    def discard(self) -> None:
        """Forget the sends since the last flush (they are produced again after a replay)."""


class AtLeastOnce:
    """:func:`streams.runtime.checkpoint.commit` over a shared transport. A commit that fails
    for a reason retrying fixes fails for every task (they share the producer, whose flush
    failed): all resume from their last commit, their outputs since then may repeat."""

    opens_tasks = False

    def __init__(self, transport: Resendable) -> None:
        self.transport = transport

    async def open(self, task_id: TaskId) -> None:
        pass  # nothing to fence: a zombie's outputs are duplicates, which this guarantee allows

    def started(self, task: Task) -> None:
        pass

    async def send(self, task: Task) -> None:
        await self.transport.send(task.take_outputs())

    async def commit(self, tasks: Iterable[Task]) -> CommitResult:
        tasks = list(tasks)
        try:
            return CommitResult(await checkpoint.commit(tasks, self.transport))
        except Exception as exc:
            if classify(exc) != "retriable":
                raise
            self.transport.discard()
            return CommitResult(failed={task.id: exc for task in tasks})

    async def abort(self, task_id: TaskId) -> None:
        pass  # what it sent may be visible already (replayed outputs repeat)

    async def close(self) -> None:
        pass  # (the shared producer is the worker's)


class ExactlyOnce:
    """One transaction per task and commit (:class:`TaskTransactions`); opening a task fences
    its previous owner, aborting it abandons its open transaction."""

    opens_tasks = True

    def __init__(self, transactions: TaskTransactions) -> None:
        self.transactions = transactions

    async def open(self, task_id: TaskId) -> None:
        await self.transactions.open(task_id)

    def started(self, task: Task) -> None:
        self.transactions.set_committed(task.id, task.offsets)

    async def send(self, task: Task) -> None:
        await self.transactions.send(task)

    async def commit(self, tasks: Iterable[Task]) -> CommitResult:
        return await self.transactions.commit(tasks)

    async def abort(self, task_id: TaskId) -> None:
        await self.transactions.close(task_id)

    async def close(self) -> None:
        await self.transactions.close_all()


def is_exactly_once(processing_guarantee: str) -> bool:
    """Settings.processing_guarantee: the one place its value is read."""
    return processing_guarantee == EXACTLY_ONCE


__all__ = ["AtLeastOnce", "Committer", "ExactlyOnce", "is_exactly_once"]
