"""Typed, cached access to one table of a task.

Values are serialized when they are put, not at the commit:

* an emitted update reflects the state right after its own record, even when the user's adder
  mutates the aggregate in place (the buffer holds bytes, not the object the record carries);
* ``get`` returns what the serde decodes, so a value has the same type before and after a
  commit (a Record before, a dict after, was a bug);
* a value that cannot be serialized, or whose changelog record would be too large, fails the
  record that wrote it (a dead letter) instead of the commit.

Decoded values of types the serde gives back unchanged (ints, strs, ... see
``Serde.roundtrip_types``) are kept next to their bytes, so a counter is not re-decoded on every
update. Mutable values are decoded afresh on each ``get``: the caller may mutate its copy.

A per-record savepoint (``begin``/``rollback``/``release``) lets a processor undo the writes of a
record whose processing failed.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterator
from typing import Any

from ..serdes import MAX_RECORD_BYTES, Serde
from .store import TaskStore, overlay

_MISSING = object()


class StoreView:
    """One store (column family) of one task, by key bytes: the write buffer with its value
    cache and savepoint, and the flush into the commit. :class:`TableView` and the window
    views (:mod:`streams.state.window_store`) add typed keys on top."""

    def __init__(self, store: TaskStore, name: str, key_serde: Serde, value_serde: Serde) -> None:
        self.store = store
        self.name = name
        self.key_serde = key_serde
        self.value_serde = value_serde
        self._serialize: Callable[[Any], bytes | None] = value_serde.serialize
        self._deserialize: Callable[[bytes | None], Any] = value_serde.deserialize
        self._keep = frozenset(getattr(value_serde, "roundtrip_types", ()))
        # key bytes -> value bytes (None = delete), ordered by first write since the commit
        self._dirty: dict[bytes, bytes | None] = {}
        # key bytes -> decoded value, only for dirty values of a ``roundtrip_types`` type
        self._decoded: dict[bytes, Any] = {}
        # savepoint: key bytes -> (previous dirty entry, previous decoded entry), or _MISSING
        self._saving = False
        self._undo: dict[bytes, tuple[Any, Any]] = {}
        # the dirty keys in order, built on the first range scan and then kept up to date
        self._sorted: list[bytes] | None = None
        self._last_key: Any = _MISSING  # key_bytes' last str key and its bytes
        self._last_kb = b""

    def key_bytes(self, key: Any) -> bytes:
        # An agent typically reads and writes the same key of an event several times
        # (``counts[key] += 1; yield counts[key]``): the last str key's bytes are kept (by the
        # object itself, so an equal identity means the same immutable string).
        if key is self._last_key:
            return self._last_kb
        data = self.key_serde.serialize(key)
        if data is None:
            raise ValueError(f"table {self.name!r} cannot hold a null key")
        if type(key) is str:
            self._last_key, self._last_kb = key, data
        return data

    # -- reads ------------------------------------------------------------------------------------
    def get_by_bytes(self, kb: bytes, default: Any = None) -> Any:
        value = self._decoded.get(kb, _MISSING)
        if value is not _MISSING:
            return value
        vb = self._dirty.get(kb, _MISSING)
        if vb is _MISSING:
            vb = self.store.get(self.name, kb)
        return default if vb is None else self._deserialize(vb)

    def range_bytes(self, start: bytes = b"", end: bytes | None = None
                    ) -> Iterator[tuple[bytes, bytes]]:
        """(key bytes, value bytes) with ``start <= key < end`` in key order: this view's
        uncommitted writes over the store's (buffer and RocksDB)."""
        if self._sorted is None:
            self._sorted = sorted(self._dirty)
        return overlay(self.store.range(self.name, start, end), self._dirty, start, end,
                       self._sorted)

    def decode(self, kb: bytes, vb: bytes) -> Any:
        """``vb`` (the value of ``kb``) decoded, from the cache when it holds it."""
        value = self._decoded.get(kb, _MISSING)
        return self._deserialize(vb) if value is _MISSING else value

    # -- writes -----------------------------------------------------------------------------------
    def put_by_bytes(self, kb: bytes, value: Any) -> None:
        """Serialize ``value`` now (``None`` deletes); raises, changing nothing, if it cannot be
        serialized or the changelog record would exceed ``MAX_RECORD_BYTES``."""
        vb = None if value is None else self._serialize(value)
        if vb is not None and len(kb) + len(vb) > MAX_RECORD_BYTES:
            raise ValueError(f"table {self.name!r}: changelog record of {len(kb) + len(vb)} "
                             f"bytes exceeds {MAX_RECORD_BYTES}")
        self.put_raw(kb, vb, value)

    def put_raw(self, kb: bytes, vb: bytes | None, value: Any = _MISSING) -> None:
        """Buffer already-serialized ``vb`` (None deletes) under the savepoint; ``value`` is its
        decoded object, kept if the serde round-trips its type."""
        if self._saving and kb not in self._undo:
            self._undo[kb] = (self._dirty.get(kb, _MISSING), self._decoded.get(kb, _MISSING))
        if self._sorted is not None and kb not in self._dirty:
            insort(self._sorted, kb)
        self._dirty[kb] = vb
        if vb is not None and type(value) in self._keep:
            self._decoded[kb] = value
        elif self._decoded:
            self._decoded.pop(kb, None)

    # -- per-record savepoint ---------------------------------------------------------------------
    def begin(self) -> None:
        """Start logging overwritten entries so that ``rollback`` can undo the writes made from
        now on. Not nestable; end it with ``rollback`` or ``release``."""
        self._saving = True

    def rollback(self) -> None:
        """Undo every write since ``begin`` and end the savepoint."""
        dirty, decoded = self._dirty, self._decoded
        for kb, (vb, obj) in self._undo.items():
            if vb is _MISSING:
                dirty.pop(kb, None)
                if self._sorted is not None:
                    i = bisect_left(self._sorted, kb)
                    if i < len(self._sorted) and self._sorted[i] == kb:
                        del self._sorted[i]
            else:
                dirty[kb] = vb
            if obj is _MISSING:
                decoded.pop(kb, None)
            else:
                decoded[kb] = obj
        self.release()

    def release(self) -> None:
        """Keep the writes since ``begin`` and end the savepoint."""
        if self._undo:
            self._undo.clear()
        self._saving = False

    # -- commit -----------------------------------------------------------------------------------
    def flush(self) -> list[tuple[bytes, bytes | None]]:
        """Move the dirty values (already serialized) into the store's batch; return them for
        the changelog."""
        out = list(self._dirty.items())
        put, name = self.store.put, self.name
        for kb, vb in out:
            put(name, kb, vb)
        self.discard()
        return out

    def discard(self) -> None:
        self._sorted = None
        self._dirty.clear()
        self._decoded.clear()
        self._undo.clear()
        self._saving = False


class TableView(StoreView):
    """``get``/``put``/``delete`` by user key for one key-value table of one task.

    ``counts.put("k1", 3); counts.get("k1")  # -> 3``
    """

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key`` as the serde decodes it (a fresh object for mutable values)."""
        return self.get_by_bytes(self.key_bytes(key), default)

    def __contains__(self, key: Any) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def put(self, key: Any, value: Any) -> None:
        """Serialize ``value`` now; raises (and changes nothing) if it cannot be serialized or
        its changelog record would exceed ``MAX_RECORD_BYTES``. ``None`` deletes."""
        self.put_by_bytes(self.key_bytes(key), value)

    def delete(self, key: Any) -> None:
        self.put_by_bytes(self.key_bytes(key), None)
