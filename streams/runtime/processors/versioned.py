"""Versioned tables and as-of stream-table joins (semantics in :mod:`streams.dsl.versioned`).

:class:`VersionedTableSourceProc` writes each table record as a version of its key;
:class:`VersionedTableJoinProc` looks each stream record's key up as of the record's timestamp,
holding records back in a join buffer for the grace period first when there is one. The
buffer is a changelogged store of the task (Kafka's RocksDBTimeOrderedKeyValueBuffer), so held
records survive a restart and land in the task's one WriteBatch per commit.
"""

from __future__ import annotations

from ...dsl.nodes import VersionedTableJoinNode, VersionedTableSourceNode
from ...serdes import json_dumps
from ...state.versioned_store import DROPPED, LATEST, GraceBufferView, VersionedTableView
from ..context import ProcessorContext
from .base import Processor, Rec
from .table_joins import _PLAIN_VALUES, _joined
from .windowed import _ClosedWindowRecord

__all__ = ["VersionedTableJoinProc", "VersionedTableSourceProc"]

_EARLIEST = -(1 << 63)


class VersionedTableSourceProc(Processor):
    """Each record becomes its key's version at the record's timestamp (a null value: a
    tombstone). A record older than the history retention is dropped ("expired"); one that
    only fills in history is not passed on (only new latest versions are table updates). A
    record without a key is a dead letter ("null-key")."""

    def __init__(self, node: VersionedTableSourceNode, ctx: ProcessorContext) -> None:
        super().__init__(node, ctx)
        self.table = ctx.typed_store(node.table, VersionedTableView)

    def on_batch(self, recs: list[Rec]) -> None:
        table, name, ctx = self.table, self.node.name, self.ctx
        out: list[Rec] = []
        for rec in recs:
            if rec.key is None:
                ctx.dead_letter(rec.raw, f"table record without key (in {name})",
                                reason="null-key")
                continue
            try:
                done = table.put(rec.key, rec.value, rec.ts)
            except Exception as exc:  # noqa: BLE001 - e.g. a value too large for the changelog
                self.fail(rec, exc)
                continue
            if done == LATEST:
                out.append(rec)
            elif done == DROPPED:
                ctx.count_dropped(name, "expired")
        table.expire()
        self.emit(out)


class VersionedTableJoinProc(Processor):
    """Stream records joined with their key's row as of their own timestamp; with a grace,
    after waiting in the buffer until stream time reaches ``ts + grace``."""

    def __init__(self, node: VersionedTableJoinNode, ctx: ProcessorContext) -> None:
        super().__init__(node, ctx)
        self.jnode = node
        self.table = ctx.typed_store(node.table, VersionedTableView)
        self.grace = node.grace_ms
        self.buffer: GraceBufferView | None = None
        # A lower bound of the buffered timestamps: nothing to release below it (saves a scan
        # of the buffer's time index per record).
        self._held_from = _EARLIEST
        if node.buffer is not None:
            self.buffer = ctx.typed_store(node.buffer, GraceBufferView)
            self.changelog = f"{ctx.topology_name}-{node.buffer}-changelog"
            ctx.on_stream_time(self._release_at)

    def on_batch(self, recs: list[Rec]) -> None:
        ctx, name, buffer, grace = self.ctx, self.jnode.name, self.buffer, self.grace
        clock = ctx.batch_clock() if buffer is not None else None
        out: list[Rec] = []
        for rec in recs:
            key, value = rec.key, rec.value
            if key is None or value is None:
                ctx.count_dropped(name, "null-key" if key is None else "null-value")
                continue
            if buffer is None or clock is None:
                self._join(rec, out)
                continue
            now = clock(rec)
            if rec.ts <= now - grace:
                # too old to wait for anything: joined at once (Kafka). One at ``now - grace``
                # would be released at once, too, but the records of its time may have left
                # already: a release time stays with the records released together.
                self._join(rec, out)
                continue
            try:
                buffer.add(key, rec.ts, value)
            except Exception as exc:  # noqa: BLE001 - a value the buffer cannot serialize
                self.fail(rec, exc)
                continue
            if rec.ts < self._held_from:
                self._held_from = rec.ts
            self._release(now - grace, out)
        self.emit(out)

    def _join(self, rec: Rec, out: list[Rec]) -> None:
        table = self.table
        try:
            row = table.get_as_of_bytes(table.key_bytes(rec.key), rec.ts)
            if row is None and self.jnode.how == "inner":
                return
            joined = self.jnode.joiner(rec.value, row)
            if joined is not None and type(joined) not in _PLAIN_VALUES:
                joined = _joined(joined, self.jnode.name)
        except Exception as exc:  # noqa: BLE001 - user code: the record goes to the DLQ
            self.fail(rec, exc)
            return
        out.append(Rec(rec.key, joined, rec.ts, rec.raw))

    def _release(self, up_to: int, out: list[Rec]) -> None:
        """Join the held records with ``ts <= up_to``, in timestamp order."""
        if up_to < self._held_from or self.buffer is None:
            return
        for key, ts, value in self.buffer.pop_range(self._held_from, up_to):
            # No input record is behind a released one any more: its raw names the buffer, and
            # its origin position is its release time (records leave in timestamp order).
            raw = _ClosedWindowRecord(self.changelog, self.ctx.partition,
                                      None if key is None else str(key).encode(),
                                      json_dumps(value), ts, ts + self.grace)
            self._join(Rec(key, value, ts, raw), out)
        self._held_from = up_to + 1

    def _release_at(self, now: int) -> None:
        out: list[Rec] = []
        self._release(now - self.grace, out)
        self.emit(out)
