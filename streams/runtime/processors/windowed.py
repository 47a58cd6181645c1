"""Windowed aggregations on event time (semantics in :mod:`streams.dsl.window_ops`).

One processor per window family: :class:`TimeWindowAggregateProc` (tumbling and hopping, a
window store keyed by key + window start) and :class:`SessionWindowAggregateProc` (a session
store keyed by key + start + end); sliding windows are in :mod:`.sliding_windows`. Each keeps
stream time record by record within a batch, closes windows when stream time passes
``end + grace`` — at the end of each batch and from the stream-time callback (idle close, other
inputs of the task) — and deletes closed windows, so the store stays bounded. Each record's
store writes sit in a savepoint: a failing user function leaves no effect and sends only that
record to the dead letters.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import faust

from ...dsl import nodes as n
from ...dsl.window_specs import TumblingWindows
from ...serdes import json_dumps
from ...state.meta import source_headers
from ...state.window_store import SessionStoreView, WindowStoreView
from ..context import ProcessorContext
from ..record_limits import fit_copy
from .base import Processor, Rec

__all__ = ["SessionWindowAggregateProc", "TimeWindowAggregateProc"]

_NONE = object()


class _ClosedWindowRecord:
    """The ``raw`` of a result emitted when a window closes (no input record caused it alone):
    names the store's changelog, so a dead letter downstream still says where it came from,
    and takes the window's close time as its offset. That is its origin position behind a
    repartition (:mod:`streams.state.meta`): a later close of the same store and partition has
    a larger close time, across batches, restarts and rebalances, and a replayed close has the
    same one, so the downstream task tells new results from replays. Hence the rule for every
    user: all results of one close time leave in one batch, in a deterministic order, and
    results of later close times after them."""

    __slots__ = ("topic", "partition", "offset", "key", "value", "timestamp", "headers")

    def __init__(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
                 timestamp: int, closed_at: int) -> None:
        self.topic, self.partition, self.offset = topic, partition, closed_at
        self.key, self.value, self.timestamp = key, value, timestamp
        self.headers: list[tuple[str, bytes]] = []


class _WindowAggregateProc(Processor):
    """What both window families share: output format, late records, emitting closed windows."""

    def __init__(self, node: n.Node, ctx: ProcessorContext) -> None:
        super().__init__(node, ctx)
        node_: n.WindowAggregateNode = node  # type: ignore[assignment]
        self.wnode = node_
        self.grace = node_.window.grace_ms
        self.final = node_.emit == "final"
        self.changelog = f"{ctx.topology_name}-{node_.table}-changelog"
        # Every window below this index time (start, or a session's end) was closed and deleted
        # by this processor: no record can open one there again (stream time only grows), so
        # closing scans the time index from here, not over the tombstones of everything closed
        # since the last compaction. None until the first close (state may be restored).
        self.closed_below: int | None = None
        ctx.on_stream_time(self._close_until)

    def accepted(self, recs: list[Rec]) -> Iterator[tuple[Rec, int, int]]:
        """(record, stream time before it, stream time with it) for the records that have a key
        and a value; the others are skipped and counted as dropped (Kafka Streams' rule). Stream
        time advances record by record; ``self.now`` holds it after the batch."""
        ctx, name = self.ctx, self.wnode.name
        clock = ctx.batch_clock()
        now = self.now = ctx.stream_time
        for rec in recs:
            if rec.key is None or rec.value is None:
                ctx.count_dropped(name, "null-key" if rec.key is None else "null-value")
                continue
            before = now
            now = self.now = clock(rec)
            yield rec, before, now

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
            key, value, headers = fit_copy(raw.key, raw.value, headers)  # always fits
            ctx.send(node.late_topic, key, value, rec.ts, headers)

    def closed_output(self, key: Any, agg: Any, start: int, end: int, ts: int,
                      closed_at: int) -> Rec:
        """The final result of a window that closes at stream time ``closed_at`` (its close
        time: a function of the window alone, not of when stream time got there)."""
        rec = self.output(key, agg, start, end, ts, None)
        rec.raw = _ClosedWindowRecord(self.changelog, self.ctx.partition,
                                      None if key is None else str(key).encode(),
                                      json_dumps(rec.value), ts, closed_at)
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
        self.store = ctx.typed_store(self.wnode.table, WindowStoreView)
        self.size = self.wnode.window.size_ms
        self.windows_for = self.wnode.window.windows_for
        if type(self.wnode.window) is TumblingWindows:
            self._open_windows = self._open_tumbling  # type: ignore[method-assign]

    def on_batch(self, recs: list[Rec]) -> None:
        if self.final:
            self._final_batch(recs)
            return
        node, store = self.wnode, self.store
        init, add, grace = node.initializer, node.adder, self.grace
        get, put, replace = store.get_stamped, store.put, store.replace
        out: list[Rec] = []
        for rec, _before, now in self.accepted(recs):
            key, value, ts = rec.key, rec.value, rec.ts
            open_ = self._open_windows(rec, now, grace)
            if not open_:
                continue
            updates = []
            store.begin()
            try:
                for start, end in open_:
                    # a fresh copy: the output keeps its own
                    current, newest = get(key, start, _NONE)
                    # the result's timestamp: the window's largest record timestamp
                    stamp = ts if newest is None or newest < ts else newest
                    if current is _NONE:
                        agg = add(init(), value)
                        put(key, start, agg, stamp)
                    else:
                        agg = add(current, value)
                        replace(key, start, agg, stamp)
                    updates.append(self.output(key, agg, start, end, stamp, rec.raw))
            except Exception as exc:  # noqa: BLE001 - user code; the record goes to the DLQ
                store.rollback()
                self.fail(rec, exc)
                continue
            store.release()
            out.extend(updates)
        out.extend(self.close_until(self.now))
        self.emit(out)

    def _open_windows(self, rec: Rec, now: int, grace: int) -> Sequence[tuple[int, int]]:
        """The record's windows still open at ``now``; none: the record is late (reported)."""
        windows = self.windows_for(rec.ts)
        open_ = [(s, e) for s, e in windows if now < e + grace]
        if not open_ and windows:
            self.late(rec, *windows[-1])
        return open_

    def _open_tumbling(self, rec: Rec, now: int, grace: int) -> tuple[tuple[int, int], ...]:
        """:meth:`_open_windows` for tumbling windows: the one window, computed inline (this
        runs once per record)."""
        ts = rec.ts
        if ts < 0:
            return ()
        start = ts - ts % self.size
        end = start + self.size
        if now < end + grace:
            return ((start, end),)
        self.late(rec, start, end)
        return ()

    def _final_batch(self, recs: list[Rec]) -> None:
        """Final mode: nothing is emitted per record, so each window's aggregate stays the
        adder's object for the whole batch and is encoded once at its end (one JSON encode per
        window and batch instead of per record). The store keeps the state as of the batch
        start; a record whose adder fails is undone by replaying the window's accepted records
        of this batch from that state (an adder may have changed the object in place)."""
        node, store = self.wnode, self.store
        init, add, grace = node.initializer, node.adder, self.grace
        objects: dict[tuple[Any, int], Any] = {}
        existed: dict[tuple[Any, int], bool] = {}
        stored_ts: dict[tuple[Any, int], int | None] = {}
        applied: dict[tuple[Any, int], list[Rec]] = {}
        # (what accepted() and _open_tumbling() do, inline: this loop runs once per record)
        ctx, name = self.ctx, node.name
        clock = ctx.batch_clock()
        self.now = ctx.stream_time
        size = self.size if type(node.window) is TumblingWindows else 0
        for rec in recs:
            key, value = rec.key, rec.value
            if key is None or value is None:
                ctx.count_dropped(name, "null-key" if key is None else "null-value")
                continue
            now = self.now = clock(rec)
            open_: Sequence[tuple[int, int]]
            if size:
                ts = rec.ts
                if ts < 0:
                    continue
                start = ts - ts % size
                if now >= start + size + grace:
                    self.late(rec, start, start + size)
                    continue
                open_ = ((start, start + size),)
            else:
                open_ = self._open_windows(rec, now, grace)
            done: list[tuple[Any, int]] = []
            try:
                for start, _end in open_:
                    wk = (key, start)
                    agg = objects.get(wk, _NONE)
                    if agg is _NONE:
                        agg, stored_ts[wk] = store.get_stamped(key, start, _NONE)
                        existed[wk] = agg is not _NONE
                        if agg is _NONE:
                            agg = init()
                    done.append(wk)
                    objects[wk] = add(agg, value)
            except Exception as exc:  # noqa: BLE001 - user code; the record goes to the DLQ
                for wk in done:
                    try:
                        objects[wk] = self._replay(wk, applied.get(wk, ()))
                    except Exception:  # noqa: BLE001 - an adder that fails on a replay of
                        # records it accepted: keep the window as stored (batch start) rather
                        # than guess; only a non-deterministic adder gets here.
                        objects.pop(wk, None)
                        applied.pop(wk, None)
                self.fail(rec, exc)
                continue
            for wk in done:
                applied.setdefault(wk, []).append(rec)
        for wk, agg in objects.items():
            self._store_final(wk, agg, existed[wk], stored_ts[wk], applied.get(wk, []))
        self.emit(self.close_until(self.now))

    def _replay(self, wk: tuple[Any, int], recs: Any) -> Any:
        """The window's aggregate from the stored state plus ``recs`` (this batch's accepted
        records), recomputed: an adder that failed may have changed the object in place."""
        node = self.wnode
        agg = self.store.get(wk[0], wk[1], _NONE)
        agg = node.initializer() if agg is _NONE else agg
        for rec in recs:
            agg = node.adder(agg, rec.value)
        return agg

    def _store_final(self, wk: tuple[Any, int], agg: Any, existed: bool, stored_ts: int | None,
                     recs: list[Rec]) -> None:
        key, start = wk
        store, node = self.store, self.wnode
        if not recs:  # every record of this batch failed: the stored window stays as it is
            return
        newest = max(rec.ts for rec in recs)
        if stored_ts is not None and stored_ts > newest:
            newest = stored_ts
        try:
            (store.replace if existed else store.put)(key, start, agg, newest)
            return
        except Exception:  # noqa: BLE001 - the aggregate cannot be stored: find the record(s)
            pass
        # Rare path: apply and store record by record, so exactly the records whose aggregate
        # cannot be stored go to the dead letters (each step starts from a fresh decode).
        for rec in recs:
            current, ts = store.get_stamped(key, start, _NONE)
            ts = rec.ts if ts is None or ts < rec.ts else ts
            try:
                new = node.adder(node.initializer() if current is _NONE else current, rec.value)
                (store.put if current is _NONE else store.replace)(key, start, new, ts)
            except Exception as exc:  # noqa: BLE001
                self.fail(rec, exc)

    def close_until(self, now: int) -> list[Rec]:
        """Windows with ``start + size + grace <= now`` close: emitted (final mode), deleted."""
        last_start = now - self.size - self.grace
        if last_start < 0:
            return []
        closed = sorted(self.store.fetch_all_stamped(self.closed_below, last_start),
                        key=lambda r: (r[1], str(r[0])))
        self.closed_below = last_start + 1
        out = []
        for key, start, agg, newest in closed:
            end = start + self.size
            if self.final:
                # the window's largest record timestamp (a window stored without one: the
                # largest timestamp it can hold)
                out.append(self.closed_output(key, agg, start, end,
                                              end - 1 if newest is None else newest,
                                              end + self.grace))
            self.store.delete(key, start)
        return out


class SessionWindowAggregateProc(_WindowAggregateProc):
    """Session windows ``[first, last]`` per key, merged within ``gap``; closed when stream time
    passes ``end + gap + grace`` (Kafka Streams' ``KStreamSessionWindowAggregate``). Results
    and retractions are stamped with their session's end."""

    def __init__(self, node: n.Node, ctx: ProcessorContext) -> None:
        super().__init__(node, ctx)
        self.store = ctx.typed_store(self.wnode.table, SessionStoreView)
        self.gap = self.wnode.window.gap_ms
        if self.wnode.merger is None:  # the DSL requires one for session windows
            raise TypeError(f"{self.wnode.name}: session windows need a merger")
        self.merge = self.wnode.merger

    def on_batch(self, recs: list[Rec]) -> None:
        node, store = self.wnode, self.store
        init, add, merge = node.initializer, node.adder, self.merge
        grace, gap, update = self.grace, self.gap, not self.final
        out: list[Rec] = []
        for rec, before, now in self.accepted(recs):
            key, value, ts = rec.key, rec.value, rec.ts
            # A session closed by an earlier record (in this batch it is deleted only at the end
            # of it) is final: never merged into, whatever the batch boundaries. A session still
            # open before this record may absorb it; the merged session's end decides lateness:
            # late when it is closed already (end < stream time - gap - grace), as Kafka.
            sessions = [(b, a) for b, a in store.fetch_sessions(key, ts - gap, ts + gap)
                        if before <= b[1] + gap + grace]
            start = min([s for (s, _e), _a in sessions] + [ts])
            end = max([e for (_s, e), _a in sessions] + [ts])
            if end < now - gap - grace:
                self.late(rec, start, end)
                continue
            emitted = []
            store.begin()
            try:
                # Kafka Streams' order: the initializer, merged with each session (by start),
                # then the record added.
                agg = init()
                for _session_bounds, old in sessions:
                    agg = merge(agg, old)
                agg = add(agg, value)
                for (s, e), _old in sessions:
                    if (s, e) != (start, end):
                        store.delete(key, s, e)
                        if update:
                            emitted.append(self.retraction(key, s, e, e, rec.raw))
                store.put(key, start, end, agg)
                if update:
                    emitted.append(self.output(key, agg, start, end, end, rec.raw))
            except Exception as exc:  # noqa: BLE001 - user code; the record goes to the DLQ
                store.rollback()
                self.fail(rec, exc)
                continue
            store.release()
            out.extend(emitted)
        out.extend(self.close_until(self.now))
        self.emit(out)

    def close_until(self, now: int) -> list[Rec]:
        """Sessions with ``end + gap + grace < now`` close: no on-time record (``ts >= now -
        grace``) can merge into them any more. Emitted (final mode), deleted."""
        last_end = now - self.gap - self.grace - 1
        closed = sorted(self.store.fetch_all(self.closed_below, last_end),
                        key=lambda r: (r[2], str(r[0])))
        self.closed_below = last_end + 1
        out = []
        for key, start, end, agg in closed:
            if self.final:
                out.append(self.closed_output(key, agg, start, end, end,
                                              end + self.gap + self.grace + 1))
            self.store.delete(key, start, end)
        return out
