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

:func:`restore_task` is the I/O around them: it reads changelog partitions with aiokafka.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition

from .meta import OFFSETS_HEADER, UPSTREAM_HEADER, Offsets, Positions, TaskMeta, decode_upstream
from .store import TaskStore

log = logging.getLogger(__name__)

_raw_decode = json.JSONDecoder().raw_decode


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
        self._last_header: bytes | None = None
        self._last_ok = False
        self._last_upstream: bytes | None = None

    def _finished(self, header: bytes | None) -> bool:
        if header is None:
            return False
        inputs = self.inputs
        for tp, off in _raw_decode(header.decode())[0].items():
            if inputs is not None and tp not in inputs:
                continue
            if off > self.committed.get(tp, 0):
                return False
        return True

    def accept(self, headers: dict[str, bytes]) -> bool:
        header = headers.get(OFFSETS_HEADER)
        if header != self._last_header:
            self._last_header = header
            self._last_ok = self._finished(header)
        if self._last_ok:
            up = headers.get(UPSTREAM_HEADER)
            if up and up != self._last_upstream:
                self._last_upstream = up
                for k, pos in decode_upstream(up).items():
                    if pos > self.upstream.get(k, (-1, -1)):
                        self.upstream[k] = pos
        return self._last_ok


def apply_changelog(store: TaskStore, table: str, records: Iterable[Any],
                    accept: ChangelogFilter, skipped: set[bytes]) -> int:
    """Write the accepted ``records`` (with .key, .value, .headers) of one table's changelog
    into ``store`` in one WriteBatch; returns how many were applied and adds the keys of the
    skipped ones (from unfinished commits) to ``skipped``.

    Those keys must be written to the changelog again with their restored value at the next
    commit (:meth:`Task.repair`): otherwise compaction may keep only the unfinished record of a
    key and a later restore would lose the key's finished value."""
    pending: list[tuple[bytes, bytes | None]] = []
    for rec in records:
        if accept.accept(dict(rec.headers or ())):
            pending.append((rec.key, rec.value))
            skipped.discard(rec.key)
        else:
            skipped.add(rec.key)
    if pending:
        store.write_raw(table, pending)
    return len(pending)


def restored_meta(local: TaskMeta, decision: OpenDecision, committed: Offsets,
                  ends: dict[str, int], accept: ChangelogFilter, shape: str) -> TaskMeta:
    """What the task's meta says after the restore ``decision`` was carried out."""
    stream_time = local.stream_time if decision.action == "restore" else -1
    return TaskMeta(dict(committed), dict(accept.upstream), stream_time, dict(ends), shape)


async def restore_task(bootstrap: str, store: TaskStore, tables: dict[str, str], partition: int,
                       restore_from: dict[str, int], accept: ChangelogFilter, ends: dict[str, int],
                       task_id: str, on_progress: Callable[[str, int], None] | None = None,
                       batch: int = 20000) -> tuple[int, dict[str, set[bytes]]]:
    """Apply ``tables`` ({table: changelog topic}) of one task from ``restore_from[topic]`` up to
    ``ends[topic]`` into ``store``, keeping what ``accept`` accepts. Returns the number of records
    applied and, per table, the keys of skipped records (see :func:`apply_changelog`)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 * 1024 * 1024,
                                fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    repairs: dict[str, set[bytes]] = {}
    applied = 0
    try:
        for table, topic in tables.items():
            if topic not in restore_from:
                continue
            skipped_keys = repairs.setdefault(table, set())
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            start = restore_from[topic]
            if start <= 0:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, start)
            end = ends[topic]
            start = await consumer.position(tp)
            total = max(0, end - start)
            if total == 0:
                continue
            log.info("task %s: restoring table %s from %s[%d]: offsets %d..%d (%d records)",
                     task_id, table, topic, partition, start, end, total)
            started = last_log = time.monotonic()
            done = skipped = 0
            while await consumer.position(tp) < end:
                records = (await consumer.getmany(tp, timeout_ms=1000, max_records=batch)).get(tp, [])
                records = [r for r in records if r.offset < end]
                ok = apply_changelog(store, table, records, accept, skipped_keys)
                applied += ok
                skipped += len(records) - ok
                done += len(records)
                if on_progress:
                    on_progress(table, max(0, total - done))
                now = time.monotonic()
                if now - last_log > 2:
                    log.info("task %s: restoring %s: %d%% (%d / %d records)", task_id, table,
                             100 * done // total, done, total)
                    last_log = now
            elapsed = time.monotonic() - started
            log.info("task %s: restored %s: %d records (%d from unfinished commits skipped) "
                     "in %.2fs (%.0f records/s)", task_id, table, done - skipped, skipped,
                     elapsed, done / elapsed if elapsed else 0)
            if on_progress:
                on_progress(table, 0)
    finally:
        await consumer.stop()
    return applied, repairs
