"""Windowed aggregations on event time (semantics in :mod:`streams.dsl.windowed`).

One processor per window family: :class:`TimeWindowAggregateProc` (tumbling and hopping, a
window store keyed by key + window start) and :class:`SessionWindowAggregateProc` (a session
store keyed by key + start + end). Both keep stream time record by record within a batch, close
windows when stream time passes ``end + grace`` — at the end of each batch and from the
stream-time callback (idle close, other inputs of the task) — and delete closed windows, so the
store stays bounded. Each record's store writes sit in a savepoint: a failing user function
leaves no effect and sends only that record to the dead letters.
"""

from __future__ import annotations

from typing import Any

import faust

from ...dsl import nodes as n
from ...dsl.serdes import json_dumps
from ...state.meta import source_headers
from ..context import ProcessorContext
from .base import Processor, Rec

__all__ = ["SessionWindowAggregateProc", "TimeWindowAggregateProc"]

_NONE = object()


class _ClosedWindowRecord:
    """The ``raw`` of a final result emitted when a window closes (no input record caused it
    alone): names the window store, so a dead letter downstream still says where it came
    from."""

    __slots__ = ("topic", "partition", "offset", "key", "value", "timestamp", "headers")

    def __init__(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
                 timestamp: int) -> None:
        self.topic, self.partition, self.offset = topic, partition, -1
        self.key, self.value, self.timestamp, self.headers = key, value, timestamp, []


class _WindowAggregateProc(Processor):
    """What both window families share: output format, late records, emitting closed windows."""

    def __init__(self, node: n.Node, ctx: ProcessorContext) -> None:
        super().__init__(node, ctx)
        node_: n.WindowAggregateNode = node  # type: ignore[assignment]
        self.wnode = node_
        self.store = ctx.store(node_.table)
        self.grace = node_.window.grace_ms
        self.final = node_.emit == "final"
        self.changelog = f"{ctx.topology_name}-{node_.table}-changelog"
        ctx.on_stream_time(self._close_until)

    def output(self, key: Any, agg: Any, start: int, end: int, ts: int, raw: Any) -> Rec:
        """The record a window result is written as: the aggregate's fields (or ``value``)
        plus the window bounds, keyed by the group key, with the bounds also in headers."""
        result = self.wnode.result
        value = agg if result is None else result(agg)
        if isinstance(value, faust.Record):
            value = value.asdict()
        if isinstance(value, dict):
            value = {**value, "window_start": start, "window_end": end}
        else:
            value = {"value": value, "window_start": start, "window_end": end}
        return Rec(key, value, ts, raw, _bounds(start, end))

    def retraction(self, key: Any, start: int, end: int, ts: int, raw: Any) -> Rec:
        return Rec(key, None, ts, raw, _bounds(start, end))

    def late(self, rec: Rec, start: int, end: int) -> None:
        """A record none of whose windows is open: counted, and kept in the late topic."""
        ctx, node = self.ctx, self.wnode
        ctx.count_late(node.name)
        if node.late_topic is not None:
            raw = rec.raw
            headers = [("error", f"window [{start}, {end}] of {node.name} closed at stream "
                                 f"time {ctx.stream_time}".encode()), ("reason", b"late"),
                       ("node", node.name.encode()), *source_headers(raw), *_bounds(start, end)]
            ctx.send(node.late_topic, raw.key, raw.value, rec.ts, headers)

    def closed_output(self, key: Any, agg: Any, start: int, end: int, ts: int) -> Rec:
        rec = self.output(key, agg, start, end, ts, None)
        rec.raw = _ClosedWindowRecord(self.changelog, self.ctx.partition,
                                      None if key is None else str(key).encode(),
                                      json_dumps(rec.value), ts)
        return rec

    def _close_until(self, now: int) -> None:
        self.emit(self.close_until(now))

    def close_until(self, now: int) -> list[Rec]:
        raise NotImplementedError


def _bounds(start: int, end: int) -> list[tuple[str, bytes]]:
    return [("window_start", str(start).encode()), ("window_end", str(end).encode())]


class TimeWindowAggregateProc(_WindowAggregateProc):
    """Tumbling and hopping windows ``[start, start + size)``; closed at ``end + grace``."""

    def __init__(self, node: n.Node, ctx: ProcessorContext) -> None:
        super().__init__(node, ctx)
        self.size = self.wnode.window.size_ms
        self.windows_for = self.wnode.window.windows_for

    def on_batch(self, recs: list[Rec]) -> None:
        node, ctx, store = self.wnode, self.ctx, self.store
        init, add, grace, update = node.initializer, node.adder, self.grace, not self.final
        now = ctx.stream_time
        out: list[Rec] = []
        for rec in recs:
            key, value, ts = rec.key, rec.value, rec.ts
            if key is None or value is None:
                ctx.count_dropped(node.name, "null-key" if key is None else "null-value")
                continue
            if ts > now:
                now = ts
            windows = self.windows_for(ts)
            open_ = [(s, e) for s, e in windows if now < e + grace]
            if not open_:
                if windows:
                    self.late(rec, *windows[-1])
                continue
            updates = []
            store.begin()
            try:
                for start, end in open_:
                    current = store.get(key, start, _NONE)
                    agg = add(init() if current is _NONE else current, value)
                    store.put(key, start, agg)
                    if update:
                        updates.append(self.output(key, agg, start, end, ts, rec.raw))
            except Exception as exc:  # noqa: BLE001 - user code; the record goes to the DLQ
                store.rollback()
                self.fail(rec, exc)
                continue
            store.release()
            out.extend(updates)
        out.extend(self.close_until(now))
        self.emit(out)

    def close_until(self, now: int) -> list[Rec]:
        """Windows with ``start + size + grace <= now`` close: emitted (final mode), deleted."""
        last_start = now - self.size - self.grace
        if last_start < 0:
            return []
        closed = sorted(self.store.fetch_all(None, last_start), key=lambda r: (r[1], str(r[0])))
        out = []
        for key, start, agg in closed:
            end = start + self.size
            if self.final:
                out.append(self.closed_output(key, agg, start, end, end - 1))
            self.store.delete(key, start)
        return out


class SessionWindowAggregateProc(_WindowAggregateProc):
    """Session windows ``[first, last]`` per key, merged within ``gap``; closed when stream time
    passes ``end + grace``."""

    def __init__(self, node: n.Node, ctx: ProcessorContext) -> None:
        super().__init__(node, ctx)
        self.gap = self.wnode.window.gap_ms

    def on_batch(self, recs: list[Rec]) -> None:
        node, ctx, store = self.wnode, self.ctx, self.store
        init, add, merge = node.initializer, node.adder, node.merger
        grace, gap, update = self.grace, self.gap, not self.final
        now = ctx.stream_time
        out: list[Rec] = []
        for rec in recs:
            key, value, ts = rec.key, rec.value, rec.ts
            if key is None or value is None:
                ctx.count_dropped(node.name, "null-key" if key is None else "null-value")
                continue
            if ts > now:
                now = ts
            sessions = store.fetch_sessions(key, ts - gap, ts + gap)
            start = min([s for (s, _e), _a in sessions] + [ts])
            end = max([e for (_s, e), _a in sessions] + [ts])
            if now > end + grace:
                self.late(rec, start, end)
                continue
            emitted = []
            store.begin()
            try:
                agg: Any = _NONE
                for _bounds_, old in sessions:
                    agg = old if agg is _NONE else merge(agg, old)  # type: ignore[misc]
                agg = add(init() if agg is _NONE else agg, value)
                for (s, e), _old in sessions:
                    if (s, e) != (start, end):
                        store.delete(key, s, e)
                        if update:
                            emitted.append(self.retraction(key, s, e, ts, rec.raw))
                store.put(key, start, end, agg)
                if update:
                    emitted.append(self.output(key, agg, start, end, ts, rec.raw))
            except Exception as exc:  # noqa: BLE001 - user code; the record goes to the DLQ
                store.rollback()
                self.fail(rec, exc)
                continue
            store.release()
            out.extend(emitted)
        out.extend(self.close_until(now))
        self.emit(out)

    def close_until(self, now: int) -> list[Rec]:
        """Sessions with ``end + grace < now`` close: emitted (final mode), deleted."""
        last_end = now - self.grace - 1
        closed = sorted(self.store.fetch_all(None, last_end), key=lambda r: (r[2], str(r[0])))
        out = []
        for key, start, end, agg in closed:
            if self.final:
                out.append(self.closed_output(key, agg, start, end, end))
            self.store.delete(key, start, end)
        return out
