"""The worker: one process running one topology, sharing partitions through the consumer group.

Why not faust's consumer loop: faust commits the offsets of acked events on its own schedule,
independently of table state (and writes its RocksDB offset key outside the data's WriteBatch),
so a crash between the two double-applies or loses input. The framework therefore owns the
consume -> process -> commit cycle here, directly on aiokafka (which faust itself uses), while
values are faust Records/JSON through the DSL's serdes.

The commit protocol is :mod:`streams.runtime.checkpoint`; what to do with local state when a
task is opened is :func:`streams.state.recovery.decide_open`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from ..config import Settings
from ..dsl.topology import Topology
from ..kafka.admin import Replication
from ..kafka.clients import KafkaConnection, client_kwargs
from ..kafka.outage import BrokerOutageLog
from ..metrics import Metrics
from ..state.store import StateCorrupted, StateStorageError
from . import checkpoint
from .assignor import ShapeCheckingAssignor, TopologyMismatch
from .compile import subtopologies
from .global_tables import GlobalTableConsumer, GlobalTables
from .idle import IdleTracker
from .lag import end_offset, fetch_position, partition_lag
from .lifecycle import BrokerWatch
from .ordering import PAUSE_BUFFERED, PartitionGroup
from .transport import KafkaTransport, stop_producer
from .task_manager import TaskManager
from .transactions import EXACTLY_ONCE, FAIL_COMMIT_ENV, TaskTransactions, classify
from .topics import RepartitionPurger, TopicLayoutError, prepare_topics
from .tuning import tuning

log = logging.getLogger(__name__)

# A task sends a progress marker after a batch that advanced its stream time at most this often
# (and at every commit): downstream watermarks lag its progress by at most about this much.
MARKER_INTERVAL_S = 0.1
IDLE_CHECK_S = 0.25


class WorkerFailed(RuntimeError):
    """The worker stopped because of an error it cannot recover from."""


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.worker.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.worker.on_assigned(list(assigned))


class Worker:
    """Consume -> process -> commit for one topology; tasks live in a :class:`TaskManager`."""

    def __init__(self, topology: Topology, settings: Settings) -> None:
        self.topology = topology
        self.settings = settings
        self.subs = subtopologies(topology)
        self.topics = list(dict.fromkeys(t for s in self.subs for t in s.topics))
        self.state_root = Path(settings.state_dir) / topology.name
        self.metrics = Metrics(topology.name)
        self.metrics.initialise(topology)
        self.tuning = tuning(settings)
        self.metrics_port: int | None = None
        # The one switch for exactly-once: Settings.processing_guarantee (config/<topology>.toml).
        self.exactly_once = settings.processing_guarantee == EXACTLY_ONCE
        self._lock = asyncio.Lock()  # the main loop vs. the rebalance listener
        self._stopping = asyncio.Event()
        self._fatal: BaseException | None = None
        self.kafka = KafkaConnection.from_settings(settings)
        self.purger = RepartitionPurger(topology, self.kafka)
        self._since_commit = 0
        self._last_commit_records = 0
        self._last_commit = time.monotonic()
        self.idle = IdleTracker(settings.idle_close_ms)
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.transport: KafkaTransport | None = None
        self.tasks: TaskManager | None = None
        self.global_tables = (GlobalTables(topology, self.state_root)
                              if topology.global_tables else None)
        self.global_consumer: GlobalTableConsumer | None = None
        self.partitions: dict[str, int] = {}  # of every topic the topology touches
        # progress markers (streams.runtime.watermarks): wall time of each task's last one, of
        # its last input, and of the last idle check
        self._marked_at: dict[Any, float] = {}
        self._input_at: dict[Any, float] = {}
        self._idle_check = 0.0
        self._wanted: set[TopicPartition] = set()  # empty inputs such a task waits for
        self._wanted_turn = False
        self._paused_full: set[TopicPartition] = set()  # paused: their group buffer is full
        self.outage_log = BrokerOutageLog()
        self._assignment_pending = False  # assigned tasks not all running yet (see _loop)

    # -- lifecycle --------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()

    def fail(self, exc: BaseException) -> None:
        log.error("fatal: %s: %s", type(exc).__name__, exc)
        self._fatal = exc
        self._stopping.set()

    def _refused(self, why: str) -> None:
        """The group runs another shape of this topology (see streams.runtime.assignor)."""
        self.fail(TopologyMismatch(why))

    async def run(self) -> None:
        s, name = self.settings, self.topology.name
        try:
            self.partitions = await prepare_topics(self.topology, self.kafka, s.partitions,
                                                   Replication.from_settings(s))
        except TopicLayoutError as exc:
            raise WorkerFailed(str(exc)) from None
        if s.metrics_port >= 0:
            self.metrics_port = self.metrics.serve(s.metrics_host, s.metrics_port)
            log.info("metrics on http://%s:%d/metrics", s.metrics_host, self.metrics_port)
        tune = self.tuning
        self.producer = self._new_producer()
        self.consumer = AIOKafkaConsumer(
            **client_kwargs(self.kafka), group_id=name, enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level="read_committed",
            partition_assignment_strategy=(ShapeCheckingAssignor(self.topology, self._refused),),
            max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_wait_ms=tune.fetch_max_wait_ms,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(100, s.session_timeout_ms // 5), max_poll_interval_ms=300000,
            request_timeout_ms=max(s.request_timeout_ms, s.session_timeout_ms + 5000))
        await self.producer.start()
        await self.consumer.start()
        m = self.metrics
        produced, remaining = m.produced, m.recovery_remaining
        self.transport = KafkaTransport(
            self.producer, self.consumer,
            on_produced=lambda topic, n: produced.labels(name, topic).inc(n),
            on_latency=m.e2e.labels(name).observe,
            latency_topics=self.topology.output_topics(),
            on_commit_failed=m.commit_failures.labels(name).inc,
            producer_factory=self._new_producer)
        if self.global_tables is not None:
            keys = m.table_keys
            self.global_consumer = GlobalTableConsumer(
                self.global_tables, self.kafka,
                on_remaining=lambda table, n: remaining.labels(name, table).set(n),
                on_keys=lambda table, n: keys.labels(name, table).set(n),
                stopping=self._stopping.is_set)
        txns = None
        if self.exactly_once:
            results = self.metrics.transactions
            txns = TaskTransactions(
                name, name, self.kafka, transaction_timeout_ms=s.transaction_timeout_ms,
                request_timeout_ms=s.request_timeout_ms,
                commit_timeout_s=max(10.0, 3 * s.commit_interval_ms / 1000),
                on_produced=lambda topic, n: produced.labels(name, topic).inc(n),
                on_result=lambda result: results.labels(name, result).inc(),
                fail_commit=os.environ.get(FAIL_COMMIT_ENV) or None)
        self.tasks = TaskManager(
            self.topology, self.subs, self.state_root, self.kafka, self.consumer, self.transport,
            on_remaining=lambda table, n: remaining.labels(name, table).set(n),
            global_tables=self.global_tables, txns=txns,
            task_options={"partitions": self.partitions,
                          "max_task_idle_ms": s.max_task_idle_ms,
                          "max_future_ms": s.max_future_ms,
                          "repartition_idle_ms": s.repartition_idle_ms})
        # Broker lost / back: one line each, whether the watch or aiokafka's errors notice first.
        watch = asyncio.ensure_future(BrokerWatch(self.consumer, s.broker, self.outage_log).run())
        clean = False
        try:
            if self.global_consumer is not None:
                # Loaded to the end before the worker joins its group: no stream record is
                # ever joined against a partly loaded global table.
                await self.global_consumer.load()
            if not self._stopping.is_set():  # (a stop request may end the load early)
                self.consumer.subscribe(topics=self.topics, listener=_Rebalance(self))
                log.info("worker for %s started (group %s, broker %s, %s, processing mode %s)",
                         name, name, s.broker, s.processing_guarantee, s.processing_mode)
                await self._loop()
            clean = self._fatal is None
        except Exception as exc:  # noqa: BLE001 - reported below as the worker's failure
            self.fail(exc)
        finally:
            watch.cancel()
            # After an error (a failed send, a task that could not open) nothing may be
            # committed: offsets would move past outputs that never reached Kafka.
            await self._shutdown(commit=clean)
        if self._fatal is not None:
            raise WorkerFailed(str(self._fatal)) from self._fatal

    async def _loop(self) -> None:
        assert self.consumer is not None and self.tasks is not None
        tune, tasks = self.tuning, self.tasks
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                if self.global_consumer is not None:
                    await self._poll_global_tables()
                if tasks.busy:
                    async with self._lock:
                        await tasks.open_pending()
                        await tasks.restore_step()
                if self._assignment_pending and not tasks.busy:
                    # One line per assignment once every task of it runs (opened, restored):
                    # until then the tables of a restoring task are behind the group's offsets.
                    self._assignment_pending = False
                    log.info("all %d tasks running", len(tasks.running))
                # A task waiting for records the broker holds for one of its inputs asks for
                # that partition first (every other poll, so other tasks are not held up):
                # aiokafka hands out its fetched partitions in turn, max_records at a time, and
                # the other inputs' backlog would come first.
                wanted, self._wanted = list(self._wanted), set()
                self._wanted_turn = not self._wanted_turn and bool(wanted)
                fetch = asyncio.ensure_future(self.consumer.getmany(
                    *(wanted if self._wanted_turn else ()),
                    timeout_ms=0 if tasks.restoring else tune.poll_timeout_ms,
                    max_records=tune.max_batch_records))
                await asyncio.wait([fetch, stop_wait], return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    break
                batch = fetch.result()
                if batch or any(t.buffered() for t in tasks.running.values()):
                    async with self._lock:
                        await self._process(batch)
                async with self._lock:
                    await self._idle_markers()
                if self.idle.enabled:
                    async with self._lock:
                        await self._idle_close()
                if (self._since_commit >= tune.commit_every_records or
                        time.monotonic() - self._last_commit >= tune.commit_interval_ms / 1000):
                    async with self._lock:
                        await self._commit()
        finally:
            stop_wait.cancel()

    def _new_producer(self) -> AIOKafkaProducer:
        """The at-least-once producer (a new one replaces it after a failed commit)."""
        return AIOKafkaProducer(
            **client_kwargs(self.kafka), acks="all", enable_idempotence=True,
            linger_ms=self.tuning.linger_ms, max_batch_size=512 * 1024,
            request_timeout_ms=self.settings.request_timeout_ms)

    async def _shutdown(self, commit: bool) -> None:
        name = self.topology.name
        if commit:
            log.info("worker for %s stopping: final commit", name)
            try:
                async with self._lock:
                    await self._commit()
                log.info("final commit done: %d tasks, %d input records since the previous "
                         "commit", len(self.tasks.running) if self.tasks else 0,
                         self._last_commit_records)
            except (StateCorrupted, StateStorageError) as exc:  # one line: the path says it
                log.error("final commit failed: %s; uncommitted input will be processed again",
                          exc)
            except Exception:  # noqa: BLE001 - still close the stores below
                log.exception("final commit failed; uncommitted input will be processed again")
        else:
            log.warning("worker for %s stopping after an error: no final commit; uncommitted "
                        "input will be processed again", name)
        if self.tasks is not None:
            await self.tasks.stop()
        if self.global_consumer is not None:
            await self.global_consumer.stop()
        if self.consumer is not None:
            await self.consumer.stop()
        producer = self.transport.producer if self.transport is not None else self.producer
        if producer is not None:  # (the transport's: replaced after a failed commit)
            await stop_producer(producer, timeout_s=30.0)  # (not forever with the broker away)
        await self.purger.close()
        log.info("worker for %s stopped", name)

    # -- processing -------------------------------------------------------------------------------
    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Run a poll's records through their tasks. A task with one input partition processes
        its records as they came (the direct batch path); a task with several buffers them
        and runs them in timestamp order (its :class:`~streams.runtime.ordering.PartitionGroup`,
        :meth:`Task.drain`)."""
        assert self.transport is not None and self.tasks is not None
        started = time.monotonic()
        m, name = self.metrics, self.topology.name
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
                self._wanted.update(TopicPartition(t, task.partition) for t in group.topics
                                    if more[t] and not task.buffered(t))
            self._pause_full(task, group)
            if done:
                count += await self._processed(task, done)
        if not count:
            return
        self._since_commit += count
        m.processing.labels(name).observe(time.monotonic() - started)
        self._update_lag(batch.keys())

    async def _send(self, task: Any) -> None:
        """Hand a task's outputs to Kafka: exactly-once, inside the task's transaction."""
        assert self.transport is not None and self.tasks is not None
        if self.exactly_once:
            assert self.tasks.txns is not None
            await self.tasks.txns.send(task)
        else:
            await self.transport.send(task.take_outputs())

    async def _poll_global_tables(self) -> None:
        """Apply the global-table records that arrived (between batches: a batch sees the
        global tables as they were when it started)."""
        assert self.global_consumer is not None and self.global_tables is not None
        await self.global_consumer.poll()
        if self.global_tables.dropped:
            self.metrics.count_task_events({}, self.global_tables.dropped, {})

    async def _run(self, task: Any, topic: str, records: list[Any]) -> int:
        """One batch of one input partition through ``task``; its outputs go to the producer."""
        return await self._processed(task, {topic: task.process(topic, records)})

    async def _processed(self, task: Any, done: dict[str, int]) -> int:
        """Metrics for the records ``task`` processed (per topic); its outputs to the producer."""
        assert self.transport is not None
        total = sum(done.values())
        if total:
            m, name = self.metrics, self.topology.name
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
            await self._send(task)
        return total

    def _pause_full(self, task: Any, group: PartitionGroup) -> None:
        """Stop fetching a partition while its group holds ``PAUSE_BUFFERED`` records of it (so
        the consumer fetches the input the task waits for); resume once it has drained."""
        assert self.consumer is not None
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

    async def _idle_markers(self) -> None:
        """Tell the tasks behind this worker's repartition topics which upstream tasks are idle:
        caught up on every input partition, nothing buffered, and no input for
        ``repartition_idle_ms`` (:mod:`streams.runtime.watermarks`). Checked a few times a
        second; a task that sent its idle marker sends the next one after new input."""
        assert self.tasks is not None
        now = time.monotonic()
        if now - self._idle_check < IDLE_CHECK_S:
            return
        self._idle_check = now
        quiet = self.settings.repartition_idle_ms / 1000
        for task in list(self.tasks.running.values()):
            if task.refresh_watermark():  # a wake hold ended: windows may close
                self.metrics.count_task_events(task.dead_letters, task.dropped, task.late)
                await self._send(task)
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
            await self._send(task)

    def _fetched_before_others(self, partition: int, topics: list[str]) -> list[str]:
        """The inputs whose last fetch response is older than another input's of the same task.

        Their high watermark may be stale next to the other input's records: the consumer
        leaves a partition with undelivered records out of its fetch requests, so during a
        catch-up (after a restart or a rebalance) the inputs are fetched at different moments,
        and records produced to one after its last fetch are unknown to ``_has_more`` while
        the other's fetched later are already here. Going on without them let one input run
        hours of event time ahead and made the other's records late (a join lost its pairs).
        Such an input counts as having more until a fetch at least as recent answers for it."""
        assert self.consumer is not None
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
        assert self.consumer is not None
        try:
            end = self.consumer.last_stable_offset(tp)
            if end is None or end < 0:
                end = self.consumer.highwater(tp)
            if end is None:
                return True  # not fetched yet: records may well be there
            return end > await self.consumer.position(tp)
        except Exception:  # noqa: BLE001 - not assigned any more, or no position yet
            return False

    async def _idle_close(self) -> None:
        """Advance the stream time of the tasks whose input has been quiet for
        ``idle_close_ms`` by the wall time that passed (see :mod:`streams.runtime.idle`), and send
        what their stream-time callbacks (window closing) emitted, as after a batch. Only tasks
        that have seen a record (stream time >= 0): an empty task has no clock to advance."""
        assert self.transport is not None and self.tasks is not None
        running = self.tasks.running
        for task_id, elapsed in self.idle.due(running):
            task = running.get(task_id)
            if task is None or task.stream_time < 0 or not task.advance_stream_time(
                    task.stream_time + elapsed):
                continue
            self.metrics.count_task_events(task.dead_letters, task.dropped, task.late)
            await self._send(task)

    # -- consumer lag (see streams.runtime.lag) -------------------------------------------------
    def _update_lag(self, tps: Iterable[TopicPartition] | None = None) -> None:
        """``streams_consumer_lag`` of ``tps``; ``None``: of every assigned partition (at each
        commit, so partitions without new input are current too), and the series of partitions
        this worker no longer owns are removed."""
        assert self.consumer is not None and self.tasks is not None
        complete = tps is None
        lags: dict[tuple[str, int], int] = {}
        for tp in (self.consumer.assignment() if tps is None else tps):
            task = self.tasks.task_for(tp)
            end = end_offset(self.consumer, tp)
            processed = task.offsets.get((tp.topic, tp.partition)) if task else None
            if task is None or end is None or processed is None:
                continue  # not running yet (opening, restoring) or never fetched
            lags[(tp.topic, tp.partition)] = partition_lag(
                end, processed, fetch_position(self.consumer, tp),
                self._held_unprocessed(task, tp.topic))
        self.metrics.set_lag(lags, complete=complete)

    def _held_unprocessed(self, task: Any, topic: str) -> int:
        """Records of ``topic`` fetched for ``task`` and held unprocessed in its timestamp-order
        buffer (kept by the task itself, or by the worker for it)."""
        buffered = getattr(task, "buffered", None)
        if buffered is not None:
            return int(buffered(topic))
        entry = getattr(self, "_groups", {}).get(task.id)
        return entry[1].buffered(topic) if entry is not None and entry[0] is task else 0

    # -- commit -----------------------------------------------------------------------------------
    async def _commit(self) -> None:
        assert self.transport is not None and self.tasks is not None
        self._update_lag()  # consumer lag of every assigned partition, with input or not
        started = time.monotonic()
        # Every commit carries the tasks' latest progress downstream (inside the transaction).
        for task in list(self.tasks.running.values()):
            if task.progress_due():
                task.send_progress()
                self._marked_at[task.id] = started
                await self._send(task)
        try:
            if self.exactly_once:
                committed = await self.tasks.commit_transactions()
            else:
                committed = await checkpoint.commit(self.tasks.running.values(), self.transport)
        except Exception as exc:
            self.metrics.commit_failures.labels(self.topology.name).inc()
            # Outage handling, at-least-once: a commit that failed for a reason retrying fixes
            # (the broker is away, a leader not elected yet) is replayed, never fatal.
            # Exactly-once commits handle that per task (commit_transactions) and raise only
            # what is fatal.
            if self.exactly_once or classify(exc) != "retriable":
                raise
            await self._replay_from_last_commit(exc)
            return
        if committed:
            self.outage_log.recovered()
            await self.purger.committed(committed)
        self._last_commit_records, self._since_commit = self._since_commit, 0
        self._last_commit = time.monotonic()
        name = self.topology.name
        self.metrics.commits.labels(name).inc()
        self.metrics.commit_seconds.labels(name).observe(time.monotonic() - started)
        keys: dict[str, int] = {}
        for task in self.tasks.running.values():
            for table, n in task.approximate_keys().items():
                keys[table] = keys.get(table, 0) + n
        if self.global_tables is not None:
            keys.update(self.global_tables.approximate_keys())
        for table, n in keys.items():
            self.metrics.table_keys.labels(name, table).set(n)

    async def _replay_from_last_commit(self, exc: BaseException) -> None:
        """At-least-once: nothing of the failed commit moved past what reached Kafka (its
        flush or offset commit failed). Every running task forgets its uncommitted changes and
        is reopened from its last commit by the main loop, with backoff until the broker
        answers; its input since then is processed again (outputs may repeat, state never
        double-counts). The producer is replaced before the next send."""
        assert self.tasks is not None and self.transport is not None
        running = list(self.tasks.running)
        log.warning("commit failed (%s): %d tasks resume from their last commit; their input "
                    "since then is processed again",
                    type(exc).__name__ + (f": {str(exc)[:200]}" if str(exc) else ""),
                    len(running))
        self.transport.discard()
        for task_id in running:
            await self.tasks.drop(task_id, reopen=True)
        self._since_commit, self._last_commit = 0, time.monotonic()

    # -- rebalancing (called by aiokafka's coordinator; only bookkeeping and the final commit) ----
    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        assert self.tasks is not None
        if revoked:  # (the first join reports an empty revocation)
            log.info("revoked %d partitions: committing and closing %d tasks", len(revoked),
                     len(self.tasks.running) + len(self.tasks.restoring))
        async with self._lock:
            self._wanted.clear()
            self._paused_full.clear()  # the task manager resumes a task's partitions on start
            try:
                if self._fatal is None:
                    await self.tasks.revoked()
                else:
                    self.tasks.close()
            except Exception as exc:  # noqa: BLE001
                if not self.exactly_once and classify(exc) == "retriable":
                    # Outage handling: the broker was away; the tasks were closed without
                    # their final commit, whoever owns them next resumes from their last one.
                    log.info("revoked tasks closed without a final commit (%s: %s)",
                             type(exc).__name__, str(exc)[:200])
                    if self.transport is not None:
                        self.transport.discard()
                    return
                # A failed send: nothing may be committed any more (see run()).
                self.fail(exc)

    async def on_assigned(self, assigned: list[TopicPartition]) -> None:
        assert self.tasks is not None
        async with self._lock:
            self.metrics.rebalances.labels(self.topology.name).inc()
            self.tasks.assigned(assigned)
            self._assignment_pending = True


def run_worker(topology: Topology, settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; then finish the batch, commit and return 0."""

    async def main() -> None:
        worker = Worker(topology, settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        worker.outage_log.install()
        try:
            await worker.run()
        finally:
            worker.outage_log.uninstall()

    try:
        asyncio.run(main())
    except WorkerFailed as exc:
        log.error("worker failed: %s", exc)
        return 1
    return 0


__all__ = ["Worker", "WorkerFailed", "run_worker"]
