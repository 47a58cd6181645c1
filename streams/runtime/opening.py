"""Opening a task: the steps the worker and the test driver share.

Whoever runs tasks (the worker's :class:`~streams.runtime.task_manager.TaskManager`, the
:class:`~streams.testing.TopologyTestDriver`) opens them here, so the driver reproduces what a
worker does on a restart: check the state's shape, open the store, compare local meta with the
group's committed offsets and the changelog ends (:func:`~streams.state.recovery.decide_open`),
then resume, or hand back a :class:`~streams.state.recovery.Restoration` to carry out (stepwise
in the worker's main loop, at once in the driver) and :func:`start_restored` afterwards. Only the
I/O differs: :class:`OpenIO` (a consumer and the group, or in-memory topics).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..dsl.topology import Topology
from ..state.meta import Offsets, TaskId, TaskMeta, shape_of
from ..state.recovery import Restoration, decide_open
from ..state.store import StateCorrupted, TaskStore
from .compile import SubTopology
from .task import Task

log = logging.getLogger(__name__)

# (sub-topology, partition, store or None) -> a Task with the runner's options
NewTask = Callable[[SubTopology, int, "TaskStore | None"], Task]


class StateShapeMismatch(RuntimeError):
    """Local state was written by a different shape of the topology."""


def check_state_shape(path: Path, topology: Topology, sub: SubTopology) -> None:
    """Never open state that a different shape of the topology wrote (its tables would be
    read as someone else's): say so in one line."""
    existing = TaskStore.existing_tables(path)
    if existing is None:
        return
    expected = sorted(sub.stores)
    shape = None
    if existing == expected:
        store = TaskStore(path, sub.stores, read_only=True)
        try:
            shape = TaskMeta.decode(store.meta()).shape
        finally:
            store.close()
        if shape is None or shape == shape_of(sub.topics, sub.stores):
            return
    raise StateShapeMismatch(
        f"state in {path} was written by a different shape of topology {topology.name!r} "
        f"(tables {', '.join(existing) or 'none'}; expected {', '.join(expected)}"
        f"{'' if shape is None else ', other input topics'}): run `streams tables reset "
        f"{topology.name}` to rebuild it")


class OpenIO(Protocol):
    """What opening a task asks of Kafka (or of the driver's in-memory topics)."""

    async def committed(self, tps: list[tuple[str, int]]) -> Offsets: ...

    async def changelog_ends(self, topics: list[str], partition: int) -> dict[str, int]: ...

    async def commit_offsets(self, offsets: Offsets) -> None: ...

    async def open_store(self, path: Path, tables: list[str]) -> TaskStore: ...


async def open_task(topology: Topology, new_task: NewTask, sub: SubTopology, partition: int,
                    state_root: Path, io: OpenIO) -> Task | Restoration:
    """A task ready to run (its local state is current, or it has none), or the restore to
    carry out before :func:`start_restored` makes it one."""
    if not sub.stores:
        return new_task(sub, partition, None)
    task_id = TaskId(sub.id, partition)
    path = state_root / str(task_id)
    try:
        check_state_shape(path, topology, sub)
        store = await io.open_store(path, sub.stores)
    except StateCorrupted as exc:  # Kafka Streams' TaskCorruptedException: wipe, restore
        log.warning("task %s: %s: wiped, restoring it from the changelog", task_id, exc)
        TaskStore.destroy(path)
        store = await io.open_store(path, sub.stores)
    task = new_task(sub, partition, store)
    local = task.meta()
    try:
        committed = await io.committed(task.tps)
        ends = await io.changelog_ends(list(task.changelogs), partition)
    except BaseException:
        task.close()  # (releases the RocksDB lock for the next attempt)
        raise
    decision = decide_open(local, committed, ends)
    if decision.action == "resume":
        if not local.empty:
            log.info("task %s: resume: %s (changelog positions %s)", task_id, decision.reason,
                     local.changelog or "none")
        task.offsets = {tp: off for tp, off in decision.resume_offsets.items()
                        if tp in set(task.tps)}
        if decision.finish_commit:
            await io.commit_offsets(task.offsets)
        return task
    log.info("task %s: %s: %s (local offsets %s, changelog positions %s, group %s, "
             "changelog ends %s)", task_id, decision.action, decision.reason,
             dict(local.offsets) or "none", local.changelog or "none", committed, ends)
    task.close()
    if decision.action == "wipe":
        TaskStore.destroy(path)
    store = await io.open_store(path, sub.stores)
    return Restoration(str(task_id), store, dict(task.changelogs), partition, decision, local,
                       committed, ends, task.tps, task.shape)


def start_restored(new_task: NewTask, sub: SubTopology,
                   restoration: Restoration) -> tuple[Task, bool]:
    """The task over a finished restore (its meta written), and whether the caller must commit
    it at once: keys whose changelog records must be written again (:meth:`Task.repair`)."""
    store = restoration.store
    store.write(restoration.finish().encode())
    task = new_task(sub, restoration.partition, store)
    return task, task.repair(restoration.repairs)
