"""Record-at-a-time operators without state: map, filter, flat_map, select_key, peek, branch.

Each runs its user function in a :meth:`Processor.resuming` loop: a record whose function raises
goes to the dead letters and the batch goes on with the next record.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .base import Processor, Rec, ShapeError, what

__all__ = ["BranchProc", "FilterProc", "FlatMapProc", "MapProc", "PeekProc", "SelectKeyProc"]


class MapProc(Processor):
    def on_batch(self, recs: list[Rec]) -> None:
        self.emit(self.resuming(recs, self._loop, []))

    def _loop(self, it: Iterator[Rec], out: list[Rec]) -> None:
        fn, append = self.node.fn, out.append  # type: ignore[attr-defined]
        for r in it:
            append(Rec(r.key, fn(r.value), r.ts, r.raw))


class FilterProc(Processor):
    def on_batch(self, recs: list[Rec]) -> None:
        self.emit(self.resuming(recs, self._loop, []))

    def _loop(self, it: Iterator[Rec], out: list[Rec]) -> None:
        pred, append = self.node.predicate, out.append  # type: ignore[attr-defined]
        for r in it:
            if pred(r.value):
                append(r)


class FlatMapProc(Processor):
    def on_batch(self, recs: list[Rec]) -> None:
        self.emit(self.resuming(recs, self._loop, []))

    def _loop(self, it: Iterator[Rec], out: list[Rec]) -> None:
        fn, name, append = self.node.fn, self.node.name, out.append  # type: ignore[attr-defined]
        for r in it:
            values = fn(r.value)
            cls = type(values)
            if cls is not list and cls is not tuple:
                # check the shape, and run a generator to its end before anything of this
                # record is emitted (all or nothing per record)
                values = _flat_values(values, name)
            key, ts, raw = r.key, r.ts, r.raw
            for v in values:
                append(Rec(key, v, ts, raw))


def _flat_values(values: Any, node_name: str) -> list[Any]:
    """``values`` as a list, if it is a collection of values; a str, bytes or mapping would be
    iterated by character, byte or key, which is never what a flat_map means."""
    if isinstance(values, (str, bytes, bytearray, memoryview, Mapping)):
        raise ShapeError(f"{node_name}: flat_map must return an iterable of values (a list, "
                         f"tuple, generator...), got {what(values)}")
    try:
        it = iter(values)
    except TypeError:
        raise ShapeError(f"{node_name}: flat_map must return an iterable of values, got "
                         f"{what(values)} (not iterable)") from None
    return list(it)


class SelectKeyProc(Processor):
    def on_batch(self, recs: list[Rec]) -> None:
        self.emit(self.resuming(recs, self._loop, []))

    def _loop(self, it: Iterator[Rec], out: list[Rec]) -> None:
        fn, append = self.node.fn, out.append  # type: ignore[attr-defined]
        for r in it:
            v = r.value
            append(Rec(fn(v), v, r.ts, r.raw))


class PeekProc(Processor):
    def on_batch(self, recs: list[Rec]) -> None:
        self.emit(self.resuming(recs, self._loop, []))

    def _loop(self, it: Iterator[Rec], out: list[Rec]) -> None:
        fn, append = self.node.fn, out.append  # type: ignore[attr-defined]
        for r in it:
            fn(r.key, r.value)
            append(r)


class BranchProc(Processor):
    """Each record goes to the child of its first true predicate (None: the default branch);
    records matching none are counted as dropped ("no-branch")."""

    def on_batch(self, recs: list[Rec]) -> None:
        # one bucket per branch, plus one for the records matching none
        preds = self.node.predicates  # type: ignore[attr-defined]
        empty: list[list[Rec]] = [[] for _ in range(len(preds) + 1)]
        buckets = self.resuming(recs, self._loop, empty)
        unmatched = len(buckets[-1])
        if unmatched:
            count, name = self.ctx.count_dropped, self.node.name
            for _ in range(unmatched):
                count(name, "no-branch")
        for child, bucket in zip(self.children, buckets, strict=False):  # last: no branch
            if bucket:
                child.on_batch(bucket)

    def _loop(self, it: Iterator[Rec], buckets: list[list[Rec]]) -> None:
        preds = self.node.predicates  # type: ignore[attr-defined]
        routes = [(pred, bucket.append) for pred, bucket in zip(preds, buckets, strict=False)]
        unmatched = buckets[-1].append
        for r in it:
            v = r.value
            for pred, append in routes:
                if pred is None or pred(v):
                    append(r)
                    break
            else:
                unmatched(r)
