"""Read-only views of a topology's tables for the CLI (safe while a worker runs: RocksDB is
opened read-only, which takes no lock)."""

from __future__ import annotations

import glob
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..dsl.topology import Topology
from ..kafka import admin
from ..runtime.compile import subtopologies
from ..state.meta import TaskId, TaskMeta
from ..state.store import TaskStore


@dataclass
class TableInfo:
    topology: str
    table: str
    kind: str
    partitions: int
    keys: int
    keys_exact: bool
    bytes_on_disk: int
    changelog: str
    changelog_end_offsets: dict[int, int]
    local_tasks: list[str]
    local_input_offsets: dict[str, int] = field(default_factory=dict)
    committed_input_offsets: dict[str, int] = field(default_factory=dict)

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


def open_read_only(path: Path, tables: list[str]) -> TaskStore:
    return TaskStore(path, tables, read_only=True)


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


async def table_infos(topology: Topology, state_dir: str, bootstrap: str,
                      only: list[str] | None = None) -> list[TableInfo]:
    state_root = Path(state_dir)
    names = list(topology.stores) if not only else only
    for name in names:
        if name not in topology.stores:
            raise LookupError(f"topology {topology.name!r} has no table {name!r} "
                              f"(tables: {', '.join(topology.stores) or 'none'})")
    subs = {s.id: s for s in subtopologies(topology)}
    committed = await admin.committed_offsets(bootstrap, topology.name,
                                              [t for s in subs.values() for t in s.topics])
    infos = []
    for name in names:
        spec = topology.stores[name]
        ends = await admin.end_offsets(bootstrap, spec.changelog)
        keys = size = 0
        exact = True
        local_offsets: dict[str, int] = {}
        tasks = []
        for path in task_dirs(state_root, topology, name):
            sub = subs[TaskId.parse(path.name).sub]
            store = open_read_only(path, sub.stores)
            try:
                n, is_exact = store.count_keys(name)
                keys += n
                exact = exact and is_exact
                for (topic, part), off in TaskMeta.decode(store.meta()).offsets.items():
                    local_offsets[f"{topic}:{part}"] = off
            finally:
                store.close()
            size += _dir_bytes(path)
            tasks.append(path.name)
        sub_topics = {t for s in subs.values() if name in s.stores for t in s.topics}
        infos.append(TableInfo(
            topology=topology.name, table=name, kind=spec.kind, partitions=len(ends),
            keys=keys, keys_exact=exact, bytes_on_disk=size, changelog=spec.changelog,
            changelog_end_offsets=ends, local_tasks=tasks, local_input_offsets=local_offsets,
            committed_input_offsets={f"{t}:{p}": o for (t, p), o in sorted(committed.items())
                                     if t in sub_topics}))
    return infos


def get_value(topology: Topology, state_dir: str, table: str, key: str) -> Any:
    """The value of ``key`` in ``table`` from the local task stores; LookupError if absent."""
    if table not in topology.stores:
        raise LookupError(f"topology {topology.name!r} has no table {table!r} "
                          f"(tables: {', '.join(topology.stores) or 'none'})")
    spec = topology.stores[table]
    kb = spec.key_serde.serialize(key)
    assert kb is not None
    subs = {s.id: s for s in subtopologies(topology)}
    paths = task_dirs(Path(state_dir), topology, table)
    if not paths:
        raise LookupError(f"no local state for table {table!r} under {state_dir} "
                          "(run a worker with this --state-dir first)")
    for path in paths:
        store = open_read_only(path, subs[TaskId.parse(path.name).sub].stores)
        try:
            raw = store.get(table, kb)
        finally:
            store.close()
        if raw is not None:
            return spec.value_serde.deserialize(raw)
    raise LookupError(f"key {key!r} not found in table {table!r}")


__all__ = ["TableInfo", "get_value", "open_read_only", "table_infos", "task_dirs"]
