"""Read-only views of a topology's tables for the CLI (safe while a worker runs: RocksDB is
opened read-only, which takes no lock)."""

from __future__ import annotations

import glob
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Generator
from contextlib import closing
from typing import Any

from ..dsl.topology import Topology
from ..kafka import admin
from ..kafka.clients import Kafka
from ..runtime.compile import subtopologies
from ..state.meta import TaskId, TaskMeta
from ..dsl.window_specs import HoppingWindows, SlidingWindows, TumblingWindows
from ..state.global_store import global_dirs
from ..state.store import TaskStore, count_entries_and_keys
from ..state.versioned_store import VersionedTableView, count_versions
from ..state.views import open_view
from ..state.window_store import SessionStoreView, WindowStoreView

WINDOWED_KINDS = ("window", "session")
TIME_KEYED_KINDS = (*WINDOWED_KINDS, "join-buffer", "grace-buffer")  # entries + a time index
VERSIONED = "versioned"  # versions of each key + an expiry index (streams.state.versioned_store)
_MIN, _MAX = -(1 << 63), (1 << 63) - 1
# Primary entries of a window/session store start with 0x00 (the key length's first byte),
# its time index entries with 0xff (see streams.state.window_store): a window is a key below.
_INDEX = b"\xff"


@dataclass
class TableInfo:
    topology: str
    table: str
    kind: str
    partitions: int
    keys: int
    keys_exact: bool
    bytes_on_disk: int  # this table's RocksDB column family (SST files + memtables), local tasks
    changelog: str
    changelog_end_offsets: dict[int, int]
    local_tasks: list[str]
    local_input_offsets: dict[str, int] = field(default_factory=dict)
    committed_input_offsets: dict[str, int] = field(default_factory=dict)
    window: str | None = None   # windowed tables: the window spec, e.g. "tumbling 60000 ms, ..."
    windows: int | None = None  # windowed tables: windows stored locally (``keys``: their keys)
    history_ms: int | None = None  # versioned tables: the history retention
    versions: int | None = None     # versioned tables: versions stored locally (tombstones too)
    processing_guarantee: str = "at_least_once"
    # per local task: the input offsets its state reflects; under exactly_once those of the
    # task's last committed transaction (RocksDB is written only after the commit)
    task_offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    # the local task directories holding the table, whole (shared with the task's other tables)
    task_bytes_on_disk: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def task_dirs(state_root: Path, topology: Topology, table: str) -> list[Path]:
    """The local task directories that hold ``table``."""
    subs = [s for s in subtopologies(topology) if table in s.stores]
    out = []
    root = state_root / topology.name
    for sub in subs:
        out += sorted(p for p in root.glob(f"{glob.escape(sub.id)}_*") if p.is_dir() and
                      (p / "CURRENT").exists() and TaskId.parse(p.name).sub == sub.id)
    return out


def window_spec(spec: Any) -> Any | None:
    """The window specification (TumblingWindows, ...) of a windowed store's StoreSpec, or None:
    the one place that knows where the spec keeps it (``StoreSpec.window``)."""
    return getattr(spec, "window", None)


def describe_window(w: Any) -> str | None:
    """``"tumbling 60000 ms, grace 30000 ms"`` and the like (the spec's own ``describe()``, as
    `streams describe` shows it); None without a spec."""
    if w is None:
        return None
    describe = getattr(w, "describe", None)
    return describe() if callable(describe) else str(w)


def window_end(w: Any, start: int) -> int | None:
    """The end of the window starting at ``start`` in a window store (the store keeps only the
    start): exclusive for tumbling/hopping, inclusive for sliding windows."""
    if isinstance(w, (TumblingWindows, HoppingWindows)):
        return start + w.size_ms
    if isinstance(w, SlidingWindows):
        return start + w.max_difference_ms
    return None


def count_windows(store: TaskStore, table: str) -> tuple[int, int]:
    """(windows, distinct record keys) of a window or session store (for a join buffer:
    (records, keys)): its primary entries, not its time index entries (one of each per
    window)."""
    return count_entries_and_keys(store, table, _INDEX)


def open_read_only(path: Path, tables: list[str]) -> TaskStore:
    return TaskStore(path, tables, read_only=True)


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


async def table_infos(topology: Topology, state_dir: str, bootstrap: Kafka,
                      only: list[str] | None = None,
                      processing_guarantee: str = "at_least_once") -> list[TableInfo]:
    state_root = Path(state_dir)
    known = [*topology.stores, *topology.global_tables]
    for name in only or []:
        if name not in known:
            raise LookupError(f"topology {topology.name!r} has no table {name!r} "
                              f"(tables: {', '.join(known) or 'none'})")
    names = [t for t in topology.stores if not only or t in only]
    infos = await _table_infos(topology, state_root, bootstrap, names)
    for name in topology.global_tables:
        if not only or name in only:
            infos.append(await global_table_info(topology, state_root, bootstrap, name))
    for info in infos:
        info.processing_guarantee = processing_guarantee
    return infos


async def _table_infos(topology: Topology, state_root: Path, bootstrap: Kafka,
                       names: list[str]) -> list[TableInfo]:
    if not names:
        return []
    subs = {s.id: s for s in subtopologies(topology)}
    committed = await admin.committed_offsets(bootstrap, topology.name,
                                              [t for s in subs.values() for t in s.topics])
    infos = []
    for name in names:
        spec = topology.stores[name]
        ends = await admin.end_offsets(bootstrap, spec.changelog)
        keys = size = task_size = windows = versions = 0
        exact = True
        local_offsets: dict[str, int] = {}
        task_offsets: dict[str, dict[str, int]] = {}
        tasks = []
        for path in task_dirs(state_root, topology, name):
            sub = subs[TaskId.parse(path.name).sub]
            store = open_read_only(path, sub.stores)
            try:
                if spec.kind == VERSIONED:
                    v, n = count_versions(store, name)
                    versions += v
                    keys += n  # keys with any version, a deleted one's tombstone included
                elif spec.kind in TIME_KEYED_KINDS:
                    w, n = count_windows(store, name)
                    windows += w
                    keys += n  # a key's entries are all in one task
                else:
                    n, is_exact = store.count_keys(name)
                    keys += n
                    exact = exact and is_exact
                for (topic, part), off in TaskMeta.decode(store.meta()).offsets.items():
                    local_offsets[f"{topic}:{part}"] = off
                    task_offsets.setdefault(path.name, {})[f"{topic}:{part}"] = off
                size += store.approximate_bytes(name)
            finally:
                store.close()
            task_size += _dir_bytes(path)
            tasks.append(path.name)
        sub_topics = {t for s in subs.values() if name in s.stores for t in s.topics}
        infos.append(TableInfo(
            topology=topology.name, table=name, kind=spec.kind, partitions=len(ends),
            keys=keys, keys_exact=exact, bytes_on_disk=size, changelog=spec.changelog,
            changelog_end_offsets=ends, local_tasks=tasks, local_input_offsets=local_offsets,
            task_offsets=task_offsets, task_bytes_on_disk=task_size,
            committed_input_offsets={f"{t}:{p}": o for (t, p), o in sorted(committed.items())
                                     if t in sub_topics}))
        if spec.kind in WINDOWED_KINDS:
            infos[-1].window = describe_window(window_spec(spec)) or spec.kind
            infos[-1].windows = windows
        if spec.kind == VERSIONED:
            infos[-1].history_ms = spec.history_ms
            infos[-1].versions = versions
    return infos


def newest_global_copy(topology: Topology, state_dir: str | Path) -> tuple[Path, TaskMeta] | None:
    """The local copy of the global tables that reflects the most records (several workers on
    one host each keep one), with its meta; None if there is none."""
    best: tuple[Path, TaskMeta] | None = None
    for path in global_dirs(Path(state_dir) / topology.name):
        store = open_read_only(path, list(topology.global_tables))
        try:
            meta = TaskMeta.decode(store.meta())
        finally:
            store.close()
        if best is None or sum(meta.offsets.values()) > sum(best[1].offsets.values()):
            best = (path, meta)
    return best


async def global_table_info(topology: Topology, state_root: Path, bootstrap: Kafka,
                            name: str) -> TableInfo:
    """A global table: its topic is its changelog; keys and offsets are those of this host's
    most advanced copy; ``local_tasks`` names every copy (one per worker)."""
    spec = topology.global_tables[name]
    ends = await admin.end_offsets(bootstrap, spec.topic)
    keys, exact, offsets, size = 0, True, {}, 0
    newest = newest_global_copy(topology, state_root)
    if newest is not None:
        path, meta = newest
        store = open_read_only(path, list(topology.global_tables))
        try:
            keys, exact = store.count_keys(name)
            size = store.approximate_bytes(name)
        finally:
            store.close()
        offsets = {f"{t}:{p}": o for (t, p), o in sorted(meta.offsets.items()) if t == spec.topic}
    dirs = global_dirs(state_root / topology.name)
    return TableInfo(topology=topology.name, table=name, kind="global", partitions=len(ends),
                     keys=keys, keys_exact=exact, bytes_on_disk=size,
                     task_bytes_on_disk=sum(_dir_bytes(p) for p in dirs),
                     changelog=spec.topic, changelog_end_offsets=ends,
                     local_tasks=[p.name for p in dirs], local_input_offsets=offsets)


def get_value(topology: Topology, state_dir: str, table: str, key: str,
              as_of: int | None = None) -> Any:
    """The value of ``key`` in ``table`` from the local task stores; LookupError if absent.
    A versioned table gives its latest value, or with ``as_of`` (epoch ms) its value as of
    then."""
    if table in topology.global_tables:
        return _get_global(topology, state_dir, table, key)
    spec = _spec(topology, table)
    if spec.kind == VERSIONED:
        return _get_versioned(topology, state_dir, spec, key, as_of)
    if as_of is not None:
        raise LookupError(f"table {table!r} is not versioned (kind {spec.kind}): no --as-of")
    kb = spec.key_serde.serialize(key)
    assert kb is not None
    with closing(_local_stores(topology, state_dir, table)) as stores:  # closed on return
        for store in stores:
            raw = store.get(table, kb)
            if raw is not None:
                return spec.value_serde.deserialize(raw)
    raise LookupError(f"key {key!r} not found in table {table!r}")


def _get_versioned(topology: Topology, state_dir: str, spec: Any, key: str,
                   as_of: int | None) -> Any:
    with closing(_local_stores(topology, state_dir, spec.name)) as stores:  # closed on return
        for store in stores:
            view = open_view(store, spec)
            assert isinstance(view, VersionedTableView)
            value = view.get(key) if as_of is None else view.get_as_of(key, as_of)
            if value is not None:
                return value
    when = "" if as_of is None else f" as of {as_of}"
    raise LookupError(f"key {key!r} not found in table {spec.name!r}{when}")


def get_versions(topology: Topology, state_dir: str, table: str, key: str
                 ) -> list[dict[str, Any]]:
    """Every stored version of ``key`` in the versioned ``table``, oldest first:
    ``{"timestamp", "value"}`` (value None: a tombstone); LookupError if it has none."""
    spec = _spec(topology, table)
    if spec.kind != VERSIONED:
        raise LookupError(f"table {table!r} is not versioned (kind {spec.kind})")
    out: list[dict[str, Any]] = []
    for store in _local_stores(topology, state_dir, table):
        view = open_view(store, spec)
        assert isinstance(view, VersionedTableView)
        out += [{"timestamp": ts, "value": v} for ts, v in view.versions(key)]
    if not out:
        raise LookupError(f"key {key!r} has no versions in table {table!r}")
    return out


def get_windows(topology: Topology, state_dir: str, table: str, key: str) -> list[dict[str, Any]]:
    """Every window of ``key`` in the windowed ``table`` (from the local task stores), by
    start: ``{"window_start", "window_end", "value"}``; LookupError if it has none.
    ``window_end`` is exclusive for tumbling/hopping windows, inclusive for sliding windows and
    sessions (None if the store does not say and the window spec is unknown)."""
    spec = _spec(topology, table)
    if spec.kind not in WINDOWED_KINDS:
        raise LookupError(f"table {table!r} is not windowed (kind {spec.kind})")
    w = window_spec(spec)
    out: list[dict[str, Any]] = []
    for store in _local_stores(topology, state_dir, table):
        view = open_view(store, spec)
        if isinstance(view, SessionStoreView):
            out += [{"window_start": s, "window_end": e, "value": v}
                    for (s, e), v in view.fetch_sessions(key, _MIN, _MAX)]
        elif isinstance(view, WindowStoreView):
            out += [{"window_start": s, "window_end": window_end(w, s), "value": v}
                    for s, v in view.fetch(key, _MIN, _MAX)]
    if not out:
        raise LookupError(f"key {key!r} has no windows in table {table!r}")
    return sorted(out, key=lambda r: (r["window_start"], r["window_end"] or 0))


def _get_global(topology: Topology, state_dir: str, table: str, key: str) -> Any:
    newest = newest_global_copy(topology, state_dir)
    if newest is None:
        raise LookupError(f"no local copy of global table {table!r} under {state_dir} "
                          "(run a worker with this --state-dir first)")
    spec = topology.global_tables[table]
    store = open_read_only(newest[0], list(topology.global_tables))
    kb = spec.key_serde.serialize(key)
    assert kb is not None  # a key given on the command line is a string
    try:
        raw = store.get(table, kb)
    finally:
        store.close()
    if raw is None:
        raise LookupError(f"key {key!r} not found in global table {table!r}")
    return spec.value_serde.deserialize(raw)


def is_windowed(topology: Topology, table: str) -> bool:
    if table in topology.global_tables:
        return False
    return _spec(topology, table).kind in WINDOWED_KINDS


def _spec(topology: Topology, table: str) -> Any:
    if table not in topology.stores:
        raise LookupError(f"topology {topology.name!r} has no table {table!r} "
                          f"(tables: {', '.join(topology.stores) or 'none'})")
    return topology.stores[table]


def _local_stores(topology: Topology, state_dir: str, table: str
                  ) -> Generator[TaskStore, None, None]:
    """Each local task store holding ``table``, opened read-only, closed when the caller moves
    on (or stops iterating)."""
    subs = {s.id: s for s in subtopologies(topology)}
    for path in _local_dirs(topology, state_dir, table):
        store = open_read_only(path, subs[TaskId.parse(path.name).sub].stores)
        try:
            yield store
        finally:
            store.close()


def _local_dirs(topology: Topology, state_dir: str, table: str) -> list[Path]:
    paths = task_dirs(Path(state_dir), topology, table)
    if not paths:
        raise LookupError(f"no local state for table {table!r} under {state_dir} "
                          "(run a worker with this --state-dir first)")
    return paths


__all__ = ["TableInfo", "count_windows", "describe_window", "get_value", "get_versions",
           "get_windows",
           "window_spec", "open_read_only", "table_infos", "task_dirs"]
