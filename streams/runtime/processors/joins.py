"""Stream-stream joins (semantics in :mod:`streams.dsl.joins`).

Each side of a join is one :class:`StreamJoinSideProc`: it buffers its side's records, looks up
the other side's buffer, and, for left/outer joins, keeps an "unmatched" marker per record of its
side that found no partner (Kafka Streams' outer-join store) until a partner arrives or the
record's window closes; then the marker becomes a result with ``None`` for the partner. Markers
share their buffer entry's id, so a match clears the exact marker. Both processors of a join run
in the same task, on the task's shared stream time, and write to the task's stores, so
everything lands in the task's one WriteBatch per commit.

Closing markers is shared by the two sides (:class:`_UnmatchedCloser`): it runs when a record
brings stream time to its own timestamp, *before* that record is joined (as Kafka Streams does),
and when stream time advances without a join record (end of a batch, idle close).
"""

from __future__ import annotations

import weakref
from typing import Any

from ...dsl.nodes import StreamJoinSideNode
from ...serdes import json_dumps
from ...state.meta import source_headers
from ...state.window_store import JoinBufferView
from ..context import ProcessorContext
from ..record_limits import fit_copy
from .base import Processor, Rec, ShapeError
from .windowed import _ClosedWindowRecord

__all__ = ["JoinOutputProc", "StreamJoinSideProc"]


class _UnmatchedCloser:
    """The unmatched markers of one join in one task (left and/or right) and how far stream
    time has closed them. One instance serves both side processors, so a record of either side
    closes the markers of both, in Kafka Streams' order: by timestamp, right side first, then
    key bytes (then insertion)."""

    def __init__(self, node: StreamJoinSideNode, ctx: ProcessorContext) -> None:
        w = node.windows
        self.joiner = node.joiner
        self.partition = ctx.partition
        # (is_left, markers, closes: a marker at ts is closed once ts + closes < stream time,
        # changelog named by the dead letters of failing joiners)
        self.sides: list[tuple[bool, JoinBufferView, int, str]] = []
        for side, close in (("left", w.after_ms + w.grace_ms), ("right", w.before_ms + w.grace_ms)):
            store = node.unmatched(side)
            if store is not None:
                view: Any = ctx.store(store)
                self.sides.append((side == "left", view, close,
                                   f"{ctx.topology_name}-{node.join_name}-{side}-changelog"))
        # State committed with stream time T has every marker closed by T closed (the stream-
        # time callback ran before that commit), so closing starts from the task's stream time.
        self.closed_upto = ctx.stream_time
        # Per side, a lower bound of the markers' timestamps (None: unknown), so that a record
        # advancing stream time scans the markers only when one of them may have closed, and
        # the bound below which every marker is gone (the scan starts there, not at the
        # tombstones of the markers closed before). A new marker is never below the latter:
        # it has ts + window end >= stream time.
        self.min_ts: list[int | None] = [None] * len(self.sides)
        self.gone_below: list[int | None] = [None] * len(self.sides)

    def marked(self, is_left: bool, ts: int) -> None:
        """A marker at ``ts`` was added on that side."""
        for i, side in enumerate(self.sides):
            low = self.min_ts[i]
            if side[0] == is_left and low is not None and ts < low:
                self.min_ts[i] = ts

    def close(self, now: int, fail: Any) -> list[Rec]:
        """The results of the markers closed at stream time ``now`` (removed from the store),
        in emission order; a joiner that fails sends its marker's record to ``fail``."""
        if now <= self.closed_upto:
            return []
        self.closed_upto = now
        closed: list[tuple[int, int, bytes, bool, Any, Any, str, int]] = []
        for i, (is_left, markers, closes, changelog) in enumerate(self.sides):
            low = self.min_ts[i]
            if low is not None and low + closes >= now:
                continue
            key_bytes = markers.key_bytes
            popped, first = markers.pop_closed(self.gone_below[i], now - closes)
            order = 1 if is_left else 0  # right side first
            for key, ts, value in popped:
                closed.append((ts, order, key_bytes(key), is_left, key, value, changelog,
                               ts + closes + 1))
            self.min_ts[i] = _NONE_LEFT if first is None else first
            self.gone_below[i] = now - closes
        if not closed:
            return []
        closed.sort(key=lambda c: c[:3])  # stable: insertion order within one (ts, side, key)
        joiner = self.joiner
        out: list[Rec] = []
        for ts, _side, kb, is_left, key, value, changelog, closed_at in closed:
            # (downstream dead letters of this result name the marker's record; its origin
            # position is the stream time its window closed at: per side (changelog), markers
            # close in timestamp order, so that position only grows)
            raw = _ClosedWindowRecord(changelog, self.partition, kb, json_dumps(value), ts,
                                      closed_at)
            try:
                result = joiner(value, None) if is_left else joiner(None, value)
                if result is None:
                    raise ShapeError("the joiner returned None for an unmatched record")
            except Exception as exc:  # noqa: BLE001 - user code; the record goes to the DLQ
                fail(Rec(key, value, ts, raw), exc)
                continue
            out.append(Rec(key, result, ts, raw))
        return out


_NONE_LEFT = 1 << 63  # (no marker: none can close)

# One closer per join per task, found through the join's left buffer view (a per-task object
# both side processors receive from the context).
_CLOSERS: weakref.WeakKeyDictionary[Any, _UnmatchedCloser] = weakref.WeakKeyDictionary()


def _closer(node: StreamJoinSideNode, ctx: ProcessorContext) -> _UnmatchedCloser | None:
    if node.unmatched("left") is None and node.unmatched("right") is None:
        return None
    anchor = ctx.store(f"{node.join_name}-left")
    closer = _CLOSERS.get(anchor)
    if closer is None:
        closer = _CLOSERS[anchor] = _UnmatchedCloser(node, ctx)
    return closer


class StreamJoinSideProc(Processor):
    """One side of a stream-stream join. For the left side, partners are right records at
    ``[ts - before, ts + after]``; the right side mirrors it (``[ts - after, ts + before]``).
    Both sides keep their records for ``before + after + grace`` of stream time (retention)."""

    def __init__(self, node: StreamJoinSideNode, ctx: ProcessorContext) -> None:
        super().__init__(node, ctx)
        self.jnode = node
        self.left = node.side == "left"
        w = node.windows
        # partner timestamps in [ts - lo, ts + hi]
        self.lo, self.hi = (w.before_ms, w.after_ms) if self.left else (w.after_ms, w.before_ms)
        # a record at ts is kept (joinable) while ts + retention >= stream time
        self.retention = w.before_ms + w.after_ms + w.grace_ms
        own_buffer: Any = ctx.store(node.own_buffer)
        other_buffer: Any = ctx.store(node.other_buffer)
        self.own: JoinBufferView = own_buffer
        self.other: JoinBufferView = other_buffer
        side, other = node.side, ("right" if self.left else "left")
        own_marker, other_marker = node.unmatched(side), node.unmatched(other)
        self.own_unmatched: JoinBufferView | None = (
            ctx.store(own_marker) if own_marker else None)  # type: ignore[assignment]
        self.other_unmatched: JoinBufferView | None = (
            ctx.store(other_marker) if other_marker else None)  # type: ignore[assignment]
        self.closer = _closer(node, ctx)
        # Own records below this timestamp are expired (none is added there again: it would be
        # late), so the next expiry scans from here, not over the tombstones of the last ones.
        self.expired_below: int | None = None
        ctx.on_stream_time(self._on_stream_time)

    def on_batch(self, recs: list[Rec]) -> None:
        ctx, node = self.ctx, self.jnode
        name, joiner, left = node.name, node.joiner, self.left
        own, other = self.own, self.other
        own_unmatched, other_unmatched = self.own_unmatched, self.other_unmatched
        lo, hi, retention, closer = self.lo, self.hi, self.retention, self.closer
        savepoints = [s for s in (own, own_unmatched, other_unmatched) if s is not None]
        clock = ctx.batch_clock()
        out: list[Rec] = []
        for rec in recs:
            key, value, ts = rec.key, rec.value, rec.ts
            if key is None or value is None:
                ctx.count_dropped(name, "null-key" if key is None else "null-value")
                continue
            now = clock(rec)
            if ts + retention < now:
                self.late(rec, now)
                continue
            if closer is not None and ts == now:
                # Unmatched results whose window this record closed come before its own.
                out.extend(closer.close(now, self.fail))
            results: list[Rec] = []
            for s in savepoints:
                s.begin()
            try:
                partners = other.fetch_entries(key, max(ts - lo, now - retention), ts + hi)
                pk = own.add(key, ts, value)
                for ppk, pts, pvalue in partners:
                    result = joiner(value, pvalue) if left else joiner(pvalue, value)
                    if result is None:
                        raise ShapeError("the joiner returned None (a join result must be a "
                                         "value; filter afterwards to drop results)")
                    results.append(Rec(key, result, ts if ts > pts else pts, rec.raw))
                    if other_unmatched is not None and other_unmatched.has_entry(ppk):
                        other_unmatched.delete_entry(ppk, pts)
                if own_unmatched is not None and not partners:
                    if ts + hi < now:
                        # Its window ended before it arrived (out of order): no marker, the
                        # unmatched result goes out now, as Kafka Streams does.
                        result = joiner(value, None) if left else joiner(None, value)
                        if result is None:
                            raise ShapeError("the joiner returned None for an unmatched record")
                        results.append(Rec(key, result, ts, rec.raw))
                    else:
                        own_unmatched.put_entry(pk, ts, value)
                        if closer is not None:
                            closer.marked(left, ts)
            except Exception as exc:  # noqa: BLE001 - user code; the record goes to the DLQ
                for s in savepoints:
                    s.rollback()
                self.fail(rec, exc)
                continue
            for s in savepoints:
                s.release()
            out.extend(results)
        self.emit(out)

    def late(self, rec: Rec, now: int) -> None:
        """A record older than the join's retention when it arrived: counted, kept in the late
        topic."""
        ctx, node = self.ctx, self.jnode
        ctx.count_late(node.name)
        if node.late_topic is not None:
            raw = rec.raw
            headers = [("error", f"join {node.name} keeps records for {self.retention} ms; ts "
                                 f"{rec.ts} is older at stream time {now}".encode()),
                       ("reason", b"late"), ("node", node.name.encode()), *source_headers(raw)]
            key, value, headers = fit_copy(raw.key, raw.value, headers)  # always fits
            ctx.send(node.late_topic, key, value, rec.ts, headers)

    def _on_stream_time(self, now: int) -> None:
        """Stream time moved to ``now`` outside a join record (end of a batch, idle close):
        close the unmatched markers due, and drop own records past the retention."""
        if self.closer is not None:
            self.emit(self.closer.close(now, self.fail))
        before = now - self.retention
        self.own.expire_before(before, self.expired_below)
        if self.expired_below is None or before > self.expired_below:
            self.expired_below = before


class JoinOutputProc(Processor):
    """Passes both sides' results on to the join's downstream operators."""

    def on_batch(self, recs: list[Rec]) -> None:
        self.emit(recs)
