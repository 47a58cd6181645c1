"""The processor context: processors reach the task only through ``ProcessorContext``.

Each test here fails on the code before the context existed: processors imported ``task`` (for
typing) and were built with the task itself, and there was no stream-time callback, no
``Task.advance_stream_time`` and no late counter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import streams
from streams import Topology
from streams.dsl import nodes as n
from streams.runtime.processors import PROCESSORS, Processor, Rec
from streams.runtime.task import Task
from streams.state.meta import TaskId
from streams.testing import TopologyTestDriver

if TYPE_CHECKING:  # (so that, on code without a context, each test fails on its own)
    from streams.runtime.context import ProcessorContext

RUNTIME = Path(streams.__file__).parent / "runtime"
TASK = "streams.runtime.task"


# -- (a) no import of the task from processors or compile --------------------------------------

def _imported_modules(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports, absolute, including TYPE_CHECKING and function-level
    imports (``from . import task`` counts as ``<package>.task``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


GUARDED = [f"processors/{m}.py" for m in
           ("__init__", "base", "source", "stateless", "stateful", "sinks")] + [
    "compile.py", "context.py"]


@pytest.mark.parametrize("name", GUARDED)
def test_processors_and_compile_never_import_the_task(name: str) -> None:
    path = RUNTIME / name
    assert path.is_file(), f"{path} is missing (processors must be a package)"
    package = "streams.runtime" + (".processors" if name.startswith("processors/") else "")
    imported = _imported_modules(path, package)
    assert not {m for m in imported if m == TASK or m.startswith(TASK + ".")}, (
        f"{name} imports {TASK}")


def test_importing_processors_and_compile_does_not_load_the_task() -> None:
    code = ("import sys, streams.runtime.processors, streams.runtime.compile, "
            "streams.runtime.context; print('streams.runtime.task' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=RUNTIME.parent.parent)
    assert out.stdout.strip() == "False"


# -- a test-only node kind: what windows and joins will be ----------------------------------------

@dataclass(eq=False)
class TickNode(n.Node):
    """Test-only: a node with a store that acts when stream time advances."""

    store: str

    def store_names(self) -> list[str]:
        return [self.store]


class TickProc(Processor):
    """Records the stream times it is notified of; on each, writes the time to its store and
    sends it to ``ticks``. Counts records older than the stream time as late."""

    def __init__(self, node: n.Node, ctx: ProcessorContext) -> None:
        super().__init__(node, ctx)
        self.notified: list[int] = []
        ctx.on_stream_time(self._on_stream_time)
        INSTANCES.append(self)

    def on_batch(self, recs: list[Rec]) -> None:
        now = self.ctx.stream_time  # before this batch: the source observes it afterwards
        for rec in recs:
            if rec.ts < now:
                self.ctx.count_late(self.node.name)
            now = max(now, rec.ts)

    def _on_stream_time(self, now: int) -> None:
        self.notified.append(now)
        self.ctx.store(self.node.store).put("last", now)  # type: ignore[attr-defined]
        self.ctx.send("ticks", b"tick", str(now).encode(), now)


INSTANCES: list[TickProc] = []


@pytest.fixture
def tick_topology(monkeypatch: pytest.MonkeyPatch) -> Topology:
    """``in`` -> tick (store ``ticks``), with TickProc registered for TickNode."""
    monkeypatch.setitem(PROCESSORS, TickNode, TickProc)
    INSTANCES.clear()
    t = Topology("ctx-ticks")
    t.store("ticks")
    t.stream("in").node.add_child(TickNode("tick", store="ticks"))
    return t


def _task(driver: TopologyTestDriver) -> Task:
    # the driver has no public accessor for its tasks; its one task reads "in"
    return driver._by_topic["in"]


def _ticks(driver: TopologyTestDriver) -> list[int]:
    return [int(v) for _, v in driver.read_output("ticks", decode=False)]


# -- (b) stream-time callbacks ---------------------------------------------------------------------

def test_stream_time_callback_runs_once_per_batch_that_advanced_stream_time(
        tick_topology: Topology) -> None:
    with TopologyTestDriver(tick_topology) as driver:
        (proc,) = INSTANCES
        driver.pipe_batch("in", [("a", {}, 5), ("b", {}, 3), ("c", {}, 9)])
        assert proc.notified == [9]                  # once, after the whole batch
        assert _ticks(driver) == [9]                 # its output went out with the batch
        driver.pipe_batch("in", [("a", {}, 4), ("b", {}, 7)])
        driver.pipe_batch("in", [("a", {}, 9)])
        assert proc.notified == [9]                  # stream time did not advance
        assert _ticks(driver) == []
        driver.pipe_batch("in", [("a", {}, 12), ("b", {}, 10)])
        assert proc.notified == [9, 12]
        assert _ticks(driver) == [12]
        assert driver.table("ticks") == {"last": 12}  # its store write was committed


def test_advance_stream_time_runs_the_callbacks_when_it_advances(
        tick_topology: Topology) -> None:
    with TopologyTestDriver(tick_topology) as driver:
        (proc,) = INSTANCES
        driver.pipe_batch("in", [("a", {}, 10)])
        task = _task(driver)
        assert task.advance_stream_time(20) is True
        assert task.stream_time == 20 and proc.ctx.stream_time == 20
        assert task.advance_stream_time(20) is False
        assert task.advance_stream_time(15) is False
        assert proc.notified == [10, 20]
        # the callback's output waits in the task's outputs and goes out with the next batch
        driver.pipe_batch("in", [("a", {}, 1)])
        assert _ticks(driver) == [10, 20]
        assert proc.notified == [10, 20]
        assert driver.table("ticks") == {"last": 20}


def test_stream_time_callbacks_survive_a_restart_and_resume_from_the_committed_time(
        tick_topology: Topology) -> None:
    with TopologyTestDriver(tick_topology) as driver:
        driver.pipe_batch("in", [("a", {}, 10)])
        driver.restart()
        proc = INSTANCES[-1]                         # built again for the new task
        driver.pipe_batch("in", [("a", {}, 8)])       # below the restored stream time
        assert proc.notified == []
        driver.pipe_batch("in", [("a", {}, 11)])
        assert proc.notified == [11]


def test_context_names_its_task(tick_topology: Topology) -> None:
    with TopologyTestDriver(tick_topology) as driver:
        (proc,) = INSTANCES
        task = _task(driver)
        assert proc.ctx is task.context
        assert proc.ctx.task_id == task.id and isinstance(proc.ctx.task_id, TaskId)
        assert proc.ctx.partition == 0
        assert proc.ctx.topology_name == "ctx-ticks"
        assert not hasattr(proc, "task")


# -- (c) late records -----------------------------------------------------------------------------

def test_count_late_counts_per_node(tick_topology: Topology) -> None:
    with TopologyTestDriver(tick_topology) as driver:
        driver.pipe_batch("in", [("a", {}, 5), ("b", {}, 3), ("c", {}, 9)])
        assert _task(driver).late == {"tick": 1}  # 3 after 5, record by record
        driver.pipe_batch("in", [("a", {}, 1), ("b", {}, 9)])
        assert _task(driver).late == {"tick": 2}
