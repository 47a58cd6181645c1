"""What every processor shares: the record in flight, the base class, errors and the
resume-after-failure loop.

Each processor takes a *list* of records and hands a list to its children: one Python call per
node per batch instead of per record, and tight loops with pre-bound locals on the happy path.
When a user function raises, only that record goes to the dead letters and the loop resumes
after it: no user function runs twice for a record, and nothing is emitted for a failed record.

Dead-letter reasons: "decode" (undecodable input), "invalid" (decoded, but refused by the
source's schema or validator), "timestamp" (no usable timestamp),
"processing" (a user function or a serializer raised), "shape" (a user function returned
something of the wrong form), "null-key" (a table record without key). Records an operator
ignores by design (tombstones and null keys in aggregations, records matching no branch) are
not dead letters: they are counted with ``ProcessorContext.count_dropped(node_name, reason)``.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ...dsl import nodes as n
from ...state.store import StateCorrupted, StateStorageError
from ..context import ProcessorContext

__all__ = ["MAX_TIMESTAMP_MS", "STORE_FAILURES", "Processor", "Rec", "ShapeError", "describe_error",
           "what"]

T = TypeVar("T")

#: failures of the task's state, raised instead of dead-lettering the record that met them
STORE_FAILURES = (StateCorrupted, StateStorageError)


class Rec:
    """One record in flight. ``raw`` is the input record it derives from (for dead letters and
    for the source position that repartitioned records carry)."""

    __slots__ = ("key", "value", "ts", "raw", "headers")

    def __init__(self, key: Any, value: Any, ts: int, raw: Any,
                 headers: list[tuple[str, bytes]] | None = None) -> None:
        self.key = key
        self.value = value
        self.ts = ts
        self.raw = raw
        self.headers = headers  # headers for sinks to write (window bounds), rarely set

    def __repr__(self) -> str:
        return f"Rec(key={self.key!r}, value={self.value!r}, ts={self.ts})"


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


def what(obj: Any) -> str:
    """``type short-repr`` of a value, for error messages about user results."""
    return f"{type(obj).__name__} {_short_repr.repr(obj)}"


class Processor:
    """The compiled form of one DSL node in one task.

    ``ctx`` is the processor's only way to the task (stores, sending, dead letters, stream
    time); register stream-time callbacks in the constructor. The task hands each batch to
    :meth:`on_batch`; :meth:`emit` hands the results to the children as one list.
    """

    def __init__(self, node: n.Node, ctx: ProcessorContext) -> None:
        self.node = node
        self.ctx = ctx
        self.children: list[Processor] = []

    def emit(self, recs: list[Rec]) -> None:
        if recs:
            for child in self.children:
                child.on_batch(recs)

    def on_batch(self, recs: list[Rec]) -> None:
        raise NotImplementedError

    def fail(self, rec: Rec, exc: BaseException) -> None:
        """Send ``rec``'s input record to the dead letters for ``exc``. A failure of the
        task's state store is not the record's fault: it is raised, and stops the task."""
        if isinstance(exc, STORE_FAILURES):
            raise exc
        reason = "shape" if isinstance(exc, ShapeError) else "processing"
        self.ctx.dead_letter(rec.raw, f"{describe_error(exc)} (in {self.node.name})",
                             reason=reason, node=self.node.name)

    def resuming(self, recs: list[Rec], loop: Callable[[Iterator[Rec], T], None], out: T) -> T:
        """Run ``loop(it, out)`` over an iterator of ``recs``; when it raises, the record it was
        on goes to the dead letters and ``loop`` is called again with the same iterator, so it
        resumes with the next record. Returns ``out`` (where ``loop`` collects its results).

        ``loop`` is a plain ``for r in it`` with locals bound at its top (as fast as a
        comprehension on CPython 3.11) and no per-record bookkeeping: the failing record is
        found from how much of the list iterator is left, and no user function ever runs twice
        for a record. ``loop`` may raise only while handling a record it took from ``it``.
        """
        it = iter(recs)
        size = len(recs)
        while True:
            try:
                loop(it, out)
                return out
            except Exception as exc:  # noqa: BLE001 - user code; the record goes to the DLQ
                # a list iterator's length hint is the number of records after the current one
                self.fail(recs[size - it.__length_hint__() - 1], exc)  # type: ignore[attr-defined]
