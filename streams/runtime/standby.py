"""Standby tasks: warm copies of other workers' task state, kept by tailing their changelogs.

With ``num_standby_replicas`` > 0 the group leader gives each member, next to its partitions,
a list of standby tasks (:mod:`streams.runtime.assignor`). For each, this worker keeps a
RocksDB in the very directory the active task would use (``<state_dir>/<topology>/<task>``)
and applies the task's changelog records to it, with the changelog positions (and the upstream
positions, stream time, event-time channels the records carry) in the same WriteBatch. When
the task is later assigned here as active, the standby is closed first (no record is applied
twice) and the task is opened as usual: :func:`~streams.state.recovery.decide_open` finds
local state current or a few records behind and restores only that tail.

A standby applies only records of **finished commits** (the active committed its input offsets
after them: the ``streams-offsets`` header is <= the group's committed offsets, as a restore
judges them) and stops at the first record of an unfinished one until the group's offsets pass
it. So a standby never holds the effects of input that will be processed again, and its meta
has no input offsets of its own: on promotion the task resumes from the group's. Standbys
read ``read_committed`` (under exactly-once only committed transactions), never produce,
never commit offsets and never process input.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from ..dsl.topology import Topology
from ..kafka.clients import Kafka, client_kwargs
from ..state.meta import Offsets, TaskId, TaskMeta, shape_of
from ..state.recovery import ChangelogFilter, decide_open, merge_channels, restore_consumer
from ..state.store import StateCorrupted, TaskStore
from .compile import SubTopology
from .opening import check_state_shape

log = logging.getLogger(__name__)

# Records held per changelog partition while waiting for the active's offset commit; beyond
# this the partition's fetching pauses (a commit interval's worth is typical).
MAX_BUFFERED = 50_000
COMMITTED_REFRESH_S = 0.2


class StandbyTask:
    """One task's standby state: a store and its changelog positions (see the module)."""

    def __init__(self, task_id: TaskId, store: TaskStore, changelogs: dict[str, str],
                 inputs: list[tuple[str, int]], shape: str, local: TaskMeta) -> None:
        self.id = task_id
        self.store = store
        self.changelogs = changelogs  # changelog topic -> table
        self.inputs = inputs
        self.shape = shape
        self.base = local
        self.accept = ChangelogFilter({}, inputs, local.upstream)
        # per changelog topic: the offset of the first record not applied yet
        self.positions = {t: local.changelog.get(t, 0) for t in changelogs}
        self.buffers: dict[str, list[Any]] = {t: [] for t in changelogs}
        # per changelog topic: the consumer's position after the buffered records
        self.fetched_to = dict(self.positions)
        self.applied = 0

    @property
    def offset_sum(self) -> int:
        return sum(self.positions.values())

    @property
    def waiting(self) -> bool:
        """Records are buffered for a commit that is not finished yet."""
        return any(self.buffers.values())

    def tps(self) -> list[TopicPartition]:
        return [TopicPartition(t, self.id.partition) for t in self.changelogs]

    def add(self, topic: str, records: list[Any], next_offset: int) -> None:
        """Buffer fetched ``records``; ``next_offset`` is the consumer's position after them
        (past transaction markers), the position once everything buffered is applied."""
        buffer = self.buffers[topic]
        buffer.extend(r for r in records if r.offset >= self.fetched_to[topic])
        self.fetched_to[topic] = max(self.fetched_to[topic], next_offset)
        if not buffer:
            self.positions[topic] = self.fetched_to[topic]

    def apply(self, committed: Offsets) -> int:
        """Apply the buffered records of finished commits (per changelog, up to the first of an
        unfinished one), with the progress in the same WriteBatch; returns records applied."""
        self.accept.set_committed(committed)
        total = 0
        for topic, table in self.changelogs.items():
            buffer = self.buffers[topic]
            if not buffer:
                continue
            n = 0
            for rec in buffer:
                if not self.accept.accept(dict(rec.headers or ())):
                    break
                n += 1
            if not n:
                continue
            entries = [(r.key, r.value) for r in buffer[:n]]
            rest = buffer[n:]
            self.buffers[topic] = rest
            self.positions[topic] = rest[0].offset if rest else self.fetched_to[topic]
            self.store.write_raw(table, entries, self._meta())
            total += n
        self.applied += total
        return total

    def _meta(self) -> dict[str, str]:
        channels = dict(self.base.channels)
        merge_channels(channels, self.accept.channels)
        # No input offsets: on promotion the task resumes from the group's committed offsets,
        # which cover every commit applied here.
        return TaskMeta({}, dict(self.accept.upstream),
                        max(self.base.stream_time, self.accept.stream_time),
                        dict(self.positions), self.shape, channels).encode()

    def close(self) -> None:
        self.store.close()


class StandbyTasks:
    """The worker's standby tasks: opened and closed as assignments say, tailed in steps."""

    def __init__(self, topology: Topology, subs: list[SubTopology], state_root: Path,
                 bootstrap: Kafka, group: str) -> None:
        self.topology = topology
        self.subs = {s.id: s for s in subs}
        self.state_root = state_root
        self.bootstrap = bootstrap
        self.group = group
        self.tasks: dict[TaskId, StandbyTask] = {}
        self.wanted: set[TaskId] = set()  # the latest assignment's standbys
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._committed_at = 0.0
        self._committed: Offsets = {}
        self._seek: set[TopicPartition] = set()
        self._retry_at = 0.0
        self._failing = False

    # -- assignment -------------------------------------------------------------------------------
    def assign(self, standby: Collection[str], active: Collection[TaskId]) -> None:
        """The group's new standby tasks for this worker: standbys that are no longer wanted, or
        that become active here, are closed now (before the active task opens their
        directory); new ones are opened by :meth:`step`."""
        wanted = set()
        for text in standby:
            try:
                task_id = TaskId.parse(text)
            except ValueError:
                continue
            if task_id.sub in self.subs and self.subs[task_id.sub].stores:
                wanted.add(task_id)
        wanted -= set(active)
        for task_id in list(self.tasks):
            if task_id not in wanted:
                self._close(task_id)
        self.wanted = wanted
        if wanted or self.tasks:
            log.info("standby tasks: %s", sorted(str(t) for t in wanted) or "none")

    def offset_sums(self) -> dict[str, int]:
        return {str(t): s.offset_sum for t, s in self.tasks.items()}

    def _close(self, task_id: TaskId) -> None:
        # (its changelog partitions leave the fetcher at the next step: _fetcher)
        task = self.tasks.pop(task_id)
        task.close()
        log.info("standby %s closed (applied %d changelog records)", task_id, task.applied)

    def close(self) -> None:
        for task_id in list(self.tasks):
            self._close(task_id)
        self.wanted = set()

    async def stop(self) -> None:
        self.close()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    # -- tailing ----------------------------------------------------------------------------------
    async def step(self, max_records: int = 5000) -> int:
        """Open new standbys, fetch what arrived, apply what is finished; returns the number
        of records applied. Never blocks on a fetch (the worker's own input comes first).
        Kafka errors (the broker away) only postpone the standbys: the next step retries."""
        if time.monotonic() < self._retry_at:
            return 0
        try:
            applied = await self._step(max_records)
        except (KafkaError, TimeoutError, OSError) as exc:
            if not self._failing:
                log.info("standby tasks paused (%s: %s); retrying", type(exc).__name__, exc)
            self._failing = True
            self._retry_at = time.monotonic() + 1.0
            return 0
        if self._failing:
            log.info("standby tasks tailing again")
            self._failing = False
        return applied

    async def _step(self, max_records: int) -> int:
        if not self.wanted and not self.tasks:
            return 0
        for task_id in sorted(self.wanted - self.tasks.keys()):
            await self._open(task_id)
        if not self.tasks:
            return 0
        consumer = await self._fetcher()
        for tp in list(self._seek):
            task = self._owner(tp)
            if task is not None:
                position = task.fetched_to[tp.topic]
                if position <= 0:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, position)
        self._seek.clear()
        batch = await consumer.getmany(timeout_ms=0, max_records=max_records)
        for tp, records in batch.items():
            task = self._owner(tp)
            if task is not None and records:
                task.add(tp.topic, records, await consumer.position(tp))
        full = [tp for tp in consumer.assignment()
                if (t := self._owner(tp)) is not None and len(t.buffers[tp.topic]) >= MAX_BUFFERED]
        consumer.pause(*full)
        if not any(t.waiting for t in self.tasks.values()):
            return 0
        await self._refresh_committed()
        applied = 0
        for task in self.tasks.values():
            applied += task.apply(self._committed)
        consumer.resume(*[tp for tp in full if (t := self._owner(tp)) is not None
                          and len(t.buffers[tp.topic]) < MAX_BUFFERED])
        return applied

    def _owner(self, tp: TopicPartition) -> StandbyTask | None:
        for task in self.tasks.values():
            if task.id.partition == tp.partition and tp.topic in task.changelogs:
                return task
        return None

    async def _fetcher(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            # read_committed: under exactly-once only committed transactions are applied
            self._consumer = restore_consumer(self.bootstrap)
            await self._consumer.start()
        wanted = {tp for task in self.tasks.values() for tp in task.tps()}
        if wanted != set(self._consumer.assignment()):
            # (assign forgets every partition's position: all are sought again)
            self._consumer.assign(sorted(wanted))
            self._seek = set(wanted)
        return self._consumer

    async def _refresh_committed(self) -> None:
        now = time.monotonic()
        if now - self._committed_at < COMMITTED_REFRESH_S:
            return
        self._committed_at = now
        inputs = [tp for task in self.tasks.values() for tp in task.inputs]
        try:
            self._committed = await self._committed_of(inputs)
        except (KafkaError, TimeoutError, OSError) as exc:
            log.debug("standby: committed offsets not available (%s)", exc)

    async def _committed_of(self, inputs: list[tuple[str, int]]) -> Offsets:
        """The group's committed offsets of these input partitions (an admin request: the
        group consumer may be in the middle of a rebalance)."""
        if self._admin is None:
            self._admin = AIOKafkaAdminClient(**client_kwargs(self.bootstrap))
            await self._admin.start()
        tps = [TopicPartition(t, p) for t, p in inputs]
        offsets = await asyncio.wait_for(
            self._admin.list_consumer_group_offsets(self.group, partitions=tps), 10.0)
        return {(tp.topic, tp.partition): meta.offset
                for tp, meta in offsets.items() if meta.offset >= 0}

    async def _open(self, task_id: TaskId) -> None:
        sub = self.subs[task_id.sub]
        path = self.state_root / str(task_id)
        inputs = [(t, task_id.partition) for t in sub.topics]
        changelogs = {self.topology.stores[name].changelog: name for name in sub.stores}
        try:
            check_state_shape(path, self.topology, sub)
            store = await asyncio.to_thread(TaskStore, path, sub.stores)
        except StateCorrupted as exc:
            log.warning("standby %s: %s: wiped", task_id, exc)
            TaskStore.destroy(path)
            store = await asyncio.to_thread(TaskStore, path, sub.stores)
        local = TaskMeta.decode(store.meta())
        consumer = await self._fetcher()
        tps = [TopicPartition(t, task_id.partition) for t in changelogs]
        ends = {tp.topic: off for tp, off in (await consumer.end_offsets(tps)).items()}
        # Local state from an earlier life of this task here (it ran here as active): keep it
        # if the changelog continues it (the rules of opening an active task), else start
        # over; a commit the group never acknowledged (finish_commit) is not to be kept either.
        decision = decide_open(local, await self._committed_of(inputs), ends)
        if not local.empty and (decision.action == "wipe" or decision.finish_commit):
            store.close()
            TaskStore.destroy(path)
            store = await asyncio.to_thread(TaskStore, path, sub.stores)
            local = TaskMeta(shape=shape_of(sub.topics, sub.stores))
        if local.shape is None:
            local.shape = shape_of(sub.topics, sub.stores)
        task = StandbyTask(task_id, store, changelogs, inputs, local.shape, local)
        self.tasks[task_id] = task
        log.info("standby %s opened at changelog positions %s (ends %s)", task_id,
                 task.positions, ends)


__all__ = ["StandbyTask", "StandbyTasks"]
