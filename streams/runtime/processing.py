"""Processing polled records: the worker's tasks run their batches, and what they emit goes to
Kafka through the committer (:meth:`TaskManager.send`), whatever the delivery guarantee.

Besides the batches themselves this holds what keeps event time moving between tasks: the
inputs a task waits for (fetched first), partitions paused while their buffer is full,
progress and idle markers to the tasks behind repartition topics
(:mod:`streams.runtime.watermarks`) and the idle close of quiet tasks
(:mod:`streams.runtime.idle`).
"""

from __future__ import annotations

import time
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, TopicPartition

from ..metrics import Metrics
from ..state.meta import TaskId
from .idle import IdleTracker
from .lag import report_lag
from .ordering import PAUSE_BUFFERED, PartitionGroup
from .task_manager import TaskManager

# A task sends a progress marker after a batch that advanced its stream time at most this often
# (and at every commit): downstream watermarks lag its progress by at most about this much.
MARKER_INTERVAL_S = 0.1
IDLE_CHECK_S = 0.25


class Processing:
    """Runs polls through the tasks of ``tasks``; counts what it processed since the last
    commit (``since_commit``) for the worker's commit schedule."""

    def __init__(self, metrics: Metrics, consumer: AIOKafkaConsumer, tasks: TaskManager,
                 idle: IdleTracker, repartition_idle_ms: int) -> None:
        self.metrics = metrics
        self.name = metrics.topology
        self.consumer = consumer
        self.tasks = tasks
        self.idle = idle
        self.repartition_idle_ms = repartition_idle_ms
        self.since_commit = 0
        # progress markers: wall time of each task's last one, of its last input, and of the
        # last idle check
        self._marked_at: dict[Any, float] = {}
        self._input_at: dict[Any, float] = {}
        self._idle_check = 0.0
        self.wanted: set[TopicPartition] = set()  # empty inputs such a task waits for
        self._wanted_turn = False
        self._paused_full: set[TopicPartition] = set()  # paused: their group buffer is full

    def fetch_first(self) -> list[TopicPartition]:
        """The partitions the next poll asks for first. A task waiting for records the broker
        holds for one of its inputs asks for that partition (every other poll, so other tasks
        are not held up): aiokafka hands out its fetched partitions in turn, max_records at a
        time, and the other inputs' backlog would come first."""
        wanted, self.wanted = list(self.wanted), set()
        self._wanted_turn = not self._wanted_turn and bool(wanted)
        return wanted if self._wanted_turn else []

    def revoked(self) -> None:
        self.wanted.clear()
        self._paused_full.clear()  # the task manager resumes a task's partitions on start

    def has_work(self, batch: dict[TopicPartition, list[Any]]) -> bool:
        return bool(batch) or any(t.buffered() for t in self.tasks.running.values())

    async def process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Run a poll's records through their tasks. A task with one input partition processes
        its records as they came (the direct batch path); a task with several buffers them
        and runs them in timestamp order (its :class:`~streams.runtime.ordering.PartitionGroup`,
        :meth:`Task.drain`)."""
        started = time.monotonic()
        count = 0
        for tp, records in batch.items():
            task = self.tasks.task_for(tp)
            if task is None:
                continue
            done = task.add(tp.topic, records)
            if done:
                count += await self._processed(task, done)
        now_ms = int(time.monotonic() * 1000)
        for task in list(self.tasks.running.values()):
            if task.group is None or not task.buffered():
                continue
            group = task.group
            # every input's, not just the empty ones': one may run dry during the drain
            more = {t: await self._has_more(TopicPartition(t, task.partition))
                    for t in group.topics}
            for t in self._fetched_before_others(task.partition, group.topics):
                more[t] = True
            done = task.drain(now_ms, more)
            if task.buffered():
                self.wanted.update(TopicPartition(t, task.partition) for t in group.topics
                                   if more[t] and not task.buffered(t))
            self._pause_full(task, group)
            if done:
                count += await self._processed(task, done)
        if not count:
            return
        self.since_commit += count
        self.metrics.processing.labels(self.name).observe(time.monotonic() - started)
        report_lag(self.metrics, self.consumer, self.tasks, batch.keys())

    async def _processed(self, task: Any, done: dict[str, int]) -> int:
        """Metrics for the records ``task`` processed (per topic); its outputs to Kafka."""
        total = sum(done.values())
        if total:
            m, name = self.metrics, self.name
            self.idle.seen(task.id)
            now = time.monotonic()
            self._input_at[task.id] = now
            # The first marker after an idle one goes out at once: downstream tasks left this
            # task out of their watermark and must wait for it again.
            if task.progress_due() and (task.marked_idle or now - self._marked_at.get(
                    task.id, 0.0) >= MARKER_INTERVAL_S):
                task.send_progress()
                self._marked_at[task.id] = now
            for topic, n in done.items():
                if n:
                    m.consumed.labels(name, topic, str(task.partition)).inc(n)
            m.count_task_events(task.dead_letters, task.dropped, task.late)
            await self.tasks.send(task)
        return total

    def _pause_full(self, task: Any, group: PartitionGroup) -> None:
        """Stop fetching a partition while its group holds ``PAUSE_BUFFERED`` records of it (so
        the consumer fetches the input the task waits for); resume once it has drained."""
        for topic in group.topics:
            tp = TopicPartition(topic, task.partition)
            full = group.buffered(topic) >= PAUSE_BUFFERED
            if full and tp not in self._paused_full:
                self.consumer.pause(tp)
                self._paused_full.add(tp)
            elif not full and tp in self._paused_full:
                self._paused_full.discard(tp)
                if tp in self.consumer.assignment():
                    self.consumer.resume(tp)

    async def progress_markers(self) -> None:
        """Every commit carries the tasks' latest progress downstream (exactly-once: inside
        the transaction)."""
        now = time.monotonic()
        for task in list(self.tasks.running.values()):
            if task.progress_due():
                task.send_progress()
                self._marked_at[task.id] = now
                await self.tasks.send(task)

    async def idle_markers(self) -> None:
        """Tell the tasks behind this worker's repartition topics which upstream tasks are idle:
        caught up on every input partition, nothing buffered, and no input for
        ``repartition_idle_ms`` (:mod:`streams.runtime.watermarks`). Checked a few times a
        second; a task that sent its idle marker sends the next one after new input."""
        now = time.monotonic()
        if now - self._idle_check < IDLE_CHECK_S:
            return
        self._idle_check = now
        quiet = self.repartition_idle_ms / 1000
        for task in list(self.tasks.running.values()):
            if task.refresh_watermark():  # a wake hold ended: windows may close
                self.metrics.count_task_events(task.dead_letters, task.dropped, task.late)
                await self.tasks.send(task)
        for task in list(self.tasks.running.values()):
            if not task.marker_targets or task.marked_idle or task.buffered():
                continue
            since = self._input_at.setdefault(task.id, now)
            if now - since < quiet:
                continue
            if any([await self._has_more(TopicPartition(t, p)) for t, p in task.tps]):
                continue
            task.send_progress(idle=True)
            self._marked_at[task.id] = now
            await self.tasks.send(task)

    def _fetched_before_others(self, partition: int, topics: list[str]) -> list[str]:
        """The inputs whose last fetch response is older than another input's of the same task.

        Their high watermark may be stale next to the other input's records: the consumer
        leaves a partition with undelivered records out of its fetch requests, so during a
        catch-up (after a restart or a rebalance) the inputs are fetched at different moments,
        and records produced to one after its last fetch are unknown to ``_has_more`` while
        the other's fetched later are already here. Going on without them let one input run
        hours of event time ahead and made the other's records late (a join lost its pairs).
        Such an input counts as having more until a fetch at least as recent answers for it."""
        polled: dict[str, int | None] = {}
        for t in topics:
            try:
                polled[t] = self.consumer.last_poll_timestamp(TopicPartition(t, partition))
            except Exception:  # noqa: BLE001 - not assigned any more
                return []
        newest = max((p for p in polled.values() if p is not None), default=None)
        if newest is None:
            return []
        return [t for t, p in polled.items() if p is None or p < newest]

    async def _has_more(self, tp: TopicPartition) -> bool:
        """Whether the broker is known to hold records of ``tp`` the consumer has not handed
        out yet (its last fetch's stable end / high watermark is ahead of its position)."""
        try:
            end = self.consumer.last_stable_offset(tp)
            if end is None or end < 0:
                end = self.consumer.highwater(tp)
            if end is None:
                return True  # not fetched yet: records may well be there
            return end > await self.consumer.position(tp)
        except Exception:  # noqa: BLE001 - not assigned any more, or no position yet
            return False

    async def idle_close(self) -> None:
        """Advance the stream time of the tasks whose input has been quiet for
        ``idle_close_ms`` by the wall time that passed (see :mod:`streams.runtime.idle`), and
        send what their stream-time callbacks (window closing) emitted, as after a batch. Only
        tasks that have seen a record (stream time >= 0): an empty task has no clock to
        advance."""
        running = self.tasks.running
        for task_id, elapsed in self.idle.due(running):
            task = running.get(cast(TaskId, task_id))
            if task is None or task.stream_time < 0 or not task.advance_stream_time(
                    task.stream_time + elapsed):
                continue
            self.metrics.count_task_events(task.dead_letters, task.dropped, task.late)
            await self.tasks.send(task)


__all__ = ["IDLE_CHECK_S", "MARKER_INTERVAL_S", "Processing"]
