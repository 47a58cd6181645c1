"""Typed, cached access to one table of a task.

Dirty values stay Python objects until the commit serializes them once (an aggregate updated
1000 times in a commit interval is encoded once, not 1000 times).
"""

from __future__ import annotations

from typing import Any

from ..dsl.serdes import Serde
from .store import TaskStore

_MISSING = object()


class TableView:
    """``get``/``put``/``delete`` by user key for one table of one task."""

    def __init__(self, store: TaskStore, name: str, key_serde: Serde, value_serde: Serde) -> None:
        self.store = store
        self.name = name
        self.key_serde = key_serde
        self.value_serde = value_serde
        self._dirty: dict[bytes, Any] = {}

    def key_bytes(self, key: Any) -> bytes:
        data = self.key_serde.serialize(key)
        if data is None:
            raise ValueError(f"table {self.name!r} cannot hold a null key")
        return data

    def get(self, key: Any, default: Any = None) -> Any:
        kb = self.key_bytes(key)
        value = self._dirty.get(kb, _MISSING)
        if value is _MISSING:
            raw = self.store.get(self.name, kb)
            return default if raw is None else self.value_serde.deserialize(raw)
        return default if value is None else value

    def __contains__(self, key: Any) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def put(self, key: Any, value: Any) -> None:
        self._dirty[self.key_bytes(key)] = value

    def delete(self, key: Any) -> None:
        self._dirty[self.key_bytes(key)] = None

    def flush(self) -> list[tuple[bytes, bytes | None]]:
        """Serialize the dirty values into the store's batch; return them for the changelog."""
        out = []
        for kb, value in self._dirty.items():
            vb = None if value is None else self.value_serde.serialize(value)
            self.store.put(self.name, kb, vb)
            out.append((kb, vb))
        self._dirty.clear()
        return out

    def discard(self) -> None:
        self._dirty.clear()
