"""Stream-stream joins (semantics in :mod:`streams.dsl.joins`).

Each side of a join is one :class:`StreamJoinSideProc`: it buffers its side's records, looks up
the other side's buffer, and, for left/outer joins, keeps an "unmatched" marker per record of its
side until a match arrives or the record's window closes (then the marker becomes a result with
``None`` for the partner). Markers share their buffer entry's id, so a match clears the exact
marker. Both processors of a join run in the same task, on the task's shared stream time, and
write to the task's stores, so everything lands in the task's one WriteBatch per commit.
"""

from __future__ import annotations

from typing import Any

from ...dsl.joins import StreamJoinSideNode
from ...dsl.serdes import json_dumps
from ...state.meta import source_headers
from ...state.window_store import JoinBufferView
from ..context import ProcessorContext
from ..record_limits import fit_copy
from .base import Processor, Rec, ShapeError
from .windowed import _ClosedWindowRecord

__all__ = ["JoinOutputProc", "StreamJoinSideProc"]


class StreamJoinSideProc(Processor):
    """One side of a stream-stream join. For the left side, partners are right records at
    ``[ts - before, ts + after]`` and the own window closes at ``ts + after + grace``; the right
    side mirrors both (``[ts - after, ts + before]``, ``ts + before + grace``)."""

    def __init__(self, node: StreamJoinSideNode, ctx: ProcessorContext) -> None:  # type: ignore[override]
        super().__init__(node, ctx)
        self.jnode = node
        self.left = node.side == "left"
        w = node.windows
        before, after, grace = w.before_ms, w.after_ms, w.grace_ms
        # partner timestamps in [ts - lo, ts + hi]
        self.lo, self.hi = (before, after) if self.left else (after, before)
        self.own_close = self.hi + grace    # own record at ts is open while ts + own_close >= now
        self.other_close = self.lo + grace  # a partner at p is open while p + other_close >= now
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
        self.changelog = f"{ctx.topology_name}-{node.own_buffer}-changelog"
        ctx.on_stream_time(self._on_stream_time)

    def on_batch(self, recs: list[Rec]) -> None:
        ctx, node = self.ctx, self.jnode
        name, joiner, left = node.name, node.joiner, self.left
        own, other = self.own, self.other
        own_unmatched, other_unmatched = self.own_unmatched, self.other_unmatched
        lo, hi, own_close, other_close = self.lo, self.hi, self.own_close, self.other_close
        savepoints = [s for s in (own, own_unmatched, other_unmatched) if s is not None]
        clock = ctx.batch_clock()
        out: list[Rec] = []
        for rec in recs:
            key, value, ts = rec.key, rec.value, rec.ts
            if key is None or value is None:
                ctx.count_dropped(name, "null-key" if key is None else "null-value")
                continue
            now = clock(rec)
            if ts + own_close < now:
                self.late(rec, now)
                continue
            results: list[Rec] = []
            for s in savepoints:
                s.begin()
            try:
                # Partners whose own window is still open at this record's arrival.
                partners = other.fetch_entries(key, max(ts - lo, now - other_close), ts + hi)
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
                    own_unmatched.put_entry(pk, ts, value)
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
        """A record whose own window closed before it arrived: counted, kept in the late
        topic."""
        ctx, node = self.ctx, self.jnode
        ctx.count_late(node.name)
        if node.late_topic is not None:
            raw = rec.raw
            headers = [("error", f"join window of {node.name} for ts {rec.ts} closed at stream "
                                 f"time {now}".encode()), ("reason", b"late"),
                       ("node", node.name.encode()), *source_headers(raw)]
            key, value, headers = fit_copy(raw.key, raw.value, headers)  # always fits
            ctx.send(node.late_topic, key, value, rec.ts, headers)

    def _on_stream_time(self, now: int) -> None:
        """Own records whose window closed (``ts + own_close < now``): unmatched ones are
        emitted with ``None`` for the partner, and all of them leave the buffer."""
        closed_below = now - self.own_close
        out: list[Rec] = []
        if self.own_unmatched is not None:
            joiner, left = self.jnode.joiner, self.left
            for key, ts, value in self.own_unmatched.pop_before(closed_below):
                raw = _ClosedWindowRecord(self.changelog, self.ctx.partition,
                                          None if key is None else str(key).encode(),
                                          json_dumps(value), ts)
                try:
                    result = joiner(value, None) if left else joiner(None, value)
                    if result is None:
                        raise ShapeError("the joiner returned None for an unmatched record")
                except Exception as exc:  # noqa: BLE001 - user code; the record goes to the DLQ
                    self.fail(Rec(key, value, ts, raw), exc)
                    continue
                out.append(Rec(key, result, ts, raw))
        self.own.expire_before(closed_below)
        self.emit(out)


class JoinOutputProc(Processor):
    """Passes both sides' results on to the join's downstream operators."""

    def on_batch(self, recs: list[Rec]) -> None:
        self.emit(recs)
