"""Operators with state in the task's stores: aggregate, table source, process.

Each record's store writes happen only once its user function succeeded (or are rolled back
to a per-record savepoint), so a record that goes to the dead letters leaves no effect.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ...dsl import nodes as n
from ...state.store_view import StoreView, TableView
from .base import Processor, Rec, ShapeError, what

__all__ = ["AggregateProc", "ProcessProc", "TableSourceProc"]

_NONE = object()


class AggregateProc(Processor):
    """``agg = adder(agg, value)`` per record; emits (key, new aggregate).

    Records with a null key or a null value (tombstones) are skipped and counted as dropped, as
    in Kafka Streams. The table is written only after the adder returned, and the write itself
    serializes (and size-checks) the value, so a failing record leaves no effect.
    """

    def on_batch(self, recs: list[Rec]) -> None:
        node: n.AggregateNode = self.node  # type: ignore[assignment]
        table = self.ctx.store(node.table)
        key_bytes, get, put = table.key_bytes, table.get_by_bytes, table.put_by_bytes
        init, add = node.initializer, node.adder
        out: list[Rec] = []
        append = out.append
        for rec in recs:
            key, value = rec.key, rec.value
            if key is None or value is None:
                self.ctx.count_dropped(node.name, "null-key" if key is None else "null-value")
                continue
            try:
                kb = key_bytes(key)
                current = get(kb, _NONE)
                new = add(init() if current is _NONE else current, value)
                put(kb, new)
            except Exception as exc:  # noqa: BLE001
                self.fail(rec, exc)
                continue
            # ``new`` is not shared with the table (it holds bytes; ``get`` decodes afresh), so
            # an adder mutating the aggregate in place cannot change this update afterwards.
            append(Rec(key, new, rec.ts, rec.raw))
        self.emit(out)


class TableSourceProc(Processor):
    """Materializes a topic: latest value per key, a null value deletes. A record without a
    key cannot be stored: a dead letter ("null-key")."""

    def on_batch(self, recs: list[Rec]) -> None:
        table = self.ctx.typed_store(self.node.table, TableView)  # type: ignore[attr-defined]
        put = table.put  # put(key, None) deletes
        out: list[Rec] = []
        append = out.append
        for rec in recs:
            if rec.key is None:
                self.ctx.dead_letter(rec.raw, f"table record without key (in {self.node.name})",
                                     reason="null-key", node=self.node.name)
                continue
            try:
                put(rec.key, rec.value)
            except Exception as exc:  # noqa: BLE001 - e.g. a value too large for the changelog
                self.fail(rec, exc)
                continue
            append(rec)
        self.emit(out)


class ProcessProc(Processor):
    """``fn(key, value, stores)`` per record, all or nothing: the result is consumed and
    checked inside a savepoint of every store the node uses, so a record that raises (in the
    function, in its generator, or by returning a wrong shape) leaves no store write behind and
    emits nothing."""

    def on_batch(self, recs: list[Rec]) -> None:
        node: n.ProcessNode = self.node  # type: ignore[assignment]
        fn, name = node.fn, node.name
        stores = {s: self.ctx.store(s) for s in node.stores}
        views: list[StoreView] = list(stores.values())
        out: list[Rec] = []
        append = out.append
        for rec in recs:
            for view in views:
                view.begin()
            mark = len(out)
            try:
                result = fn(rec.key, rec.value, stores)
                if result is not None:
                    ts, raw = rec.ts, rec.raw
                    for item in _pairs(result, name):
                        if not isinstance(item, tuple) or len(item) != 2:
                            raise ShapeError(_pairs_error(name, result, item))
                        append(Rec(item[0], item[1], ts, raw))
            except Exception as exc:  # noqa: BLE001
                del out[mark:]
                for view in views:
                    view.rollback()
                self.fail(rec, exc)
                continue
            for view in views:
                view.release()
        self.emit(out)


def _pairs(result: Any, node_name: str) -> Iterable[Any]:
    """An iterator over ``result`` if it can be a collection of (key, value) pairs."""
    if isinstance(result, (str, bytes, bytearray, memoryview, Mapping)):
        raise ShapeError(_pairs_error(node_name, result, None))
    try:
        return iter(result)
    except TypeError:
        raise ShapeError(_pairs_error(node_name, result, None) + " (not iterable)") from None


def _pairs_error(node_name: str, result: Any, item: Any) -> str:
    text = (f"{node_name}: process() must return None or an iterable of (key, value) tuples, "
            f"got {what(result)}")
    if item is not None:
        text += f" containing {what(item)}"
        if isinstance(result, tuple) and len(result) == 2:
            text += "; return one pair as [(key, value)]"
    return text
