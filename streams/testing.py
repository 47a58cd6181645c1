"""``TopologyTestDriver``: run a topology's compiled processors without a broker.

It runs the same tasks, batch processors, RocksDB stores, committers
(:mod:`streams.runtime.committer`: at-least-once or exactly-once, ``processing_guarantee``) and
open-or-restore decisions (:func:`streams.state.recovery.decide_open`) as the worker, over
in-memory topics with one partition each (:mod:`streams.memory_kafka`), read read_committed.
Records written to a repartition topic are fed to the downstream task as one batch, as the
worker would poll them. Commits happen every ``commit_every`` input records and on
:meth:`commit`, :meth:`table` and :meth:`close` — not after every record, so batch bugs show.

>>> from streams import Topology
>>> t = Topology("doc")
>>> _ = t.stream("in", timestamp="ts").filter(lambda v: v["n"] > 1).to("out")
>>> with TopologyTestDriver(t) as driver:
...     driver.pipe("in", "k", {"n": 2, "ts": 5})
...     driver.pipe("in", "k", {"n": 1, "ts": 6})
...     driver.read_output("out")
[('k', {'n': 2, 'ts': 5})]
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from .serdes import KeySerde, json_dumps
from .dsl.topology import Topology
from .memory_kafka import (MemoryOpenIO, MemoryRestoreConsumer, MemoryTopics, TestRecord,
                           memory_producers, run_in_loop, run_sync)
from .runtime import opening
from .runtime.committer import AtLeastOnce, Committer, ExactlyOnce, is_exactly_once
from .runtime.compile import SubTopology, subtopologies
from .runtime.global_tables import GlobalTables
from .runtime.task import Task
from .runtime.transactions import TaskTransactions
from .runtime.watermarks import is_marker
from .state.meta import TaskId
from .state.store import TaskStore

__all__ = ["DeadLetter", "MemoryTopics", "TestRecord", "TopologyTestDriver", "open_task",
           "run_sync"]


class DeadLetter(NamedTuple):
    """A record the topology routed to its dead-letter topic, with the reason headers decoded."""

    key: bytes | None
    value: bytes | None
    reason: str
    error: str
    source_topic: str
    source_partition: int
    source_offset: int
    node: str = ""  # the graph node that rejected it


def _encode(key: Any, value: Any) -> tuple[bytes | None, bytes | None]:
    return KeySerde().serialize(key), (value if isinstance(value, (bytes, type(None)))
                                       else json_dumps(value))


def open_task(topology: Topology, sub: SubTopology, partition: int, state_dir: Path,
              kafka: MemoryTopics, global_tables: Any = None,
              options: dict[str, Any] | None = None,
              committer: Committer | None = None) -> Task:
    """Open a task over in-memory topics as the worker does (:mod:`streams.runtime.opening`:
    the committer's open first, the same open-or-restore decision and restore), the restore
    carried out at once. ``options``: the Task's keyword arguments; ``committer``: default
    at-least-once."""
    opts = options or {}
    committer = committer or AtLeastOnce(kafka)
    run_in_loop(committer.open(TaskId(sub.id, partition)))

    def new_task(sub_: SubTopology, part: int, store: TaskStore | None) -> Task:
        return Task(topology, sub_, part, store, global_tables, **opts)

    opened = run_sync(opening.open_task(topology, new_task, sub, partition, Path(state_dir),
                                        MemoryOpenIO(kafka)))
    if isinstance(opened, Task):
        committer.started(opened)
        return opened
    consumer = MemoryRestoreConsumer(kafka)
    while not opened.done:
        run_sync(opened.step(consumer))
    task, repair = opening.start_restored(new_task, sub, opened)
    committer.started(task)
    if repair:
        _raise_failed(run_in_loop(committer.commit([task])).failed)
    return task


def _raise_failed(failed: dict[TaskId, BaseException]) -> None:
    for exc in failed.values():
        raise exc


def _watch_agent_values(task: Task) -> None:
    """Turn on the agents' check for table values changed in place but never assigned back
    (a ``warnings.warn`` at the event boundary): a serialization per value read, fine in tests,
    not in the worker."""
    from .runtime.processors.agents import AgentProc

    stack: list[Any] = [p for procs in task._sources.values() for p in procs]
    while stack:
        proc = stack.pop()
        if isinstance(proc, AgentProc):
            proc.watching = True
        stack.extend(proc.children)


class TopologyTestDriver:
    __test__ = False

    def __init__(self, topology: Topology, state_dir: str | Path | None = None,
                 wall_clock_ms: int = 0, commit_every: int = 1000,
                 max_task_idle_ms: int = 0, max_future_ms: int = -1,
                 upstream_partitions: int = 1, repartition_idle_ms: int = 2000,
                 processing_guarantee: str = "at_least_once") -> None:
        """``wall_clock_ms`` is the driver's wall clock (moved by :meth:`advance_wall_clock`):
        it stamps records piped without a timestamp, times ``max_task_idle_ms`` and
        ``repartition_idle_ms``, and is what ``max_future_ms`` compares event times with (off
        by default here, as the wall clock is synthetic; the worker's default is one day).
        ``upstream_partitions``: how many upstream partitions each repartition topic has, i.e.
        how many channels a task behind it waits for (the driver itself runs partition 0 of
        every topic; a test pipes the other partitions' records and progress markers into the
        repartition topic itself). ``processing_guarantee``: ``exactly_once`` runs one
        in-memory transaction per task and commit: outputs, and records of repartition topics
        for the downstream tasks, become readable at the commit (a crash aborts them)."""
        self.topology = topology
        self.max_task_idle_ms = max_task_idle_ms
        self.repartition_idle_ms = repartition_idle_ms
        self._tmp = None if state_dir else tempfile.mkdtemp(prefix="streams-driver-")
        self.state_dir = Path(state_dir or self._tmp)  # type: ignore[arg-type]
        self.wall_clock_ms = wall_clock_ms
        self.commit_every = commit_every
        self.kafka = MemoryTopics(lambda: self.wall_clock_ms)
        self.exactly_once = is_exactly_once(processing_guarantee)
        self._committer = self._new_committer()
        self._fed: dict[str, int] = {}  # repartition topic -> position of the downstream read
        self.topics = self.kafka.logs
        self._read_pos: dict[str, int] = {}
        self._subs = subtopologies(topology)
        self._task_options: dict[str, Any] = {
            "partitions": {t: upstream_partitions for t in topology.repartition_topics()},
            "max_task_idle_ms": max_task_idle_ms, "max_future_ms": max_future_ms,
            "wall_clock": lambda: self.wall_clock_ms,
            "repartition_idle_ms": repartition_idle_ms}
        self._tasks: dict[TaskId, Task] = {}
        self._by_topic: dict[str, Task] = {}
        self._input_at: dict[TaskId, int] = {}  # wall clock of each task's last input
        self._since_commit = 0
        self._globals = GlobalTables(topology, self.state_dir) if topology.global_tables else None
        self._open_tasks()

    # -- tasks ------------------------------------------------------------------------------------
    def _new_committer(self) -> Committer:
        """A worker process's committer (a restart starts a new one)."""
        if not self.exactly_once:
            return AtLeastOnce(self.kafka)
        name = self.topology.name
        return ExactlyOnce(TaskTransactions(
            name, name, "", transaction_timeout_ms=60000, commit_timeout_s=60.0,
            open_producer=memory_producers(self.kafka)))

    def _open_tasks(self) -> None:
        self._open_global_tables()
        for sub in self._subs:
            task = self._open_task(sub)
            self._tasks[task.id] = task
            for topic in sub.topics:
                self._by_topic[topic] = task

    def _open_task(self, sub: SubTopology) -> Task:
        task = open_task(self.topology, sub, 0, self.state_dir, self.kafka, self._globals,
                         self._task_options, self._committer)
        _watch_agent_values(task)
        return task

    def _open_global_tables(self) -> None:
        """Open the local copy of the global tables and catch up with their topics, as a
        worker does before it processes anything (the same decisions and the same apply)."""
        g = self._globals
        if g is None:
            return
        g.open()
        ends = {(t, 0): self.kafka.end(t) for t in g.topics}
        start = g.start({tp: 0 for tp in ends}, ends)
        for topic in g.topics:
            records, _ = self.kafka.read_committed(topic, start[(topic, 0)])
            if records:
                g.apply(records)

    def restart(self, *, commit: bool = True, lose_state: bool = False) -> None:
        """Stop and start the topology again on the same state directory, as a worker restart
        does: ``commit=False`` is a crash (uncommitted work is lost, input after the group's
        offsets is processed again by the next ``pipe``/``replay``); ``lose_state`` also deletes
        the local state (a new host), which is then restored from the changelogs."""
        if commit:
            self.commit()
            run_in_loop(self._committer.close())
        # (after a crash the old process's open transactions stay open until the new one's
        # producers fence them: on open)
        self._committer = self._new_committer()
        for task in self._tasks.values():
            task.abandon()
            task.close()
        self._tasks.clear()
        self._by_topic.clear()
        if self._globals is not None:
            self._globals.close()
        if lose_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self._open_tasks()

    def replay(self) -> None:
        """Process every input record after the group's committed offsets again (what a worker
        does after a crash), one batch per topic: repartition topics first, since what they
        hold after the committed offset (sent before the crash) precedes in their log anything
        the replayed input sends again, so a worker's consumer reads it first."""
        for topic in self.topology.repartition_topics() + self.topology.input_topics():
            task = self._by_topic.get(topic)
            records, end = self.kafka.read_committed(topic, self.kafka.group.get((topic, 0), 0))
            if topic in self._fed:
                self._fed[topic] = max(self._fed[topic], end)
            if task is not None and records:
                self._feed(task, {topic: records})

    # -- input ------------------------------------------------------------------------------------
    def pipe(self, topic: str, key: Any, value: Any, timestamp: int | None = None,
             headers: list[tuple[str, bytes]] | None = None) -> None:
        """Send one record (key: str or bytes; value: dict/list/str → JSON, bytes as is)."""
        self.pipe_raw(topic, *_encode(key, value), timestamp, headers)

    def pipe_raw(self, topic: str, key: bytes | None, value: bytes | None,
                 timestamp: int | None = None,
                 headers: list[tuple[str, bytes]] | None = None) -> None:
        self._run(topic, [self._input(topic, key, value, timestamp, headers or [])])

    def pipe_batch(self, topic: str, records: list[tuple[Any, ...]]) -> None:
        """Send (key, value, timestamp) or (key, value, timestamp, headers) records as ONE
        batch, as the worker does after a poll."""
        self._run(topic, [self._input(topic, *_encode(r[0], r[1]), r[2],
                                      list(r[3]) if len(r) > 3 else [])
                          for r in records])

    def pipe_poll(self, batches: dict[str, list[tuple[Any, Any, int | None]]]) -> None:
        """Send records of several topics as ONE poll: ``{topic: [(key, value, timestamp)]}``.
        A task reading several of them takes the records in timestamp order across its inputs
        (as the worker does), not topic after topic."""
        by_task: dict[TaskId, tuple[Task, dict[str, list[TestRecord]]]] = {}
        for topic, records in batches.items():
            task = self._by_topic.get(topic)
            if task is None:
                raise KeyError(f"topology {self.topology.name!r} does not read topic {topic!r}")
            raws = [self._input(topic, *_encode(key, value), ts, []) for key, value, ts in records]
            by_task.setdefault(task.id, (task, {}))[1].setdefault(topic, []).extend(raws)
            self._piped(topic, raws)
        for task, polled in by_task.values():
            self._feed(task, polled)
            self._count(sum(len(r) for r in polled.values()))

    def _input(self, topic: str, key: bytes | None, value: bytes | None, ts: int | None,
               headers: list) -> TestRecord:
        return self.kafka.append(topic, key, value, ts, headers)

    def _run(self, topic: str, raws: list[TestRecord]) -> None:
        if self._globals is not None and topic in self._globals.by_topic:
            self._globals.apply(raws)  # global tables change at once; no commit involved
            return
        task = self._by_topic.get(topic)
        if task is None:
            raise KeyError(f"topology {self.topology.name!r} does not read topic {topic!r}")
        if raws:
            self._piped(topic, raws)
            self._feed(task, {topic: raws})
            self._count(len(raws))

    def _piped(self, topic: str, raws: list[TestRecord]) -> None:
        """Records a test pipes into a repartition topic are fed to its task directly: the
        downstream read moves past them (if it had read everything before them)."""
        if raws and self._fed.get(topic, 0) == raws[0].offset:
            self._fed[topic] = raws[-1].offset + 1

    def _count(self, n: int) -> None:
        self._since_commit += n
        if self._since_commit >= self.commit_every:
            self.commit()

    def _feed(self, task: Task, polled: dict[str, list[TestRecord]]) -> None:
        """Process a poll's records of ``task``, as the worker does: directly for a task with
        one input, in timestamp order through its partition group for a task with several;
        then a progress marker to the tasks behind its repartition topics (the worker sends
        one at most every 100 ms; the driver after every batch, so tests are deterministic)."""
        for topic, raws in polled.items():
            if task.add(topic, raws):
                self._processed(task)
        # In memory nothing is left to fetch: an empty input has no records waiting anywhere.
        if task.buffered() and task.drain(self.wall_clock_ms):
            self._processed(task)

    def _processed(self, task: Task) -> None:
        self._input_at[task.id] = self.wall_clock_ms
        if task.progress_due():
            task.send_progress()
        self._drain(task)

    def _drain(self, task: Task) -> None:
        """Send the task's outputs through the committer; hand each repartition topic's
        records that became readable downstream as one batch."""
        run_sync(self._committer.send(task))
        self._feed_downstream()

    def _feed_downstream(self) -> bool:
        """Feed the downstream tasks what their repartition topics hold beyond what they read
        (read_committed: under exactly-once, only committed transactions). Returns whether
        anything was fed."""
        fed = False
        for topic in self.topology.repartition_topics():
            records, self._fed[topic] = self.kafka.read_committed(topic, self._fed.get(topic, 0))
            downstream = self._by_topic.get(topic)
            if records and downstream is not None:
                self._feed(downstream, {topic: records})
                fed = True
        return fed

    def commit(self) -> None:
        """Commit every task through the worker's committer. Under exactly-once a commit makes
        repartition records readable: the tasks behind them process them, and are committed
        in turn, until nothing moves."""
        for _ in range(100):
            _raise_failed(run_in_loop(self._committer.commit(self._tasks.values())).failed)
            if not self._feed_downstream():
                break
        else:  # a topology feeding itself for ever: say so rather than leave records unread
            raise RuntimeError("commit did not settle: repartition records still flowing after "
                               "100 rounds of commits")
        self._since_commit = 0

    def advance_stream_time(self, ts: int) -> None:
        """Move every task's stream time to ``ts`` (as an idle partition's clock would), running
        the stream-time callbacks (window closing) and writing what they emit."""
        for task in list(self._tasks.values()):
            if task.advance_stream_time(ts):
                self._drain(task)

    def advance_wall_clock(self, ms: int) -> None:
        """Move the wall clock on; records a task held back for an empty input
        (``max_task_idle_ms``) are processed once they waited long enough."""
        self.wall_clock_ms += ms
        for task in list(self._tasks.values()):
            if task.buffered():
                self._feed(task, {})
        for task in list(self._tasks.values()):
            if task.marker_targets and not task.marked_idle and not task.buffered() and (
                    self.wall_clock_ms - self._input_at.setdefault(task.id, self.wall_clock_ms)
                    >= self.repartition_idle_ms):
                task.send_progress(idle=True)  # caught up (nothing to fetch) and quiet
                self._drain(task)
        for task in list(self._tasks.values()):
            if task.refresh_watermark():  # a wake hold ended (streams.runtime.watermarks)
                self._drain(task)

    # -- output -----------------------------------------------------------------------------------
    def read_output(self, topic: str, decode: bool = True) -> list[tuple[Any, Any]]:
        """Records written to ``topic`` since the last read: (key, value), JSON-decoded."""
        records = self.read_records(topic)
        if not decode:
            return [(r.key, r.value) for r in records]
        return [(None if r.key is None else r.key.decode(),
                 None if r.value is None else json.loads(r.value)) for r in records]

    def read_records(self, topic: str) -> list[TestRecord]:
        """Records written to ``topic`` since the last read; progress markers on repartition
        topics (plumbing, see :mod:`streams.runtime.watermarks`) are left out (``topics``
        holds them)."""
        records, self._read_pos[topic] = self.kafka.read_committed(
            topic, self._read_pos.get(topic, 0))
        return [r for r in records if not is_marker(r)]

    def read_dead_letters(self) -> list[DeadLetter]:
        """Dead letters written since the last read, with their reasons and original position."""
        out = []
        for r in self.read_records(self.topology.dlq_topic):
            h = {k: v.decode() for k, v in r.headers}
            out.append(DeadLetter(r.key, r.value, h["reason"], h["error"], h["source-topic"],
                                  int(h["source-partition"]), int(h["source-offset"]),
                                  h.get("node", "")))
        return out

    def table(self, name: str) -> dict[Any, Any]:
        """The current contents of a table as {key: value} (commits first, as a worker would
        before anyone can read its state). Windowed tables: {key: {window start: value}}, or
        {key: {(start, end): value}} for sessions; versioned tables: each key's latest
        value."""
        self.commit()
        if self._globals is not None and name in self._globals.views:
            return {kb.decode(): v for kb, v in self._globals[name].items()}
        for task in self._tasks.values():
            if name in task.tables:
                view = task.tables[name]
                kind = self.topology.stores[name].kind
                if kind in ("window", "session"):
                    windows: dict[Any, dict[Any, Any]] = {}
                    for key, *bounds, value in view.fetch_all():  # type: ignore[attr-defined]
                        windows.setdefault(key, {})[bounds[0] if kind == "window"
                                                    else tuple(bounds)] = value
                    return windows
                if kind == "versioned":  # the latest version of each key
                    return {kb.decode(): v for kb, v in view.latest_items()}  # type: ignore[attr-defined]
                out = {}
                for kb, vb in task.store.items(name):  # type: ignore[union-attr]
                    out[kb.decode()] = view.decode(kb, vb)
                return out
        raise KeyError(f"no table {name!r} in topology {self.topology.name!r}")

    def close(self) -> None:
        try:
            self.commit()
        finally:
            for task in self._tasks.values():
                task.close()
            if self._globals is not None:
                self._globals.close()
            if self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> TopologyTestDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
