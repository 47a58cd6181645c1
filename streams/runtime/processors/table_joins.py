"""Stream-table and stream-global-table joins (semantics in :mod:`streams.dsl.table_joins`).

Both only read their table: the table's own source (or aggregation) writes it, the global
table runtime (:mod:`streams.runtime.global_tables`) keeps a global table current. A record
whose joiner or key selector raises, or returns the wrong shape, is a dead letter; nothing is
emitted for it.
"""

from __future__ import annotations

import inspect
from decimal import Decimal
from types import AsyncGeneratorType, GeneratorType
from typing import Any

from ...dsl.nodes import GlobalTableJoinNode, StreamTableJoinNode
from .base import Processor, Rec, ShapeError, what

__all__ = ["GlobalTableJoinProc", "StreamTableJoinProc"]

# Results that are certainly values (checked by exact type first: the common case costs one
# set lookup per record).
_PLAIN_VALUES = frozenset({dict, list, str, int, float, bool, tuple, bytes, Decimal})
_KEY_TYPES = (str, bytes, int, tuple, list)


def _joined(result: Any, node_name: str) -> Any:
    """``result`` if it can be a record value; a coroutine or generator (an ``async def`` or a
    generator function passed as joiner) is a ShapeError."""
    if result is None or type(result) in _PLAIN_VALUES:
        return result
    if inspect.isawaitable(result) or isinstance(result, (GeneratorType, AsyncGeneratorType)):
        close = getattr(result, "close", None)
        if close is not None:
            close()  # no "never awaited" warning on top of the dead letter
        raise ShapeError(f"{node_name}: joiner must return the joined value, got {what(result)} "
                         "(a coroutine or generator: joiners are plain functions)")
    return result


def _foreign_key(key: Any, node_name: str) -> Any:
    if type(key) in _KEY_TYPES and type(key) is not bool:
        return key
    raise ShapeError(f"{node_name}: key_selector must return a key of the global table (str, "
                     f"bytes, int or a tuple of them), got {what(key)}")


class StreamTableJoinProc(Processor):
    """Each stream record looks up its key's current row in the task's copy of the table."""

    def on_batch(self, recs: list[Rec]) -> None:
        node: StreamTableJoinNode = self.node  # type: ignore[assignment]
        table = self.ctx.store(node.table)
        key_bytes, get = table.key_bytes, table.get_by_bytes
        joiner, inner, name = node.joiner, node.how == "inner", node.name
        count_dropped = self.ctx.count_dropped
        out: list[Rec] = []
        append = out.append
        for rec in recs:
            key, value = rec.key, rec.value
            if key is None or value is None:
                count_dropped(name, "null-key" if key is None else "null-value")
                continue
            try:
                row = get(key_bytes(key))
                if row is None and inner:
                    continue
                joined = joiner(value, row)
                if joined is not None and type(joined) not in _PLAIN_VALUES:
                    joined = _joined(joined, name)
            except Exception as exc:  # noqa: BLE001 - user code: the record goes to the DLQ
                self.fail(rec, exc)
                continue
            append(Rec(key, joined, rec.ts, rec.raw))
        self.emit(out)


class GlobalTableJoinProc(Processor):
    """Each stream record looks up ``key_selector(key, value)`` in the worker's global table."""

    def on_batch(self, recs: list[Rec]) -> None:
        node: GlobalTableJoinNode = self.node  # type: ignore[assignment]
        table = self.ctx.global_table(node.table)
        key_bytes, get = table.key_bytes, table.get_by_bytes
        select, joiner, inner, name = node.key_selector, node.joiner, node.how == "inner", node.name
        count_dropped = self.ctx.count_dropped
        out: list[Rec] = []
        append = out.append
        for rec in recs:
            value = rec.value
            if value is None:
                count_dropped(name, "null-value")
                continue
            try:
                fk = select(rec.key, value)
                if fk is None:
                    joined = row = _NO_KEY
                else:
                    if type(fk) is not str:
                        fk = _foreign_key(fk, name)
                    row = get(key_bytes(fk))
                    if row is None and inner:
                        continue
                    joined = joiner(value, row)
                    if joined is not None and type(joined) not in _PLAIN_VALUES:
                        joined = _joined(joined, name)
            except Exception as exc:  # noqa: BLE001 - user code: the record goes to the DLQ
                self.fail(rec, exc)
                continue
            if joined is _NO_KEY:
                count_dropped(name, "null-foreign-key")
                continue
            append(Rec(rec.key, joined, rec.ts, rec.raw))
        self.emit(out)


_NO_KEY: Any = object()
