"""The worker: one process running one topology, sharing partitions through the consumer group.

Why not faust's consumer loop: faust commits the offsets of acked events on its own schedule,
independently of table state (and writes its RocksDB offset key outside the data's WriteBatch),
so a crash between the two double-applies or loses input. The framework therefore owns the
consume -> process -> commit cycle here, directly on aiokafka (which faust itself uses), while
values are faust Records/JSON through the DSL's serdes.

Commit cycle (at-least-once), for all tasks of this worker:
  1. serialize table changes; produce them to the changelogs (with the input offsets in a header);
  2. wait for every produced record (outputs and changelog) to be acknowledged;
  3. write each task's state + input offsets + upstream positions in one RocksDB WriteBatch;
  4. commit the consumer offsets.
A crash before 3 leaves state and offsets as of the previous commit (inputs are replayed, outputs
may repeat). A crash between 3 and 4 leaves local state ahead of the group: on restart the task
resumes from its local offsets, so those inputs are not applied twice.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.partitioner import DefaultPartitioner

from ..config import Settings
from ..dsl.topology import Topology
from ..kafka.admin import TopicSpec, ensure_topics
from ..metrics import Metrics
from ..state.meta import TaskMeta
from ..state.recovery import local_state_behind, restore_task
from ..state.store import TaskStore
from .compile import SubTopology, subtopologies
from .task import Task

log = logging.getLogger(__name__)


# Repartition records carry event time; with the broker's time retention (7 days) old event
# times would be deleted before the downstream task reads them. As in Kafka Streams they never
# expire by time; the worker deletes them once consumed (see Worker._purge_repartition).
REPARTITION_CONFIG = {"retention.ms": "-1", "cleanup.policy": "delete"}
PURGE_INTERVAL_S = 30.0


def topic_specs(topology: Topology, partitions: int) -> list[TopicSpec]:
    """Every topic the topology touches, with the partitions and configs it needs."""
    specs = [TopicSpec(t, partitions) for t in topology.input_topics()]
    specs += [TopicSpec(t, partitions) for t in topology.output_topics()]
    specs += [TopicSpec(t, partitions, REPARTITION_CONFIG) for t in topology.repartition_topics()]
    specs += [TopicSpec(t, partitions, {"cleanup.policy": "compact"})
              for t in topology.changelog_topics()]
    specs.append(TopicSpec(topology.dlq_topic, partitions))
    unique: dict[str, TopicSpec] = {}
    for s in specs:
        unique.setdefault(s.name, s)
    return list(unique.values())


class WorkerFailed(RuntimeError):
    """The worker stopped because of an error it cannot recover from."""


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.worker.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        try:
            await self.worker.on_assigned(list(assigned))
        except Exception as exc:  # noqa: BLE001
            # aiokafka would log this and carry on without the tasks; a worker that cannot
            # open its state must stop instead (with a non-zero exit) so nothing is skipped.
            self.worker.fail(exc)


class Worker:
    def __init__(self, topology: Topology, settings: Settings) -> None:
        self.topology = topology
        self.settings = settings
        self.subs = subtopologies(topology)
        self.sub_of_topic: dict[str, SubTopology] = {t: s for s in self.subs for t in s.topics}
        self.state_root = Path(settings.state_dir) / topology.name
        self.tasks: dict[str, Task] = {}
        self.metrics = Metrics(topology.name)
        self.metrics_port: int | None = None
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._fatal: BaseException | None = None
        self._inflight: list[asyncio.Future[Any]] = []
        self._partitions: dict[str, list[int]] = {}
        self._partitioner = DefaultPartitioner()
        self._admin: AIOKafkaAdminClient | None = None
        self._last_purge = time.monotonic()
        self._since_commit = 0
        self._last_commit = time.monotonic()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()

    def fail(self, exc: BaseException) -> None:
        log.error("fatal: %s: %s", type(exc).__name__, exc)
        self._fatal = exc
        self._stopping.set()

    async def run(self) -> None:
        s = self.settings
        await ensure_topics(s.broker, topic_specs(self.topology, s.partitions))
        await self._check_copartitioning()
        if s.metrics_port >= 0:
            self.metrics_port = self.metrics.serve(s.metrics_host, s.metrics_port)
            log.info("metrics on http://%s:%d/metrics", s.metrics_host, self.metrics_port)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=s.broker, acks="all", enable_idempotence=True, linger_ms=5,
            max_batch_size=512 * 1024, request_timeout_ms=30000)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.broker, group_id=self.topology.name, enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level="read_committed",
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_wait_ms=100,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(100, s.session_timeout_ms // 5), max_poll_interval_ms=300000)
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe(topics=[t for s_ in self.subs for t in s_.topics],
                                listener=_Rebalance(self))
        log.info("worker for %s started (group %s, broker %s)", self.topology.name,
                 self.topology.name, s.broker)
        clean = False
        try:
            await self._loop()
            clean = self._fatal is None
        finally:
            # After an error (a failed send, a task that could not open) nothing may be
            # committed: offsets would move past outputs that never reached Kafka.
            await self._shutdown(commit=clean)
        if self._fatal is not None:
            raise WorkerFailed(str(self._fatal)) from self._fatal

    async def _check_copartitioning(self) -> None:
        """Topics read by one sub-topology must have equal partition counts: task p joins
        partition p of each (Kafka Streams refuses to start otherwise, and so do we)."""
        from ..kafka.admin import topic_partitions

        counts = await topic_partitions(self.settings.broker, list(self.sub_of_topic))
        for sub in self.subs:
            sizes = {t: len(counts.get(t, [])) for t in sub.topics}
            if len(set(sizes.values())) > 1:
                raise WorkerFailed("topics read together must be co-partitioned, but have "
                                   f"different partition counts: {sizes}")

    async def _loop(self) -> None:
        assert self.consumer is not None
        s = self.settings
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                fetch = asyncio.ensure_future(
                    self.consumer.getmany(timeout_ms=200, max_records=s.max_batch_records))
                await asyncio.wait([fetch, stop_wait], return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    break
                batch = fetch.result()
                if batch:
                    async with self._lock:
                        await self._process(batch)
                if (self._since_commit >= s.commit_every_records or
                        time.monotonic() - self._last_commit >= s.commit_interval_ms / 1000):
                    async with self._lock:
                        await self._commit()
        finally:
            stop_wait.cancel()

    async def _shutdown(self, commit: bool) -> None:
        if commit:
            log.info("worker for %s stopping: final commit", self.topology.name)
            try:
                async with self._lock:
                    await self._commit()
            except Exception:  # noqa: BLE001 - still close the stores below
                log.exception("final commit failed; uncommitted input will be processed again")
        else:
            log.warning("worker for %s stopping after an error: no final commit; uncommitted "
                        "input will be processed again", self.topology.name)
        for task in self.tasks.values():
            task.close()
        self.tasks.clear()
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self._admin is not None:
            await self._admin.close()
        log.info("worker for %s stopped", self.topology.name)

    # -- processing -------------------------------------------------------------------------------
    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        started = time.monotonic()
        m, name = self.metrics, self.topology.name
        count = 0
        newest_ts = 0
        for tp, records in batch.items():
            task = self._task_for(tp)
            if task is None:
                continue
            done = task.process(tp.topic, records)
            if not done:
                continue
            count += done
            newest_ts = max(newest_ts, records[-1].timestamp or 0)
            m.consumed.labels(name, tp.topic, str(tp.partition)).inc(done)
            await self._send(task)
        self._since_commit += count
        m.processing.labels(name).observe(time.monotonic() - started)
        if newest_ts > 0:
            m.e2e.labels(name).observe(max(0.0, time.time() - newest_ts / 1000))
        self._update_lag(batch.keys())

    def _task_for(self, tp: TopicPartition) -> Task | None:
        sub = self.sub_of_topic.get(tp.topic)
        return None if sub is None else self.tasks.get(f"{sub.index}_{tp.partition}")

    async def _send(self, task: Task) -> None:
        outputs = task.take_outputs()
        if task.dead_letters:
            for reason, n in task.dead_letters.items():
                self.metrics.dead_letters.labels(self.topology.name, reason).inc(n)
            task.dead_letters.clear()
        await self._send_outputs(outputs)

    async def _send_outputs(self, outputs: list[Any]) -> None:
        """Hand outputs to the producer as whole batches per partition.

        One ``send_batch`` per partition instead of one ``send()`` coroutine per record: the
        partition is computed here with Kafka's default partitioner (murmur2 of the key, as
        the Java client does, so co-partitioning with other producers holds).
        """
        if not outputs:
            return
        assert self.producer is not None
        groups: dict[tuple[str, int], list[Any]] = {}
        partitioner = self._partitioner
        for out in outputs:
            topic, partition = out[0], out[1]
            if partition is None:
                parts = self._partitions.get(topic) or await self._topic_partitions(topic)
                partition = partitioner(out[2], parts, parts)
            group = groups.get((topic, partition))
            if group is None:
                groups[(topic, partition)] = group = []
            group.append(out)
        create, send_batch, inflight = self.producer.create_batch, self.producer.send_batch, self._inflight
        for (topic, partition), group in groups.items():
            batch = create()
            for _t, _p, key, value, ts, headers in group:
                if batch.append(key=key, value=value, timestamp=ts, headers=headers or []) is None:
                    inflight.append(await send_batch(batch, topic, partition=partition))
                    batch = create()
                    batch.append(key=key, value=value, timestamp=ts, headers=headers or [])
            inflight.append(await send_batch(batch, topic, partition=partition))
            self.metrics.produced.labels(self.topology.name, topic).inc(len(group))

    async def _topic_partitions(self, topic: str) -> list[int]:
        assert self.producer is not None
        await self.producer.client._wait_on_metadata(topic)  # noqa: SLF001 - no public API
        parts = sorted(self.producer.client.cluster.partitions_for_topic(topic) or [])
        if not parts:
            raise RuntimeError(f"topic {topic!r} has no partitions")
        self._partitions[topic] = parts
        return parts

    def _update_lag(self, tps: Iterable[TopicPartition]) -> None:
        assert self.consumer is not None
        for tp in tps:
            try:
                high = self.consumer.highwater(tp)
            except (IllegalStateError, KeyError):
                continue
            task = self._task_for(tp)
            pos = task.offsets.get((tp.topic, tp.partition)) if task else None
            if high is not None and pos is not None:
                self.metrics.lag.labels(self.topology.name, tp.topic, str(tp.partition)).set(
                    max(0, high - pos))

    # -- commit -----------------------------------------------------------------------------------
    async def _commit(self) -> None:
        tasks = list(self.tasks.values())
        started = time.monotonic()
        for task in tasks:
            await self._send_outputs(task.prepare_commit())
        if self._inflight and self.producer is not None:
            # One flush instead of awaiting tens of thousands of futures; then surface any
            # failed send (which aborts this commit: nothing below may run).
            await self.producer.flush()
            for fut in self._inflight:
                if not fut.done():
                    await fut
                elif fut.exception() is not None:
                    raise fut.exception()  # type: ignore[misc]
            self._inflight = []
        offsets: dict[TopicPartition, int] = {}
        for task in tasks:
            task.write_commit()
            for (topic, part), off in task.offsets.items():
                offsets[TopicPartition(topic, part)] = off
        if offsets and self.consumer is not None:
            try:
                await self.consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # State already holds these offsets; whoever owns the partition next restores
                # from the changelog up to the group's committed offsets.
                log.warning("consumer offset commit failed (%s); local state is ahead", exc)
            else:
                await self._purge_repartition(offsets)
        self._since_commit = 0
        self._last_commit = time.monotonic()
        self.metrics.commits.labels(self.topology.name).inc()
        self.metrics.commit_seconds.labels(self.topology.name).observe(time.monotonic() - started)
        keys: dict[str, int] = {}
        for task in self.tasks.values():
            if task.store is not None:
                for table in task.tables:
                    keys[table] = keys.get(table, 0) + task.store.approximate_keys(table)
        for table, n in keys.items():
            self.metrics.table_keys.labels(self.topology.name, table).set(n)

    async def _purge_repartition(self, committed: dict[TopicPartition, int]) -> None:
        """Delete consumed records of repartition topics (they are kept without time retention)."""
        now = time.monotonic()
        if now - self._last_purge < PURGE_INTERVAL_S:
            return
        self._last_purge = now
        internal = set(self.topology.repartition_topics())
        doomed = {tp: RecordsToDelete(off) for tp, off in committed.items()
                  if tp.topic in internal and off > 0}
        if not doomed:
            return
        try:
            if self._admin is None:
                self._admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.broker)
                await self._admin.start()
            await self._admin.delete_records(doomed)
        except Exception as exc:  # noqa: BLE001 - purging is housekeeping, never fatal
            log.warning("could not purge repartition records: %s", exc)

    # -- rebalancing ------------------------------------------------------------------------------
    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._lock:
            if not self.tasks:
                return
            try:
                await self._commit()
            except KafkaError:
                log.exception("commit on revoke failed; uncommitted input will be reprocessed")
            for task in self.tasks.values():
                task.close()
            log.info("closed %d tasks on revoke", len(self.tasks))
            self.tasks.clear()

    async def on_assigned(self, assigned: list[TopicPartition]) -> None:
        assert self.consumer is not None
        async with self._lock:
            self.metrics.rebalances.labels(self.topology.name).inc()
            wanted: dict[str, tuple[SubTopology, int]] = {}
            for tp in assigned:
                sub = self.sub_of_topic[tp.topic]
                wanted[f"{sub.index}_{tp.partition}"] = (sub, tp.partition)
            for task_id, (sub, partition) in sorted(wanted.items()):
                if task_id not in self.tasks:
                    self.tasks[task_id] = await self._open_task(sub, partition)
            for tp in assigned:
                task = self._task_for(tp)
                off = task.offsets.get((tp.topic, tp.partition)) if task else None
                if off is not None:
                    self.consumer.seek(tp, off)
            log.info("assigned %d partitions -> tasks %s", len(assigned), sorted(wanted))

    async def _open_task(self, sub: SubTopology, partition: int) -> Task:
        assert self.consumer is not None
        task_id = f"{sub.index}_{partition}"
        if not sub.stores:
            return Task(self.topology, sub, partition, None)
        path = self.state_root / task_id
        store = await asyncio.to_thread(TaskStore, path, sub.stores)
        task = Task(self.topology, sub, partition, store)
        committed: dict[tuple[str, int], int] = {}
        for topic, part in task.tps:
            off = await self.consumer.committed(TopicPartition(topic, part))
            if off is not None and off >= 0:
                committed[(topic, part)] = off
        local = task.offsets
        if not local_state_behind(local, committed):
            return task
        log.info("task %s: local state (%s) is behind the committed offsets (%s): restoring "
                 "from the changelog", task_id, dict(local) or "none", committed)
        task.close()
        TaskStore.destroy(path)
        store = await asyncio.to_thread(TaskStore, path, sub.stores)
        tables = {name: self.topology.stores[name].changelog for name in sub.stores}

        def progress(table: str, remaining: int) -> None:
            self.metrics.recovery_remaining.labels(self.topology.name, table).set(remaining)

        _, upstream = await restore_task(self.settings.broker, store, tables, partition,
                                         committed, task_id, progress)
        store.write(TaskMeta(dict(committed), upstream).encode())
        return Task(self.topology, sub, partition, store)


def run_worker(topology: Topology, settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; then finish the batch, commit and return 0."""

    async def main() -> None:
        worker = Worker(topology, settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    try:
        asyncio.run(main())
    except WorkerFailed as exc:
        log.error("worker failed: %s", exc)
        return 1
    return 0


__all__ = ["Worker", "run_worker", "topic_specs"]
