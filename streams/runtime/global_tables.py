"""Global tables at run time: every worker holds all of each global table's topic.

:class:`GlobalTables` is transport-free (the worker and the TopologyTestDriver both use it): it
opens the local copy (:mod:`streams.state.global_store`), says where to read each partition
from, and applies records of the global topics — each batch in one WriteBatch with the offsets
it reaches, so the copy and its offsets always agree.

:class:`GlobalTableConsumer` is the worker's side, on aiokafka: a consumer without group that
is assigned every partition of the global topics. :meth:`~GlobalTableConsumer.load` reads them
to the end offsets taken at start before the worker joins its group (so no stream record is
processed against a partly loaded table); :meth:`~GlobalTableConsumer.poll` then applies what
has arrived, between the worker's batches (no concurrent writes, and each batch sees the table
as of its start), keeping the tables current.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from ..serdes import KeySerde
from ..dsl.topology import Topology
from ..kafka.admin import topic_partitions
from ..kafka.clients import Kafka, client_kwargs
from ..state.global_store import (GlobalTableView, decide_start, global_shape,
                                  open_global_store)
from ..state.meta import Offsets, TaskMeta
from ..state.store import TaskStore

log = logging.getLogger(__name__)

__all__ = ["GlobalTableConsumer", "GlobalTables"]


class GlobalTables:
    """The global tables of ``topology`` in one worker, stored under ``state_root``."""

    def __init__(self, topology: Topology, state_root: Path) -> None:
        self.topology = topology
        self.state_root = Path(state_root)
        self.specs = list(topology.global_tables.values())
        self.by_topic = {s.topic: s for s in self.specs}
        self.shape = global_shape(self.specs)
        self.store: TaskStore | None = None
        self.views: dict[str, GlobalTableView] = {}
        self.offsets: Offsets = {}
        # (table, reason) -> records skipped (null key, undecodable); the worker moves them into
        # streams_dropped_records_total and resets them
        self.dropped: dict[tuple[str, str], int] = {}
        self._key = KeySerde().serialize

    @property
    def topics(self) -> list[str]:
        return list(self.by_topic)

    def __getitem__(self, name: str) -> GlobalTableView:
        """The view of global table ``name`` (what tasks look rows up in)."""
        return self.views[name]

    def open(self) -> None:
        self.store = open_global_store(self.state_root, self.specs)
        self.views = {s.name: GlobalTableView(self.store, s) for s in self.specs}
        self.offsets = TaskMeta.decode(self.store.meta()).offsets

    @property
    def path(self) -> Path | None:
        return None if self.store is None else self.store.path

    def start(self, beginnings: Offsets, ends: Offsets) -> Offsets:
        """Where to read each partition from (wiping the copy if it does not fit the topics);
        see :func:`~streams.state.global_store.decide_start`."""
        assert self.store is not None
        wipe, start = decide_start(self.offsets, beginnings, ends)
        if wipe:
            log.info("global tables: local copy %s does not fit the topics (local offsets %s, "
                     "topic offsets %s..%s): loading from the beginning", self.store.path,
                     self.offsets, beginnings, ends)
            path = self.store.path
            self.close()
            TaskStore.destroy(path)
            self.open()
        return start

    def apply(self, records: list[Any], positions: Offsets | None = None) -> int:
        """Write ``records`` of the global topics (in offset order per partition) to the copy:
        the latest value per key, a null value deletes. A record with a null key, or whose key
        or value does not decode, is skipped and counted in :attr:`dropped` (every worker reads
        every global record: a dead letter per worker would repeat it). The offsets after the
        records (or ``positions``, where a consumer has moved past transaction markers) go into
        the same WriteBatch per table. Returns the number of records applied."""
        assert self.store is not None
        pending: dict[str, list[tuple[bytes, bytes | None]]] = {}
        offsets = dict(self.offsets)
        applied = 0
        skipped: list[str] = []
        for raw in records:
            spec = self.by_topic.get(raw.topic)
            if spec is None:
                continue
            offsets[(raw.topic, raw.partition)] = raw.offset + 1
            try:
                key = spec.source_key_serde.deserialize(raw.key)
                if key is None:
                    reason = "null-key"
                else:
                    reason = ""
                    if raw.value is not None:
                        spec.value_serde.deserialize(raw.value)
            except Exception:  # noqa: BLE001 - a bad record of the topic, whatever the serde raises
                reason = "decode"
            kb = None if reason else self._key(key)  # None only for a null key: reason is set
            if kb is None:
                self.dropped[(spec.name, reason)] = self.dropped.get((spec.name, reason), 0) + 1
                skipped.append(f"{raw.topic}:{raw.partition}:{raw.offset} ({reason})")
                continue
            pending.setdefault(spec.name, []).append((kb, raw.value))
            applied += 1
        for tp, off in (positions or {}).items():
            if tp[0] in self.by_topic and off > offsets.get(tp, 0):
                offsets[tp] = off
        if skipped:
            log.warning("global tables: skipped %d records: %s%s", len(skipped),
                        ", ".join(skipped[:5]), " ..." if len(skipped) > 5 else "")
        if offsets != self.offsets:
            meta = TaskMeta(offsets, shape=self.shape).encode()
            tables = list(pending) or [self.specs[0].name]
            for name in tables:  # the offsets ride with each table's entries
                self.store.write_raw(name, pending.get(name, []), meta)
            self.offsets = offsets
        return applied

    def approximate_keys(self) -> dict[str, int]:
        store = self.store
        return {} if store is None else {s.name: store.approximate_keys(s.name)
                                         for s in self.specs}

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
            self.views = {}


class GlobalTableConsumer:
    """Reads the global topics for a worker: a full load at start, then whatever arrives."""

    def __init__(self, tables: GlobalTables, bootstrap: Kafka,
                 on_remaining: Callable[[str, int], None] | None = None,
                 on_keys: Callable[[str, int], None] | None = None,
                 stopping: Callable[[], bool] | None = None) -> None:
        self.tables = tables
        self.stopping = stopping or (lambda: False)  # a stop request ends a long load early
        self.bootstrap = bootstrap
        self.on_remaining = on_remaining
        self.on_keys = on_keys
        self.consumer: AIOKafkaConsumer | None = None
        self.tps: list[TopicPartition] = []
        self.loaded = 0  # records read by the start-up load (not the whole topic on a restart)

    async def load(self) -> None:
        """Open the local copy and read every partition of the global topics up to the end
        offsets taken now; report ``streams_recovery_records_remaining{table}`` as it goes."""
        tables = self.tables
        await asyncio.to_thread(tables.open)
        self.consumer = AIOKafkaConsumer(
            **client_kwargs(self.bootstrap), enable_auto_commit=False,
            isolation_level="read_committed", auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
        await self.consumer.start()
        consumer = self.consumer
        parts = await topic_partitions(self.bootstrap, tables.topics)
        missing = [t for t in tables.topics if not parts.get(t)]
        if missing:
            raise RuntimeError(f"global table topics {missing} do not exist")
        self.tps = [TopicPartition(t, p) for t in tables.topics for p in sorted(parts[t])]
        consumer.assign(self.tps)
        beginnings = _offsets(await consumer.beginning_offsets(self.tps))
        ends = _offsets(await consumer.end_offsets(self.tps))
        local = dict(tables.offsets)
        start = tables.start(beginnings, ends)
        for tp in self.tps:
            consumer.seek(tp, start[(tp.topic, tp.partition)])
        total = sum(max(0, ends[tp] - start[tp]) for tp in ends)
        began = time.monotonic()
        log.info("global tables %s: loading %d records from offsets %s (local copy %s had %s)",
                 ", ".join(s.name for s in tables.specs), total, _fmt(start), tables.path,
                 _fmt(local) if local else "nothing")
        positions = dict(start)
        self._report_remaining(ends, positions)
        last_report = time.monotonic()
        while any(positions[tp] < end for tp, end in ends.items()):
            if self.stopping():
                log.info("global tables: load interrupted by a stop request (resumes from %s)",
                         _fmt(tables.offsets))
                return
            batch = await consumer.getmany(timeout_ms=500, max_records=20000)
            records = [r for recs in batch.values() for r in recs]
            for tp in self.tps:
                positions[(tp.topic, tp.partition)] = await consumer.position(tp)
            self.loaded += len(records)
            tables.apply(records, positions)
            if time.monotonic() - last_report > 0.5:
                self._report_remaining(ends, positions)
                last_report = time.monotonic()
        self._report_remaining(ends, positions)
        self._report_keys()
        log.info("global tables: loaded %d records in %.2fs (offsets now %s)", self.loaded,
                 time.monotonic() - began, _fmt(tables.offsets))

    async def poll(self) -> int:
        """Apply the global records that have arrived (no waiting); returns how many."""
        if self.consumer is None:
            return 0
        batch = await self.consumer.getmany(timeout_ms=0, max_records=20000)
        if not batch:
            return 0
        return self.tables.apply([r for recs in batch.values() for r in recs])

    def _report_remaining(self, ends: Offsets, positions: Offsets) -> None:
        if self.on_remaining is None:
            return
        for spec in self.tables.specs:
            left = sum(max(0, end - positions.get(tp, 0)) for tp, end in ends.items()
                       if tp[0] == spec.topic)
            self.on_remaining(spec.name, left)

    def _report_keys(self) -> None:
        if self.on_keys is not None:
            for table, n in self.tables.approximate_keys().items():
                self.on_keys(table, n)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        self.tables.close()


def _offsets(by_tp: dict[TopicPartition, int]) -> Offsets:
    return {(tp.topic, tp.partition): off for tp, off in by_tp.items()}


def _fmt(offsets: Offsets) -> str:
    return ", ".join(f"{t}:{p}={o}" for (t, p), o in sorted(offsets.items())) or "-"
