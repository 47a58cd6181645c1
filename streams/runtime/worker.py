"""The worker: one process running one topology, sharing partitions through the consumer group.

Why not faust's consumer loop: faust commits the offsets of acked events on its own schedule,
independently of table state (and writes its RocksDB offset key outside the data's WriteBatch),
so a crash between the two double-applies or loses input. The framework therefore owns the
consume -> process -> commit cycle here, directly on aiokafka (which faust itself uses).

Elsewhere: the Kafka clients and the committer, chosen once (:mod:`.worker_clients`,
:mod:`.committer`); the tasks, their opening, restoring and commit failures
(:mod:`.task_manager`); running polled records through them (:mod:`.processing`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from aiokafka import ConsumerRebalanceListener, TopicPartition

from ..config import Settings
from ..dsl.topology import Topology
from ..kafka.admin import Replication
from ..kafka.clients import KafkaConnection
from ..kafka.outage import BrokerOutageLog
from ..metrics import Metrics
from ..serving.routing import Routes
from ..serving.server import QueryServer
from ..serving.worker_http import advertised_endpoint, query_server
from ..state.store import StateCorrupted, StateStorageError
from .assignor import EndpointMap, TopologyMismatch
from .compile import subtopologies
from .discovery import Registration, announce
from .global_tables import GlobalTableConsumer, GlobalTables
from .idle import IdleTracker
from .catchup import CatchUpProgress
from .lag import report_lag
from .lifecycle import BrokerWatch
from .processing import Processing
from .standby import StandbyTasks
from .task_manager import TaskManager
from .topics import RepartitionPurger, TopicLayoutError, prepare_topics
from .transport import KafkaTransport, stop_producer
from .tuning import tuning
from .worker_clients import (committer_for, global_table_consumer, group_consumer,
                             producer_factory, shared_transport)

log = logging.getLogger(__name__)


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
        self.topology, self.settings = topology, settings
        self.subs = subtopologies(topology)
        self.topics = list(dict.fromkeys(t for s in self.subs for t in s.topics))
        self.state_root = Path(settings.state_dir) / topology.name
        self.metrics = Metrics(topology.name)
        self.metrics.initialise(topology)
        self.tuning = tuning(settings)
        self.metrics_port: int | None = None
        self.discovery: Registration | None = None
        self._lock = asyncio.Lock()  # the main loop vs. the rebalance listener
        self._stopping = asyncio.Event()
        self._fatal: BaseException | None = None
        self.kafka = KafkaConnection.from_settings(settings)
        self.purger = RepartitionPurger(topology, self.kafka)
        self._last_commit_records, self._last_commit = 0, time.monotonic()
        self._processed = 0  # input records processed since the start (committed ones)
        self.catch_up = CatchUpProgress()  # a progress line while a backlog is worked off
        self.transport: KafkaTransport | None = None
        self.tasks: TaskManager | None = None
        self.processing: Processing | None = None
        self.global_tables = (GlobalTables(topology, self.state_root)
                              if topology.global_tables else None)
        self.global_consumer: GlobalTableConsumer | None = None
        self.outage_log = BrokerOutageLog()
        self._assignment_pending = False  # assigned tasks not all running yet (see _loop)
        # the HTTP server (/metrics, /health, tables: streams.serving) and its state
        self.http: QueryServer | None = None
        self.endpoint: str | None = None  # where others reach it ("host:port")
        self.joined = False        # got a first assignment
        self.rebalancing = False   # partitions revoked, the next assignment not there yet
        # standby replicas (streams.runtime.standby); the assignor hands over this worker's
        # standby tasks just before the rebalance listener's on_partitions_assigned
        self.standbys = StandbyTasks(topology, self.subs, self.state_root, self.kafka,
                                     group=topology.name)
        self._standby_assigned: list[str] = []
        self._standby_behind = False  # the last standby step had more to apply

    # -- lifecycle --------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def fail(self, exc: BaseException) -> None:
        log.error("fatal: %s: %s", type(exc).__name__, exc)
        self._fatal = exc
        self._stopping.set()

    async def run(self) -> None:
        s, name, m = self.settings, self.topology.name, self.metrics
        try:
            partitions = await prepare_topics(self.topology, self.kafka, s.partitions,
                                              Replication.from_settings(s))
        except TopicLayoutError as exc:
            raise WorkerFailed(str(exc)) from None
        if s.metrics_port >= 0:
            self.http = query_server(self, partitions)
            self.metrics_port = await self.http.start(s.metrics_host, s.metrics_port)
            self.endpoint = self.http.endpoint = advertised_endpoint(s, self.metrics_port)
            log.info("metrics on http://%s:%d/metrics", s.metrics_host, self.metrics_port)
            self.discovery = announce(s, name, s.metrics_host, self.metrics_port)
        m.describe_worker(self.topology.version, s.processing_guarantee, s.processing_mode,
                          self.endpoint)
        consumer = group_consumer(self.topology, s, self.kafka, self.tuning,
                                  lambda why: self.fail(TopologyMismatch(why)),
                                  endpoint=self.endpoint, on_endpoints=self._on_endpoints,
                                  local_tasks=self._local_tasks, on_standby=self._on_standby)
        self.transport = transport = shared_transport(
            self.topology, m, consumer, producer_factory(s, self.kafka, self.tuning))
        try:
            await transport.producer.start()
            await consumer.start()
        except BaseException:
            await self._stop_http()
            raise
        remaining = m.recovery_remaining
        if self.global_tables is not None:
            self.global_consumer = global_table_consumer(self.global_tables, self.kafka, m,
                                                         self._stopping.is_set)
        self.tasks = TaskManager(
            self.topology, self.subs, self.state_root, self.kafka, consumer, transport,
            committer_for(self.topology, s, self.kafka, m, transport),
            on_remaining=lambda table, n: remaining.labels(name, table).set(n),
            global_tables=self.global_tables,
            task_options={"partitions": partitions, "max_task_idle_ms": s.max_task_idle_ms,
                          "max_future_ms": s.max_future_ms,
                          "repartition_idle_ms": s.repartition_idle_ms})
        self.processing = Processing(m, consumer, self.tasks, IdleTracker(s.idle_close_ms),
                                     s.repartition_idle_ms)
        # Broker lost / back: one line each, whether the watch or aiokafka's errors notice first.
        watch = asyncio.ensure_future(BrokerWatch(consumer, s.broker, self.outage_log).run())
        clean = False
        try:
            if self.global_consumer is not None:
                # Loaded to the end before the worker joins its group: no stream record is
                # ever joined against a partly loaded global table.
                await self.global_consumer.load()
            if not self._stopping.is_set():  # (a stop request may end the load early)
                consumer.subscribe(topics=self.topics, listener=_Rebalance(self))
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
            # Kept after a failure: Prometheus then reports this worker down (StreamsWorkerDown).
            if self.discovery is not None and self._fatal is None:
                self.discovery.remove()
        if self._fatal is not None:
            raise WorkerFailed(str(self._fatal)) from self._fatal

    async def _loop(self) -> None:
        assert self.processing is not None and self.tasks is not None
        tune, tasks, work = self.tuning, self.tasks, self.processing
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                if self.global_consumer is not None:
                    await self._poll_global_tables()
                if tasks.busy:
                    async with self._lock:
                        await tasks.open_pending()
                        await tasks.restore_step()
                if self.standbys.wanted and not tasks.busy:
                    async with self._lock:
                        self._standby_behind = await self.standbys.step() > 0
                if self._assignment_pending and not tasks.busy:
                    # One line per assignment once all its tasks run (opened and restored).
                    self._assignment_pending = False
                    log.info("all %d tasks running", len(tasks.running))
                fetch = asyncio.ensure_future(work.consumer.getmany(
                    *work.fetch_first(), max_records=tune.max_batch_records,
                    timeout_ms=0 if tasks.restoring or self._standby_behind
                    else tune.poll_timeout_ms))
                await asyncio.wait([fetch, stop_wait], return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    break
                batch = fetch.result()
                async with self._lock:
                    if work.has_work(batch):
                        await work.process(batch)
                    await work.idle_markers()
                    if work.idle.enabled:
                        await work.idle_close()
                    if (work.since_commit >= tune.commit_every_records or time.monotonic()
                            - self._last_commit >= tune.commit_interval_ms / 1000):
                        await self._commit()
        finally:
            stop_wait.cancel()

    async def _poll_global_tables(self) -> None:
        """Apply the global-table records that arrived (between batches, not during one)."""
        assert self.global_consumer is not None and self.global_tables is not None
        await self.global_consumer.poll()
        if self.global_tables.dropped:
            self.metrics.count_task_events({}, self.global_tables.dropped, {})

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
        await self.standbys.stop()
        if self.global_consumer is not None:
            await self.global_consumer.stop()
        if self.processing is not None:
            await self.processing.consumer.stop()
        if self.transport is not None:  # (not forever with the broker away)
            await stop_producer(self.transport.producer, timeout_s=30.0)
        await self.purger.close()
        await self._stop_http()
        log.info("worker for %s stopped", name)

    async def _stop_http(self) -> None:
        if self.http is not None:
            await self.http.stop()
            self.http = None

    def _on_endpoints(self, endpoints: EndpointMap) -> None:
        """The group's endpoint map of the new assignment (from the assignor)."""
        if self.http is not None:
            self.http.set_routes(Routes(endpoints))

    # -- commit -----------------------------------------------------------------------------------
    async def _commit(self) -> None:
        assert self.processing is not None and self.tasks is not None
        m, name, work = self.metrics, self.topology.name, self.processing
        # every assigned partition, with input or not
        lag = report_lag(m, work.consumer, self.tasks)
        self.catch_up.observe(lag, self._processed + work.since_commit, time.monotonic())
        started = time.monotonic()
        await work.progress_markers()
        try:
            result = await self.tasks.commit()  # (a failed task resumes from its last commit)
        except Exception:
            m.commit_failures.labels(name).inc()
            raise
        self._processed += work.since_commit
        self._last_commit_records, work.since_commit = work.since_commit, 0
        self._last_commit = time.monotonic()
        if result.failed:
            m.commit_failures.labels(name).inc()
        if result.committed:
            self.outage_log.recovered()
            await self.purger.committed(result.committed)
        if result.committed or not result.failed:
            m.commits.labels(name).inc()
            m.commit_seconds.labels(name).observe(time.monotonic() - started)
        keys = self.tasks.approximate_keys()
        if self.global_tables is not None:
            keys.update(self.global_tables.approximate_keys())
        for table, n in keys.items():
            m.table_keys.labels(name, table).set(n)

    # -- rebalancing (called by aiokafka's coordinator; only bookkeeping and the final commit) ----
    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        assert self.tasks is not None and self.processing is not None
        self.rebalancing = True
        if revoked:  # (the first join reports an empty revocation)
            log.info("revoked %d partitions: committing and closing %d tasks", len(revoked),
                     len(self.tasks.running) + len(self.tasks.restoring))
        async with self._lock:
            self.processing.revoked()
            try:
                if self._fatal is None:  # (a failed final commit: the next owner replays)
                    await self.tasks.revoked()
                else:
                    self.tasks.close()
            except Exception as exc:  # noqa: BLE001
                # A failed send: nothing may be committed any more (see run()).
                self.fail(exc)

    async def on_assigned(self, assigned: list[TopicPartition]) -> None:
        assert self.tasks is not None
        async with self._lock:
            self.metrics.rebalances.labels(self.topology.name).inc()
            self.joined, self.rebalancing = True, False
            # Standbys that become active here stop tailing before the task opens their state.
            self.standbys.assign(self._standby_assigned, self.tasks.task_ids(assigned))
            self.tasks.assigned(assigned)
            self._assignment_pending = True

    # -- standby replicas (called by the assignor, inside the group protocol: no I/O) ------------
    def _local_tasks(self) -> dict[str, int]:
        """Task id -> changelog offset sum of the state this worker holds (for the leader)."""
        sums = self.tasks.offset_sums() if self.tasks is not None else {}
        sums.update(self.standbys.offset_sums())
        return sums

    def _on_standby(self, standby: list[str]) -> None:
        self._standby_assigned = standby


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
