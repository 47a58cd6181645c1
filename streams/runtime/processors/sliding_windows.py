"""Kafka Streams' record-aligned sliding windows (semantics in :mod:`streams.dsl.window_ops`).

The aggregation keeps each accepted record in a buffer store until no window can need it any
more, so a window created by a late-arriving record still folds every earlier record it covers.
"""

from __future__ import annotations

from typing import Any

from ...dsl import nodes as n
from ...state.window_store import JoinBufferView, WindowStoreView
from ..context import ProcessorContext
from .base import Rec
from .windowed import _NONE, _WindowAggregateProc

__all__ = ["SlidingWindowAggregateProc", "sliding_buffer"]


class SlidingWindowAggregateProc(_WindowAggregateProc):
    """Kafka Streams' record-aligned sliding windows ``[start, start + d]`` (inclusive).

    The windows are the ones Kafka Streams creates: for each record at ``ts`` its *left* window
    ``[ts - d, ts]`` (``[0, d]`` for ``ts < d``), its *right* window ``[ts + 1, ts + 1 + d]``
    once a later record falls in it, and the previous record's right window when this record
    falls in it. Each window aggregates every accepted record within its bounds, in timestamp
    order (a window created by a late-arriving record includes the earlier records it covers:
    the records are kept in a buffer store ``<name>-records`` until no new window can need
    them). A window closes when stream time > end + grace; a record is late when even its right
    window is closed (stream time >= ts + 1 + d + grace) and otherwise updates the open windows.
    """

    def __init__(self, node: n.Node, ctx: ProcessorContext) -> None:
        super().__init__(node, ctx)
        self.store = ctx.typed_store(self.wnode.table, WindowStoreView)
        self.d = self.wnode.window.max_difference_ms
        self.records = ctx.typed_store(sliding_buffer(self.wnode.table), JoinBufferView)
        self.expired_below: int | None = None  # buffered records below it are expired

    def _fold(self, key: Any, start: int, end: int) -> tuple[Any, int]:
        """(aggregate, largest timestamp) of the buffered records of ``key`` in [start, end]
        (never empty: called for windows that hold the current record)."""
        init, add = self.wnode.initializer, self.wnode.adder
        agg, newest = init(), start
        for ts, value in self.records.fetch(key, start, end):
            agg, newest = add(agg, value), ts
        return agg, newest

    def on_batch(self, recs: list[Rec]) -> None:
        node, store, records = self.wnode, self.store, self.records
        add, grace, d, update = node.adder, self.grace, self.d, not self.final
        # A record updates every window that contains it (about as many as records within d).
        # In final mode those aggregates stay objects for the whole batch and are encoded once
        # at its end; a failing record's windows are recomputed from the record buffer, which
        # holds exactly the accepted records. Update mode emits every state, so it encodes each.
        objects: dict[tuple[Any, int], Any] = {}
        stamps: dict[tuple[Any, int], int] = {}  # the largest record timestamp of each
        touched_by: dict[tuple[Any, int], Rec] = {}
        out: list[Rec] = []
        for rec, _before, now in self.accepted(recs):
            key, value, ts = rec.key, rec.value, rec.ts
            close_before = now - grace  # a window is open while its end >= this
            if ts + 1 + d < close_before + 1:
                self.late(rec, ts + 1, ts + 1 + d)
                continue
            emitted: list[Rec] = []
            touched: list[tuple[Any, int]] = []
            store.begin()
            records.begin()
            try:
                # Windows that contain ts, or whose existence decides what to create: their
                # starts are in [ts - d, ts + 1].
                existing = set(store.starts(key, max(0, ts - d), ts + 1))
                for start in sorted(existing):
                    if start <= ts <= start + d and start + d >= close_before:
                        wk = (key, start)
                        touched.append(wk)
                        agg = objects.get(wk, _NONE)
                        if agg is _NONE:
                            agg, newest = store.get_stamped(key, start)
                        else:
                            newest = stamps[wk]
                        agg = add(agg, value)
                        # a window stored without its timestamp: the record's (as Kafka for
                        # a window without one)
                        newest = ts if newest is None or newest < ts else newest
                        if update:
                            store.replace(key, start, agg, newest)
                            emitted.append(self.output(key, agg, start, start + d, newest,
                                                       rec.raw))
                        else:
                            objects[wk], stamps[wk] = agg, newest
                            touched_by[wk] = rec
                earlier = records.times(key, ts - d - 1, ts - 1)
                records.add(key, ts, value)
                created = []
                if earlier:
                    prev = earlier[-1]
                    if prev + 1 not in existing and prev + 1 + d >= ts:
                        created.append(prev + 1)
                left = max(0, ts - d)
                if left not in existing:
                    created.append(left)
                if ts + 1 not in existing and records.times(key, ts + 1, ts + 1 + d):
                    created.append(ts + 1)
                for start in sorted(set(created)):
                    if start + d >= close_before:
                        agg, newest = self._fold(key, start, start + d)
                        store.put(key, start, agg, newest)
                        objects.pop((key, start), None)
                        if update:
                            emitted.append(self.output(key, agg, start, start + d, newest,
                                                       rec.raw))
            except Exception as exc:  # noqa: BLE001 - user code; the record goes to the DLQ
                store.rollback()
                records.rollback()
                for wk in touched:  # maybe changed in place: rebuild from the accepted records
                    if wk in objects:
                        objects[wk], stamps[wk] = self._fold(wk[0], wk[1], wk[1] + d)
                self.fail(rec, exc)
                continue
            store.release()
            records.release()
            out.extend(sorted(emitted, key=lambda r: r.value["window_start"]))
        for (key, start), agg in objects.items():
            try:
                store.replace(key, start, agg, stamps[(key, start)])
            except Exception as exc:  # noqa: BLE001 - an aggregate that cannot be stored
                self.fail(touched_by[(key, start)], exc)
        out.extend(self.close_until(self.now))
        self.emit(out)

    def close_until(self, now: int) -> list[Rec]:
        """Windows with ``end + grace < now`` close: emitted (final mode), deleted; buffered
        records no new window can include (older than ``now - 2d - grace``) expire."""
        d = self.d
        last_start = now - self.grace - 1 - d
        out = []
        if last_start >= 0:
            closed = sorted(self.store.fetch_all_stamped(self.closed_below, last_start),
                            key=lambda r: (r[1] + d, str(r[0])))
            self.closed_below = last_start + 1
            for key, start, agg, newest in closed:
                if self.final:  # stored without a timestamp: the largest the window can hold
                    out.append(self.closed_output(key, agg, start, start + d,
                                                  start + d if newest is None else newest,
                                                  start + d + self.grace + 1))
                self.store.delete(key, start)
        # (a record below this is late, so none is buffered there again)
        expire = now - 2 * d - self.grace - 1
        self.records.expire_before(expire, self.expired_below)
        if self.expired_below is None or expire > self.expired_below:
            self.expired_below = expire
        return out


def sliding_buffer(table: str) -> str:
    """The store that keeps a sliding-window aggregation's records."""
    return f"{table}-records"
