"""Batch processors: the compiled form of each DSL node.

Each processor takes a *list* of records and hands a list to its children: one Python call per
node per batch instead of per record, and list comprehensions on the happy path. When a user
function raises, that node re-runs the batch record by record and sends only the failing records
to the dead letters (the comprehension built nothing downstream yet, so nothing is emitted twice).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..dsl import nodes as n
from ..dsl.serdes import SerdeError

if TYPE_CHECKING:
    from .task import Task


class Rec:
    """One record in flight. ``raw`` is the input record it derives from (for dead letters and
    for the source position that repartitioned records carry)."""

    __slots__ = ("key", "value", "ts", "raw")

    def __init__(self, key: Any, value: Any, ts: int, raw: Any) -> None:
        self.key = key
        self.value = value
        self.ts = ts
        self.raw = raw

    def __repr__(self) -> str:
        return f"Rec(key={self.key!r}, value={self.value!r}, ts={self.ts})"


ORIGIN_HEADER = "streams-origin"
# Below the producer's max_request_size (1 MiB): a larger output would fail the whole commit,
# so it becomes a dead letter instead.
MAX_RECORD_BYTES = 1_000_000


class Processor:
    def __init__(self, node: n.Node, task: Task) -> None:
        self.node = node
        self.task = task
        self.children: list[Processor] = []

    def emit(self, recs: list[Rec]) -> None:
        if recs:
            for child in self.children:
                child.process(recs)

    def process(self, recs: list[Rec]) -> None:
        raise NotImplementedError

    def fail(self, rec: Rec, exc: BaseException) -> None:
        self.task.dead_letter(rec.raw, f"{type(exc).__name__}: {exc} (in {self.node.name})",
                              reason="processing")


class _PerRecord(Processor):
    """Helper: run ``one(rec)`` for each record, routing failures to the dead letters."""

    def _slow(self, recs: list[Rec], one: Callable[[Rec], Any]) -> list[Any]:
        out = []
        for rec in recs:
            try:
                out.append(one(rec))
            except Exception as exc:  # noqa: BLE001 - user code; the record goes to the DLQ
                self.fail(rec, exc)
                out.append(_DROP)
        return out


_DROP = object()


class MapProc(_PerRecord):
    def process(self, recs: list[Rec]) -> None:
        fn = self.node.fn  # type: ignore[attr-defined]
        try:
            out = [Rec(r.key, fn(r.value), r.ts, r.raw) for r in recs]
        except Exception:  # noqa: BLE001
            out = [x for x in self._slow(recs, lambda r: Rec(r.key, fn(r.value), r.ts, r.raw))
                   if x is not _DROP]
        self.emit(out)


class FilterProc(_PerRecord):
    def process(self, recs: list[Rec]) -> None:
        pred = self.node.predicate  # type: ignore[attr-defined]
        try:
            out = [r for r in recs if pred(r.value)]
        except Exception:  # noqa: BLE001
            keep = self._slow(recs, lambda r: bool(pred(r.value)))
            out = [r for r, k in zip(recs, keep) if k is True]
        self.emit(out)


class FlatMapProc(_PerRecord):
    def process(self, recs: list[Rec]) -> None:
        fn = self.node.fn  # type: ignore[attr-defined]
        try:
            out = [Rec(r.key, v, r.ts, r.raw) for r in recs for v in fn(r.value)]
        except Exception:  # noqa: BLE001
            out = []
            for group in self._slow(recs, lambda r: [Rec(r.key, v, r.ts, r.raw) for v in fn(r.value)]):
                if group is not _DROP:
                    out.extend(group)
        self.emit(out)


class SelectKeyProc(_PerRecord):
    def process(self, recs: list[Rec]) -> None:
        fn = self.node.fn  # type: ignore[attr-defined]
        try:
            out = [Rec(fn(r.value), r.value, r.ts, r.raw) for r in recs]
        except Exception:  # noqa: BLE001
            out = [x for x in self._slow(recs, lambda r: Rec(fn(r.value), r.value, r.ts, r.raw))
                   if x is not _DROP]
        self.emit(out)


class PeekProc(_PerRecord):
    def process(self, recs: list[Rec]) -> None:
        fn = self.node.fn  # type: ignore[attr-defined]
        ok = self._slow(recs, lambda r: fn(r.key, r.value))
        self.emit([r for r, x in zip(recs, ok) if x is not _DROP])


class BranchProc(_PerRecord):
    def process(self, recs: list[Rec]) -> None:
        preds = self.node.predicates  # type: ignore[attr-defined]
        buckets: list[list[Rec]] = [[] for _ in preds]

        def which(rec: Rec) -> int:
            for i, pred in enumerate(preds):
                if pred is None or pred(rec.value):
                    return i
            return -1

        for rec, i in zip(recs, self._slow(recs, which)):
            if i is not _DROP and i >= 0:
                buckets[i].append(rec)
        for child, bucket in zip(self.children, buckets):
            if bucket:
                child.process(bucket)


class SinkProc(Processor):
    def __init__(self, node: n.Node, task: Task) -> None:
        super().__init__(node, task)
        self._last_origin: tuple[str, int, int] | None = None
        self._index = 0

    def process(self, recs: list[Rec]) -> None:
        node: n.SinkNode = self.node  # type: ignore[assignment]
        ks, vs = node.key_serde.serialize, node.value_serde.serialize
        produce = self.task.produce
        for rec in recs:
            try:
                key, value = ks(rec.key), vs(rec.value)
                size = len(key or b"") + len(value or b"")
                if size > MAX_RECORD_BYTES:
                    raise ValueError(f"output record of {size} bytes exceeds {MAX_RECORD_BYTES}")
            except Exception as exc:  # noqa: BLE001
                self.fail(rec, exc)
                continue
            headers = None
            if node.internal:
                headers = [(ORIGIN_HEADER, self._origin(rec))]
            produce(node.topic, key, value, rec.ts, headers)

    def _origin(self, rec: Rec) -> bytes:
        """``topic:partition:offset:index`` of the input record; index numbers the records one
        input fans out to, so a replay is recognised record by record downstream."""
        raw = rec.raw
        origin = (raw.topic, raw.partition, raw.offset)
        if origin == self._last_origin:
            self._index += 1
        else:
            self._last_origin, self._index = origin, 0
        return f"{origin[0]}:{origin[1]}:{origin[2]}:{self._index}".encode()


class AggregateProc(Processor):
    def process(self, recs: list[Rec]) -> None:
        node: n.AggregateNode = self.node  # type: ignore[assignment]
        table = self.task.table(node.table)
        init, add = node.initializer, node.adder
        out = []
        for rec in recs:
            try:
                current = table.get(rec.key, _NONE)
                new = add(init() if current is _NONE else current, rec.value)
                table.put(rec.key, new)
            except Exception as exc:  # noqa: BLE001
                self.fail(rec, exc)
                continue
            out.append(Rec(rec.key, new, rec.ts, rec.raw))
        self.emit(out)


_NONE = object()


class TableSourceProc(Processor):
    def process(self, recs: list[Rec]) -> None:
        table = self.task.table(self.node.table)  # type: ignore[attr-defined]
        for rec in recs:
            if rec.value is None:
                table.delete(rec.key)
            else:
                table.put(rec.key, rec.value)
        self.emit(recs)


class ProcessProc(Processor):
    def process(self, recs: list[Rec]) -> None:
        node: n.ProcessNode = self.node  # type: ignore[assignment]
        stores = {name: self.task.table(name) for name in node.stores}
        out = []
        for rec in recs:
            try:
                result = node.fn(rec.key, rec.value, stores)
                if result:
                    out.extend(Rec(k, v, rec.ts, rec.raw) for k, v in result)
            except Exception as exc:  # noqa: BLE001
                self.fail(rec, exc)
        self.emit(out)


class SourceProc(Processor):
    """Decodes raw consumer records into ``Rec``s; undecodable ones become dead letters."""

    def __init__(self, node: n.Node, task: Task) -> None:
        super().__init__(node, task)
        self._timestamp = timestamp_extractor(node.timestamp)  # type: ignore[attr-defined]

    def process_raw(self, raws: list[Any]) -> None:
        node: n.SourceNode = self.node  # type: ignore[assignment]
        kd, vd, timestamp = node.key_serde.deserialize, node.value_serde.deserialize, self._timestamp
        out = []
        task = self.task
        if node.internal:
            raws = task.skip_replayed(node.topic, raws)
        for raw in raws:
            try:
                value = vd(raw.value)
                out.append(Rec(kd(raw.key), value, timestamp(value, raw), raw))
            except SerdeError as exc:
                task.dead_letter(raw, str(exc), reason="decode")
        if out:
            task.observe_time(max(r.ts for r in out))
        self.emit(out)

    def process(self, recs: list[Rec]) -> None:  # pragma: no cover - sources take raw input
        self.emit(recs)


def timestamp_extractor(spec: str | Callable[[Any], int] | None) -> Callable[[Any, Any], int]:
    """Build, once per source, ``f(value, raw) -> epoch ms``: the record timestamp (spec None),
    a function of the value, or a field of a dict or Record. No usable number is a SerdeError."""
    if spec is None:
        return lambda _value, raw: raw.timestamp

    def checked(ts: Any, what: str) -> int:
        if isinstance(ts, bool) or not isinstance(ts, (int, float)):
            raise SerdeError(what)
        return int(ts)

    if callable(spec):
        def from_function(value: Any, _raw: Any) -> int:
            try:
                ts = spec(value)
            except Exception as exc:  # noqa: BLE001 - user code
                raise SerdeError(f"timestamp function failed: {exc}") from None
            return checked(ts, "timestamp function returned no number")
        return from_function

    missing = f"missing or non-numeric timestamp field {spec!r}"

    def from_field(value: Any, _raw: Any) -> int:
        ts = value.get(spec) if isinstance(value, dict) else getattr(value, spec, None)
        return checked(ts, missing)
    return from_field


PROCESSORS: dict[type[n.Node], type[Processor]] = {
    n.SourceNode: SourceProc,
    n.MapNode: MapProc,
    n.FilterNode: FilterProc,
    n.FlatMapNode: FlatMapProc,
    n.SelectKeyNode: SelectKeyProc,
    n.PeekNode: PeekProc,
    n.BranchNode: BranchProc,
    n.SinkNode: SinkProc,
    n.AggregateNode: AggregateProc,
    n.TableSourceNode: TableSourceProc,
    n.ProcessNode: ProcessProc,
}
