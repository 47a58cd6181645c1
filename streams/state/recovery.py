"""Open-or-restore decisions for a task's state, and restoring tables from their changelogs.

Two pure parts that the worker, the test driver and the model-based tests all call:

* :func:`decide_open` compares what local state reflects (its input offsets and the changelog
  positions written in the same WriteBatch) with the group's committed offsets and the
  changelogs' end offsets, and says whether to resume, restore the difference, or wipe.
* :class:`ChangelogFilter` decides which changelog records belong to finished commits. Every
  changelog record carries, in header ``streams-offsets``, the task's input offsets at the commit
  that wrote it. Consumer offsets are committed only after the changelog is flushed, so a record
  whose offsets are all <= the group's committed offsets belongs to a completed commit; one with
  any offset beyond them was written by a commit that never finished (its inputs will be
  processed again) and is skipped. (Kafka Streams' checkpoint file cannot tell the two apart,
  which is why its at-least-once mode may double-count after a crash.)

:class:`Restoration` is the I/O around them: it reads changelog partitions with aiokafka, a
step at a time (:func:`restore_consumer` is its consumer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from ..kafka.clients import Kafka, client_kwargs
from .meta import (CHANNELS_HEADER, OFFSETS_HEADER, STREAM_TIME_HEADER, UPSTREAM_HEADER,
                   Channels, Offsets, Positions, TaskMeta, decode_channels, decode_upstream)
from .store import TaskStore

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class OpenDecision:
    """What to do with a task's local state when the task is opened.

    * ``resume``: local state is current; consume from ``resume_offsets``.
    * ``restore``: apply the changelog records from ``restore_from`` (per changelog topic) on
      top of local state, keeping only finished commits; then consume from the group's offsets.
    * ``wipe``: local state cannot be trusted; delete it and restore everything.
    """

    action: Literal["resume", "restore", "wipe"]
    reason: str
    resume_offsets: Offsets = field(default_factory=dict)
    restore_from: dict[str, int] = field(default_factory=dict)
    # Local state holds a commit whose offset commit never happened: commit ``resume_offsets``
    # now, so its changelog records count as finished before compaction can drop the finished
    # records they overwrite.
    finish_commit: bool = False


def decide_open(local: TaskMeta, committed: Offsets, ends: dict[str, int]) -> OpenDecision:
    """Decide from local meta, the group's committed offsets (of the task's inputs) and the end
    offsets of the task's changelog partitions (``{changelog topic: end}``).

    The changelog positions are the authority on whose state this is: only the task's owner
    writes its changelog partition, so local position == end means nobody wrote after this
    state, whatever the group's offsets say.
    """
    positions = {t: local.changelog.get(t, 0) for t in ends}
    if local.empty:
        if any(ends.values()):
            return OpenDecision("wipe", "no local state", restore_from={t: 0 for t in ends})
        return OpenDecision("resume", "no state anywhere yet", resume_offsets=dict(committed))
    if any(pos > ends[t] for t, pos in positions.items()):
        return OpenDecision("wipe", "changelog is behind local state (reset or recreated)",
                            restore_from={t: 0 for t in ends})
    ahead = any(off > committed.get(tp, 0) for tp, off in local.offsets.items())
    if all(pos == ends[t] for t, pos in positions.items()):
        # Nobody wrote after this state: inputs the group committed beyond it changed no state.
        # If local state is ahead of the group (a crash between the WriteBatch and the offset
        # commit), the opener finishes that commit: see OpenDecision.finish_commit.
        resume = dict(committed)
        for tp, off in local.offsets.items():
            resume[tp] = max(off, resume.get(tp, 0))
        return OpenDecision("resume", "local state is current", resume_offsets=resume,
                            finish_commit=ahead)
    if ahead:
        # Local state holds a commit the group never acknowledged, and someone else wrote the
        # changelog after it (from a base without that commit): it cannot be patched.
        return OpenDecision("wipe", "local state holds an unacknowledged commit and the "
                            "changelog moved on", restore_from={t: 0 for t in ends})
    return OpenDecision("restore", "the changelog moved past local state",
                        restore_from={t: pos for t, pos in positions.items() if pos < ends[t]})


class ChangelogFilter:
    """Decides which changelog records belong to finished commits (pure logic, no I/O).

    ``accept(headers)`` is True when every offset in the record's ``streams-offsets`` header
    for one of the task's current ``inputs`` is <= the group's committed offset (offsets of
    topics the task no longer reads are ignored); accepted records also advance the upstream
    positions (``streams-upstream``) the task resumes its replay detection from. All records of
    one commit share the same header bytes, so the decision is made once per commit.
    """

    def __init__(self, committed: Offsets, inputs: Iterable[tuple[str, int]] | None = None,
                 upstream: Positions | None = None) -> None:
        self.committed = {f"{t}:{p}": o for (t, p), o in committed.items()}
        self.inputs = None if inputs is None else {f"{t}:{p}" for t, p in inputs}
        self.upstream: Positions = dict(upstream or {})
        self.stream_time = -1  # the largest stream time of the accepted commits
        # upstream partitions' progress of the accepted commits (each the latest, never back)
        self.channels: Channels = {}
        self._last_channels: bytes | None = None
        self._last_header: bytes | None = None
        self._last_ok = False
        self._last_upstream: bytes | None = None

    def set_committed(self, committed: Offsets) -> None:
        """The group's committed offsets moved on (a standby's filter follows them)."""
        new = {f"{t}:{p}": o for (t, p), o in committed.items()}
        if new != self.committed:
            self.committed = new
            # the cached decision was made against the old offsets
            self._last_header, self._last_ok = None, False

    def _finished(self, header: bytes | None) -> bool:
        if header is None:
            return False
        inputs = self.inputs
        committed = self.committed
        # (orjson: this runs once per distinct commit header while restoring; offsets fit in
        # 64 bits, so it reads them exactly)
        for tp, off in orjson.loads(header).items():
            if inputs is not None and tp not in inputs:
                continue
            if off > committed.get(tp, 0):
                return False
        return True

    def accept(self, headers: dict[str, bytes]) -> bool:
        return self.accept_pairs(headers.items())

    def accept_pairs(self, headers: Iterable[tuple[str, bytes]]) -> bool:
        """:meth:`accept` over a record's header pairs as Kafka hands them over (no dict)."""
        offsets = st = ch = up = None
        for name, value in headers:
            if name == OFFSETS_HEADER:
                offsets = value
            elif name == STREAM_TIME_HEADER:
                st = value
            elif name == CHANNELS_HEADER:
                ch = value
            elif name == UPSTREAM_HEADER:
                up = value
        if offsets != self._last_header:
            self._last_header = offsets
            self._last_ok = self._finished(offsets)
        if self._last_ok:
            if st is not None and int(st) > self.stream_time:
                self.stream_time = int(st)
            if ch and ch != self._last_channels:
                self._last_channels = ch
                merge_channels(self.channels, decode_channels(ch))
            if up and up != self._last_upstream:
                self._last_upstream = up
                for k, pos in decode_upstream(up).items():
                    if pos > self.upstream.get(k, (-1, -1)):
                        self.upstream[k] = pos
        return self._last_ok


def merge_channels(into: Channels, later: Channels) -> None:
    """Fold ``later`` channel progress into ``into``: time never moves back; the idle flag is
    the later one's."""
    for key, (t, idle) in later.items():
        old = into.get(key)
        into[key] = (t if old is None else max(old[0], t), idle)


def apply_changelog(store: TaskStore, table: str, records: Iterable[Any],
                    accept: ChangelogFilter, skipped: set[bytes],
                    meta: dict[str, str] | None = None) -> int:
    """Write the accepted ``records`` (with .key, .value, .headers) of one table's changelog
    into ``store`` in one WriteBatch; returns how many were applied and adds the keys of the
    skipped ones (from unfinished commits) to ``skipped``.

    Those keys must be written to the changelog again with their restored value at the next
    commit (:meth:`Task.repair`): otherwise compaction may keep only the unfinished record of a
    key and a later restore would lose the key's finished value."""
    pending: list[tuple[bytes, bytes | None]] = []
    add = pending.append
    # All records of one commit carry equal header tuples: decide once per run of them (a
    # tuple comparison in C), so the per-record cost is a compare and an append.
    last: Any = _NO_HEADERS
    ok = False
    for rec in records:
        headers = rec.headers
        if headers != last:
            last = headers
            ok = accept.accept_pairs(headers or ())
        if ok:
            add((rec.key, rec.value))
            if skipped:  # (empty unless unfinished commits were met)
                skipped.discard(rec.key)
        else:
            skipped.add(rec.key)
    if pending or meta is not None:
        store.write_raw(table, pending, meta)
    return len(pending)


_NO_HEADERS = object()


def restored_meta(local: TaskMeta, decision: OpenDecision, committed: Offsets,
                  ends: dict[str, int], accept: ChangelogFilter, shape: str) -> TaskMeta:
    """What the task's meta says after the restore ``decision`` was carried out."""
    stream_time = local.stream_time if decision.action == "restore" else -1
    channels = dict(local.channels) if decision.action == "restore" else {}
    merge_channels(channels, accept.channels)
    return TaskMeta(dict(committed), dict(accept.upstream), max(stream_time, accept.stream_time),
                    dict(ends), shape, channels)


class Restoration:
    """Restores one task's tables from their changelogs in steps, so that the worker keeps
    polling (and stays in its group) while a large table comes back.

    Each step applies one fetch of records together with the progress so far (changelog
    positions and upstream positions) in one WriteBatch: if the task is revoked in the middle,
    whoever opens it next on this host continues from there (``decide_open`` sees positions
    below the changelog's end) instead of starting over.
    """

    def __init__(self, task_id: str, store: TaskStore, changelogs: dict[str, str], partition: int,
                 decision: OpenDecision, local: TaskMeta, committed: Offsets,
                 ends: dict[str, int], inputs: Iterable[tuple[str, int]], shape: str,
                 accept: ChangelogFilter | None = None) -> None:
        self.task_id = task_id
        self.store = store
        self.changelogs = changelogs  # changelog topic -> table
        self.partition = partition
        self.decision = decision
        self.base = local if decision.action == "restore" else TaskMeta(shape=shape)
        self.committed = committed
        self.ends = ends
        self.shape = shape
        self.accept = accept or ChangelogFilter(committed, inputs, self.base.upstream)
        self.positions = {t: decision.restore_from.get(t, ends[t]) for t in ends}
        self.repairs: dict[str, set[bytes]] = {table: set() for table in changelogs.values()}
        self.total = sum(max(0, ends[t] - p) for t, p in self.positions.items())
        self.applied = 0  # records written to the store
        self.read = 0  # changelog records read below the ends (applied or skipped)
        self.started = time.monotonic()

    @property
    def done(self) -> bool:
        return all(p >= self.ends[t] for t, p in self.positions.items())

    def remaining(self, topic: str) -> int:
        return max(0, self.ends[topic] - self.positions[topic])

    def _progress(self) -> dict[str, str]:
        channels = dict(self.base.channels)
        merge_channels(channels, self.accept.channels)
        meta = TaskMeta(dict(self.base.offsets), dict(self.accept.upstream),
                        max(self.base.stream_time, self.accept.stream_time),
                        {**self.base.changelog, **self.positions}, self.shape, channels)
        return meta.encode()

    def pending(self) -> dict[str, int]:
        """The changelog topics still to restore, each with the offset to read from."""
        return {t: p for t, p in self.positions.items() if p < self.ends[t]}

    def apply(self, topic: str, records: list[Any], position: int) -> int:
        """Apply one fetch of ``topic``'s changelog (records in offset order, as the consumer
        returned them) whose consumer ``position`` is now ``position``, in one WriteBatch with
        the progress so far; returns the records applied. Records at or past the changelog end
        taken when the task was opened are left out (they belong to a later owner)."""
        start, end = self.positions[topic], self.ends[topic]
        if records and records[-1].offset >= end:
            records = [r for r in records if r.offset < end]
        new_position = min(end, max(start, position))
        if not records and new_position == start:
            return 0
        self.positions[topic] = new_position
        table = self.changelogs[topic]
        applied = apply_changelog(self.store, table, records, self.accept, self.repairs[table],
                                  self._progress())
        self.applied += applied
        self.read += len(records)
        return applied

    async def step(self, consumer: AIOKafkaConsumer, max_records: int = 20000) -> int:
        """Read and apply one fetch of the first unfinished changelog; returns records read.
        (The worker restores all its tasks at once through :class:`ChangelogRestorer`; this is
        the one-task path of the test driver.)"""
        for topic, position in self.pending().items():
            tp = TopicPartition(topic, self.partition)
            consumer.assign([tp])
            if position <= 0:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, position)
            fetched = (await consumer.getmany(tp, timeout_ms=1000, max_records=max_records)
                       ).get(tp, [])
            before = self.read
            self.apply(topic, fetched, await consumer.position(tp))
            return self.read - before
        return 0

    def finish(self) -> TaskMeta:
        """The task's meta once every changelog is restored: state as of the group's offsets."""
        log.info("task %s: restored %d of %d changelog records (the rest: unfinished commits, "
                 "transaction markers) in %.2fs", self.task_id, self.applied, self.total,
                 time.monotonic() - self.started)
        return restored_meta(self.base, self.decision, self.committed, self.ends, self.accept,
                             self.shape)


def restore_consumer(bootstrap: Kafka) -> AIOKafkaConsumer:
    """A consumer for changelogs: no group, committed records only, large fetches."""
    return AIOKafkaConsumer(**client_kwargs(bootstrap), enable_auto_commit=False,
                            isolation_level="read_committed", auto_offset_reset="earliest",
                            max_partition_fetch_bytes=8 * 1024 * 1024,
                            fetch_max_bytes=64 * 1024 * 1024)
