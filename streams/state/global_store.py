"""The local copy of a topology's global tables in one worker (or test driver).

One RocksDB per worker under ``<state dir>/<topology>/__global`` (a task directory is
``<sub>_<partition>`` and a sub-topology id never starts with ``_``, so the two never meet):

* a column family per global table: key bytes (as the default key serde writes keys) -> the
  value bytes of the latest record of that key in the table's topic;
* ``__meta``: ``offset:<topic>:<partition>``, the next offset of each global topic partition the
  copy reflects, written in the **same WriteBatch** as the records it covers; ``shape``: the
  tables and their topics.

The topic is the changelog (as in Kafka Streams): a worker that restarts resumes each partition
from its local offset; a copy that does not fit the topic any more (an offset beyond the
partition's end, i.e. the topic was recreated, or below its start, i.e. records it never saw
were deleted) is wiped and loaded from the beginning.

Two workers on one host with the same state directory each need a copy of their own: a worker
takes ``__global``, or ``__global-1``, ``__global-2``... whichever is not locked by another
process. Any slot will do: a copy is "the topics up to these offsets", not owned by anyone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..serdes import KeySerde
from .meta import Offsets, TaskMeta
from .store import StateCorrupted, StoreLocked, TaskStore

log = logging.getLogger(__name__)

GLOBAL_DIR = "__global"
MAX_SLOTS = 64


def global_dirs(state_root: Path) -> list[Path]:
    """The global-table copies under a topology's state root (one per concurrent worker)."""
    if not state_root.is_dir():
        return []
    return sorted(p for p in state_root.iterdir() if p.is_dir() and
                  (p.name == GLOBAL_DIR or p.name.startswith(GLOBAL_DIR + "-")) and
                  (p / "CURRENT").exists())


def global_shape(specs: Iterable[Any]) -> str:
    return json.dumps({s.name: s.topic for s in specs}, sort_keys=True, separators=(",", ":"))


def open_global_store(state_root: Path, specs: list[Any]) -> TaskStore:
    """Open (or create) a copy that no other process holds; wipe it if it was written for
    other global tables."""
    names = [s.name for s in specs]
    shape = global_shape(specs)
    for slot in range(MAX_SLOTS):
        path = state_root / (GLOBAL_DIR if slot == 0 else f"{GLOBAL_DIR}-{slot}")
        try:
            existing = TaskStore.existing_tables(path)
            store = TaskStore(path, names, lock_timeout=0)
        except StoreLocked:
            continue
        except StateCorrupted as exc:  # a copy of the topics: reloaded from them
            log.warning("global tables: %s: wiped, reloading them", exc)
            TaskStore.destroy(path)
            existing, store = None, TaskStore(path, names, lock_timeout=0)
        if existing is not None and (existing != sorted(names) or
                                     TaskMeta.decode(store.meta()).shape != shape):
            log.info("global tables: %s was written for other global tables: wiped", path)
            store.close()
            TaskStore.destroy(path)
            store = TaskStore(path, names, lock_timeout=0)
        return store
    raise StoreLocked(f"all {MAX_SLOTS} global-table directories under {state_root} are locked")


class GlobalTableView:
    """Lookups in one global table: ``get(key)`` / ``get_by_bytes(kb)`` decode the stored
    value afresh (a joiner may mutate what it gets)."""

    def __init__(self, store: TaskStore, spec: Any) -> None:
        self.store = store
        self.name = spec.name
        self.spec = spec
        self._key = KeySerde().serialize
        self._deserialize = spec.value_serde.deserialize

    def key_bytes(self, key: Any) -> bytes:
        data = self._key(key)
        if data is None:
            raise ValueError(f"global table {self.name!r} cannot hold a null key")
        return data

    def get_by_bytes(self, kb: bytes, default: Any = None) -> Any:
        vb = self.store.get(self.name, kb)
        return default if vb is None else self._deserialize(vb)

    def get(self, key: Any, default: Any = None) -> Any:
        return self.get_by_bytes(self.key_bytes(key), default)

    def items(self) -> Iterable[tuple[bytes, Any]]:
        for kb, vb in self.store.items(self.name):
            yield kb, self._deserialize(vb)


def decide_start(local: Offsets, beginnings: Offsets, ends: Offsets) -> tuple[bool, Offsets]:
    """(wipe?, the offset to read each partition of the global topics from).

    Local offsets inside ``[beginning, end]`` resume; a partition without a local offset starts
    at its beginning; one local offset outside that range means the copy no longer describes
    the topic (recreated, or deleted past what the copy saw): wipe and start everything from
    the beginning. ``local`` offsets of partitions no longer listed are ignored.
    """
    for tp, end in ends.items():
        off = local.get(tp)
        if off is not None and not beginnings.get(tp, 0) <= off <= end:
            return True, dict(beginnings)
    return False, {tp: max(local.get(tp, 0), beginnings.get(tp, 0)) for tp in ends}
