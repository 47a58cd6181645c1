"""The tasks a worker owns: opening them, restoring their state, closing them on a rebalance.

As in Kafka Streams, the rebalance listener only records what was assigned; opening state and
restoring it from the changelog happen in the worker's main loop, a step at a time, with the
task's input partitions paused. So a large restore neither delays the group's rebalance nor
exceeds its timeouts, the worker keeps polling (and stays in the group), and a task starts
processing as soon as its own restore is complete.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from aiokafka.errors import KafkaError

from ..dsl.topology import Topology
from ..kafka.clients import Kafka
from ..state.meta import Offsets, TaskId
from ..state.recovery import Restoration, restore_consumer
from ..state.restorer import ChangelogRestorer, RestoreProgress
from ..state.store import TaskStore
from .checkpoint import CommitTransport
from .commit_outcome import CommitResult, classify
from .committer import Committer
from .compile import SubTopology
from .opening import StateShapeMismatch, check_state_shape, open_task, start_restored
from .task import GlobalViews, Task

log = logging.getLogger(__name__)

__all__ = ["CommitFailed", "StateShapeMismatch", "TaskManager", "check_state_shape"]


class CommitFailed(RuntimeError):
    """A task's commit failed for a reason retrying cannot fix."""


class _ConsumerIO:
    """:class:`~streams.runtime.opening.OpenIO` over the worker's consumer and group."""

    def __init__(self, manager: TaskManager) -> None:
        self.m = manager

    async def committed(self, tps: list[tuple[str, int]]) -> Offsets:
        return await self.m._committed(tps)

    async def changelog_ends(self, topics: list[str], partition: int) -> dict[str, int]:
        tps = [TopicPartition(t, partition) for t in topics]
        return {tp.topic: off for tp, off in (await self.m.consumer.end_offsets(tps)).items()}

    async def commit_offsets(self, offsets: Offsets) -> None:
        await self.m.transport.commit_offsets(offsets)

    async def open_store(self, path: Path, tables: list[str]) -> TaskStore:
        # (off the event loop: opening RocksDB can take a while)
        return await asyncio.to_thread(TaskStore, path, tables)


class TaskManager:
    """Owns the worker's tasks: ``running`` process input; ``restoring`` wait for their state."""

    def __init__(self, topology: Topology, subs: list[SubTopology], state_root: Path,
                 bootstrap: Kafka, consumer: AIOKafkaConsumer, transport: CommitTransport,
                 committer: Committer,
                 on_remaining: Callable[[str, int], None] | None = None,
                 global_tables: GlobalViews | None = None,
                 task_options: Mapping[str, Any] | None = None) -> None:
        self.topology = topology
        # keyword arguments of every Task (partition counts, ordering and event-time settings)
        self.task_options = dict(task_options or {})
        # the delivery guarantee (streams.runtime.committer)
        self.committer = committer
        self.global_tables = global_tables  # the worker's, handed to every task
        self.sub_of_topic = {t: s for s in subs for t in s.topics}
        self.state_root = state_root
        self.bootstrap = bootstrap
        self.consumer = consumer
        self.transport = transport  # (the group's offset commit, for opening tasks)
        self.on_remaining = on_remaining
        self.running: dict[TaskId, Task] = {}
        self.restoring: dict[TaskId, Restoration] = {}
        self._pending: dict[TaskId, SubTopology] = {}  # assigned, not opened yet
        # changelog offset sums of the local state of tasks closed here (standby replicas:
        # reported to the group leader, see offset_sums)
        self._closed_sums: dict[TaskId, int] = {}
        self._restorer: ChangelogRestorer | None = None
        self._progress = RestoreProgress(on_remaining)
        self._retry_at = 0.0  # opening failed (broker unreachable): next attempt
        self._backoff = 0.0

    # -- rebalance (no I/O beyond pausing partitions) ---------------------------------------------
    def assigned(self, tps: list[TopicPartition]) -> None:
        """Record an assignment; the main loop opens the tasks (:meth:`open_pending`)."""
        for tp in tps:
            sub = self.sub_of_topic[tp.topic]
            task_id = TaskId(sub.id, tp.partition)
            if task_id in self.running:
                continue
            if sub.stores or self.committer.opens_tasks:
                # (e.g. exactly-once: even a stateless task first fences its previous owner
                # and seeks to the offsets it committed)
                self._pending[task_id] = sub
            else:
                # Stateless: nothing to open or restore, and the group's offsets are where it
                # resumes, so it starts right away (no paused poll in between).
                task = self.running[task_id] = self.new_task(sub, tp.partition, None)
                self.committer.started(task)
        paused = [tp for tp in tps
                  if TaskId(self.sub_of_topic[tp.topic].id, tp.partition) in self._pending]
        if paused:
            self.consumer.pause(*paused)
        log.info("assigned %d partitions -> tasks %s", len(tps),
                 sorted({str(TaskId(self.sub_of_topic[tp.topic].id, tp.partition)) for tp in tps}))

    def task_ids(self, tps: list[TopicPartition]) -> list[TaskId]:
        return [TaskId(self.sub_of_topic[tp.topic].id, tp.partition) for tp in tps
                if tp.topic in self.sub_of_topic]

    def new_task(self, sub: SubTopology, partition: int, store: TaskStore | None) -> Task:
        return Task(self.topology, sub, partition, store, self.global_tables,
                    **self.task_options)

    def approximate_keys(self) -> dict[str, int]:
        """RocksDB's key estimate per table over the running tasks (for metrics)."""
        keys: dict[str, int] = {}
        for task in self.running.values():
            for table, n in task.approximate_keys().items():
                keys[table] = keys.get(table, 0) + n
        return keys

    def opening(self) -> set[TaskId]:
        """The tasks assigned here that do not run yet (waiting to open, or restoring)."""
        return set(self._pending) | set(self.restoring)

    def offset_sums(self) -> dict[str, int]:
        """Task id -> sum of the changelog positions its local state here reflects (the
        stateful tasks running, restoring or run here before)."""
        sums = {str(t): n for t, n in self._closed_sums.items()}
        for task_id, r in self.restoring.items():
            sums[str(task_id)] = sum(r.positions.values())
        for task_id, task in self.running.items():
            if task.changelogs:
                sums[str(task_id)] = sum(task.changelog_positions.values())
        return sums

    def _remember(self, task_id: TaskId, positions: Mapping[str, int]) -> None:
        if positions:
            self._closed_sums[task_id] = sum(positions.values())

    def task_for(self, tp: TopicPartition) -> Task | None:
        sub = self.sub_of_topic.get(tp.topic)
        return None if sub is None else self.running.get(TaskId(sub.id, tp.partition))

    async def revoked(self) -> None:
        """Commit the running tasks, then close everything (restores keep their progress)."""
        try:
            if self.running:
                await self.commit()
        finally:
            self.close()
            await self.committer.close()

    async def send(self, task: Task) -> None:
        """Hand the task's outputs so far to Kafka (through the committer)."""
        await self.committer.send(task)

    async def commit(self) -> CommitResult:
        """Commit the running tasks; a fenced task is dropped, one whose commit failed for a
        retriable reason is reopened from its committed state (its input since then is
        processed again), any other failure raises (nothing of that task was committed)."""
        result = await self.committer.commit(list(self.running.values()))
        fatal: list[str] = []
        aborted: list[str] = []
        first = ""
        for task_id, exc in result.failed.items():
            kind = classify(exc)
            if kind == "fenced":
                log.warning("task %s: fenced (another worker owns it now): dropped until the "
                            "group assigns it again", task_id)
                await self.drop(task_id)
            elif kind == "retriable":
                if not aborted:  # one line for all of them (a lost broker fails every task)
                    first = type(exc).__name__ + (f": {str(exc)[:200]}" if str(exc) else "")
                aborted.append(str(task_id))
                await self.drop(task_id, reopen=True)
            else:
                await self.drop(task_id)
                fatal.append(f"task {task_id}: could not commit "
                             f"({type(exc).__name__}: {exc})")
        if aborted:
            log.warning("commit failed (%s): %d tasks resume from their last commit, their "
                        "input since then is processed again: %s",
                        first, len(aborted), ", ".join(sorted(aborted)))
        if fatal:
            raise CommitFailed("; ".join(fatal))
        return result

    async def drop(self, task_id: TaskId, reopen: bool = False) -> None:
        """Forget a running task's uncommitted changes and close it and its producer; its
        partitions stay paused until it is reopened (``reopen``: by the main loop, as after an
        assignment) or the group assigns it again."""
        task = self.running.pop(task_id, None)
        if task is None:
            return
        task.abandon()
        task.close()
        self._remember(task_id, task.changelog_positions)
        await self.committer.abort(task_id)
        tps = [TopicPartition(t, p) for t, p in task.tps]
        assignment = self.consumer.assignment()
        mine = [tp for tp in tps if tp in assignment]
        if mine:
            self.consumer.pause(*mine)
        if reopen:
            self._pending[task_id] = task.sub

    def close(self) -> None:
        for task in self.running.values():
            task.abandon()
            task.close()
            self._remember(task.id, task.changelog_positions)
        for task_id, restoration in self.restoring.items():
            restoration.store.close()
            self._remember(task_id, restoration.positions)
        n = len(self.running) + len(self.restoring)
        self.running.clear()
        self.restoring.clear()
        self._pending.clear()
        if self._restorer is not None:
            self._restorer.forget()
        self._progress.update(())  # (the gauge: nothing left to restore here)
        if n:
            log.info("closed %d tasks", n)

    async def stop(self) -> None:
        self.close()
        await self.committer.close()
        if self._restorer is not None:
            await self._restorer.consumer.stop()
            self._restorer = None

    # -- main loop --------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Tasks are waiting to be opened or restored."""
        return bool(self._pending or self.restoring)

    async def open_pending(self) -> None:
        if time.monotonic() < self._retry_at:
            return
        while self._pending:
            task_id, sub = self._pending.popitem()
            try:
                await self._open(task_id, sub)
            except (KafkaError, TimeoutError, OSError) as exc:
                if classify(exc) != "retriable":
                    raise
                # Broker unreachable: keep the task pending and try again later; one line
                # when this starts and one when it ends (INFO: the outage is the worker's
                # WARNING line, this is its consequence).
                self._pending[task_id] = sub
                if not self._backoff:
                    log.info("task %s: cannot open yet (%s: %s); retrying with backoff",
                             task_id, type(exc).__name__, exc)
                self._backoff = min(5.0, max(0.25, self._backoff * 2))
                self._retry_at = time.monotonic() + self._backoff
                return
        if self._backoff:
            log.info("tasks opened again after the broker became reachable")
            self._backoff = 0.0

    async def restore_step(self, budget_s: float = 0.5) -> None:
        """Restore for about ``budget_s``, then return so the worker polls and processes. All
        restoring tasks are read together (:class:`ChangelogRestorer`); each one starts as soon
        as its own restore is complete."""
        if not self.restoring:
            return
        if self._restorer is None:
            consumer = restore_consumer(self.bootstrap)
            await consumer.start()
            self._restorer = ChangelogRestorer(consumer, self._progress)
        deadline = time.monotonic() + budget_s
        while self.restoring:
            await self._restorer.poll(self.restoring)
            for task_id, restoration in list(self.restoring.items()):
                if restoration.done:
                    del self.restoring[task_id]
                    await self._start(task_id, restoration)
            if time.monotonic() >= deadline:
                break
        if not self.restoring:
            self._restorer.forget()  # (no fetching ahead into memory until the next restore)
            self._progress.update(())

    # -- opening ----------------------------------------------------------------------------------
    async def _committed(self, tps: list[tuple[str, int]]) -> Offsets:
        out: Offsets = {}
        for topic, part in tps:
            off = await self.consumer.committed(TopicPartition(topic, part))
            if off is not None and off >= 0:
                out[(topic, part)] = off
        return out

    async def _open(self, task_id: TaskId, sub: SubTopology) -> None:
        # Exactly-once fences the previous owner here: then the group's offsets and the
        # changelog ends read below include everything it committed, and it cannot commit
        # any more.
        await self.committer.open(task_id)
        opened = await open_task(self.topology, self.new_task, sub, task_id.partition,
                                 self.state_root, _ConsumerIO(self))
        if isinstance(opened, Restoration):
            self.restoring[task_id] = opened
            return
        task = opened
        if task.store is None:
            # (exactly-once, or reopened after a failed commit: resume from the group's offsets)
            task.offsets = await self._committed(task.tps)
        await self._start_task(task)

    async def _start(self, task_id: TaskId, restoration: Restoration) -> None:
        sub = self.sub_of_topic[next(iter(self._topics_of(task_id)))]
        task, repair = start_restored(self.new_task, sub, restoration)
        if repair:  # the keys to repair go to the changelog right away (Task.repair)
            self.running[task.id] = task
            await self.commit()
            if task.id not in self.running:
                return  # (dropped: reopened later, or fenced)
        await self._start_task(task)

    def _topics_of(self, task_id: TaskId) -> list[str]:
        return [t for t, s in self.sub_of_topic.items() if s.id == task_id.sub]

    async def _start_task(self, task: Task) -> None:
        """Seek the task's partitions to where its state says, then let them flow."""
        self.running[task.id] = task
        self.committer.started(task)
        tps = [TopicPartition(t, p) for t, p in task.tps]
        for tp in tps:
            off = task.offsets.get((tp.topic, tp.partition))
            if off is not None:
                self.consumer.seek(tp, off)
            else:
                # Nothing committed yet; a reopened task (after an aborted transaction or a
                # failed commit) must not continue from where the consumer had fetched to.
                await self.consumer.seek_to_beginning(tp)
        assignment = self.consumer.assignment()
        self.consumer.resume(*[tp for tp in tps if tp in assignment])
