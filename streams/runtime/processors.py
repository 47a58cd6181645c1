"""Batch processors: the compiled form of each DSL node.

Each processor takes a *list* of records and hands a list to its children: one Python call per
node per batch instead of per record, and tight loops with pre-bound locals on the happy path.
When a user function raises, only that record goes to the dead letters and the loop resumes
after it: no user function runs twice for a record, and nothing is emitted for a failed record.

Dead-letter reasons: "decode" (undecodable input), "timestamp" (no usable timestamp),
"processing" (a user function or a serializer raised), "shape" (a user function returned
something of the wrong form), "null-key" (a table record without key). Records an operator
ignores by design (tombstones and null keys in aggregations, records matching no branch) are
not dead letters: they are counted with ``Task.count_dropped(node_name, reason)``.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..dsl import nodes as n
from ..dsl.serdes import MAX_RECORD_BYTES, SerdeError

if TYPE_CHECKING:
    from ..state.table import TableView
    from .task import Task

__all__ = ["MAX_RECORD_BYTES", "MAX_TIMESTAMP_MS", "ORIGIN_HEADER", "PROCESSORS", "Processor",
           "Rec", "ShapeError", "describe_error", "timestamp_extractor"]


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

# 9999-12-31T23:59:59.999Z: later timestamps overflow datetime and, far beyond, aiokafka's
# batch encoding (which would fail the whole commit instead of one record).
MAX_TIMESTAMP_MS = 253_402_300_799_999
_ERROR_CHARS = 1000  # a dead letter's error header: enough to diagnose, bounded in size


class ShapeError(TypeError):
    """A user function returned something of the wrong form (dead-letter reason "shape")."""


def describe_error(exc: BaseException) -> str:
    """``Type: message``, bounded in length; never raises (user exceptions may have a broken
    ``__str__``)."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # noqa: BLE001
        text = type(exc).__name__
    return text if len(text) <= _ERROR_CHARS else text[:_ERROR_CHARS] + "..."


_short_repr = reprlib.Repr()
_short_repr.maxstring = _short_repr.maxother = 60


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
        """Send ``rec``'s input record to the dead letters for ``exc``."""
        reason = "shape" if isinstance(exc, ShapeError) else "processing"
        self.task.dead_letter(rec.raw, f"{describe_error(exc)} (in {self.node.name})",
                              reason=reason)


# The stateless processors share one pattern: iterate with an explicit iterator inside a
# try; on an exception the failing record (still bound to the loop variable) goes to the dead
# letters and the loop resumes with the next record. The happy path is a plain for loop with
# pre-bound locals (as fast as a comprehension on CPython 3.11), and no user function is ever
# called twice for the same record.

class MapProc(Processor):
    def process(self, recs: list[Rec]) -> None:
        fn = self.node.fn  # type: ignore[attr-defined]
        out: list[Rec] = []
        append = out.append
        it = iter(recs)
        while True:
            try:
                for r in it:
                    append(Rec(r.key, fn(r.value), r.ts, r.raw))
                break
            except Exception as exc:  # noqa: BLE001 - user code; the record goes to the DLQ
                self.fail(r, exc)
        self.emit(out)


class FilterProc(Processor):
    def process(self, recs: list[Rec]) -> None:
        pred = self.node.predicate  # type: ignore[attr-defined]
        out: list[Rec] = []
        append = out.append
        it = iter(recs)
        while True:
            try:
                for r in it:
                    if pred(r.value):
                        append(r)
                break
            except Exception as exc:  # noqa: BLE001
                self.fail(r, exc)
        self.emit(out)


class FlatMapProc(Processor):
    def process(self, recs: list[Rec]) -> None:
        fn = self.node.fn  # type: ignore[attr-defined]
        name = self.node.name
        out: list[Rec] = []
        append = out.append
        it = iter(recs)
        while True:
            try:
                for r in it:
                    values = fn(r.value)
                    cls = type(values)
                    if cls is not list and cls is not tuple:
                        # check the shape, and run a generator to its end before anything of
                        # this record is emitted (all or nothing per record)
                        values = _flat_values(values, name)
                    key, ts, raw = r.key, r.ts, r.raw
                    for v in values:
                        append(Rec(key, v, ts, raw))
                break
            except Exception as exc:  # noqa: BLE001
                self.fail(r, exc)
        self.emit(out)


def _flat_values(values: Any, node_name: str) -> list[Any]:
    """``values`` as a list, if it is a collection of values; a str, bytes or mapping would be
    iterated by character, byte or key, which is never what a flat_map means."""
    if isinstance(values, (str, bytes, bytearray, memoryview, Mapping)):
        raise ShapeError(f"{node_name}: flat_map must return an iterable of values (a list, "
                         f"tuple, generator...), got {_what(values)}")
    try:
        it = iter(values)
    except TypeError:
        raise ShapeError(f"{node_name}: flat_map must return an iterable of values, got "
                         f"{_what(values)} (not iterable)") from None
    return list(it)


def _what(obj: Any) -> str:
    return f"{type(obj).__name__} {_short_repr.repr(obj)}"


class SelectKeyProc(Processor):
    def process(self, recs: list[Rec]) -> None:
        fn = self.node.fn  # type: ignore[attr-defined]
        out: list[Rec] = []
        append = out.append
        it = iter(recs)
        while True:
            try:
                for r in it:
                    v = r.value
                    append(Rec(fn(v), v, r.ts, r.raw))
                break
            except Exception as exc:  # noqa: BLE001
                self.fail(r, exc)
        self.emit(out)


class PeekProc(Processor):
    def process(self, recs: list[Rec]) -> None:
        fn = self.node.fn  # type: ignore[attr-defined]
        out: list[Rec] = []
        append = out.append
        it = iter(recs)
        while True:
            try:
                for r in it:
                    fn(r.key, r.value)
                    append(r)
                break
            except Exception as exc:  # noqa: BLE001
                self.fail(r, exc)
        self.emit(out)


class BranchProc(Processor):
    """Each record goes to the child of its first true predicate (None: the default branch);
    records matching none are counted as dropped ("no-branch")."""

    def process(self, recs: list[Rec]) -> None:
        preds = self.node.predicates  # type: ignore[attr-defined]
        buckets: list[list[Rec]] = [[] for _ in preds]
        routes = [(pred, bucket.append) for pred, bucket in zip(preds, buckets)]
        unmatched = 0
        it = iter(recs)
        while True:
            try:
                for r in it:
                    v = r.value
                    for pred, append in routes:
                        if pred is None or pred(v):
                            append(r)
                            break
                    else:
                        unmatched += 1
                break
            except Exception as exc:  # noqa: BLE001
                self.fail(r, exc)
        if unmatched:
            count, name = self.task.count_dropped, self.node.name
            for _ in range(unmatched):
                count(name, "no-branch")
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
    """``agg = adder(agg, value)`` per record; emits (key, new aggregate).

    Records with a null key or a null value (tombstones) are skipped and counted as dropped, as
    in Kafka Streams. The table is written only after the adder returned, and the write itself
    serializes (and size-checks) the value, so a failing record leaves no effect.
    """

    def process(self, recs: list[Rec]) -> None:
        node: n.AggregateNode = self.node  # type: ignore[assignment]
        table = self.task.table(node.table)
        key_bytes, get, put = table.key_bytes, table.get_by_bytes, table.put_by_bytes
        init, add = node.initializer, node.adder
        out: list[Rec] = []
        append = out.append
        for rec in recs:
            key, value = rec.key, rec.value
            if key is None or value is None:
                self.task.count_dropped(node.name, "null-key" if key is None else "null-value")
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


_NONE = object()


class TableSourceProc(Processor):
    """Materializes a topic: latest value per key, a null value deletes. A record without a
    key cannot be stored: a dead letter ("null-key")."""

    def process(self, recs: list[Rec]) -> None:
        table = self.task.table(self.node.table)  # type: ignore[attr-defined]
        put = table.put  # put(key, None) deletes
        out: list[Rec] = []
        append = out.append
        for rec in recs:
            if rec.key is None:
                self.task.dead_letter(rec.raw, f"table record without key (in {self.node.name})",
                                      reason="null-key")
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

    def process(self, recs: list[Rec]) -> None:
        node: n.ProcessNode = self.node  # type: ignore[assignment]
        fn, name = node.fn, node.name
        stores = {s: self.task.table(s) for s in node.stores}
        views: list[TableView] = list(stores.values())
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
            f"got {_what(result)}")
    if item is not None:
        text += f" containing {_what(item)}"
        if isinstance(result, tuple) and len(result) == 2:
            text += "; return one pair as [(key, value)]"
    return text


class SourceProc(Processor):
    """Decodes raw consumer records into ``Rec``s. A record whose key or value does not decode
    (whatever the serde raises) is a dead letter "decode"; one without a valid timestamp a dead
    letter "timestamp". Nothing a record contains can make ``process_raw`` raise."""

    def __init__(self, node: n.Node, task: Task) -> None:
        super().__init__(node, task)
        self._timestamp = timestamp_extractor(node.timestamp)  # type: ignore[attr-defined]

    def process_raw(self, raws: list[Any]) -> None:
        node: n.SourceNode = self.node  # type: ignore[assignment]
        kd, vd = node.key_serde.deserialize, node.value_serde.deserialize
        timestamp = self._timestamp
        out: list[Rec] = []
        append = out.append
        task = self.task
        if node.internal:
            raws = task.skip_replayed(node.topic, raws)
        for raw in raws:
            try:
                value = vd(raw.value)
                key = kd(raw.key)
            except SerdeError as exc:
                task.dead_letter(raw, str(exc), reason="decode")
                continue
            except Exception as exc:  # noqa: BLE001 - RecursionError, a custom serde's bug...
                task.dead_letter(raw, f"cannot decode: {describe_error(exc)}", reason="decode")
                continue
            try:
                ts = timestamp(value, raw)
            except Exception as exc:  # noqa: BLE001 - SerdeError, or a bug in a custom extractor
                task.dead_letter(raw, str(exc) if isinstance(exc, SerdeError)
                                 else describe_error(exc), reason="timestamp")
                continue
            append(Rec(key, value, ts, raw))
        if out:
            task.observe_time(max(r.ts for r in out))
        self.emit(out)

    def process(self, recs: list[Rec]) -> None:  # pragma: no cover - sources take raw input
        self.emit(recs)


def timestamp_extractor(spec: str | Callable[[Any], int] | None) -> Callable[[Any, Any], int]:
    """Build, once per source, ``f(value, raw) -> epoch ms``: the record timestamp (spec None),
    a function of the value, or a field of a dict or Record.

    A timestamp must be a finite number in ``[0, MAX_TIMESTAMP_MS]``; anything else (NaN,
    infinity, 1e30, negative, not a number) is a SerdeError saying what was wrong.
    """

    def checked(ts: Any, what: str) -> int:
        if isinstance(ts, bool) or not isinstance(ts, (int, float)):
            raise SerdeError(f"{what}: got {_what(ts)}")
        if not 0 <= ts <= MAX_TIMESTAMP_MS:  # False for NaN too
            kind = "not finite" if isinstance(ts, float) and not math.isfinite(ts) else (
                f"outside [0, {MAX_TIMESTAMP_MS}] (epoch ms up to year 9999)")
            raise SerdeError(f"{what}: {ts!r} is {kind}")
        return int(ts)

    if spec is None:
        def from_record(_value: Any, raw: Any) -> int:
            ts = raw.timestamp
            # Kafka timestamps are already ints in range: check cheaply, explain otherwise
            if ts.__class__ is int and 0 <= ts <= MAX_TIMESTAMP_MS:
                return ts
            return checked(ts, "invalid record timestamp")
        return from_record

    if callable(spec):
        def from_function(value: Any, _raw: Any) -> int:
            try:
                ts = spec(value)
            except Exception as exc:  # noqa: BLE001 - user code
                raise SerdeError(f"timestamp function failed: {describe_error(exc)}") from None
            return checked(ts, "invalid timestamp from the timestamp function")
        return from_function

    field = spec

    def from_field(value: Any, _raw: Any) -> int:
        ts = value.get(field) if isinstance(value, dict) else getattr(value, field, None)
        if ts is None:
            raise SerdeError(f"missing or non-numeric timestamp field {field!r}")
        return checked(ts, f"invalid timestamp field {field!r}")
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
