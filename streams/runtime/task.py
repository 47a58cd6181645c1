"""A task: one sub-topology on one partition, with its state, offsets and pending outputs.

The task is transport-free: it turns input batches into state changes and output records.
:mod:`streams.runtime.checkpoint` drives its commit (the same code for the worker and the test
driver): ``prepare_commit()`` returns the changelog records, the caller produces and flushes
them, ``write_commit(positions)`` writes state + offsets + changelog positions in ONE WriteBatch.

Processors never see the task: it builds one :class:`~streams.runtime.context.ProcessorContext`
for itself and compiles its sub-topology against that.

The task owns its input's order and its event time: a task with several input partitions
buffers them in its own :class:`~streams.runtime.ordering.PartitionGroup` (:meth:`Task.add` and
:meth:`Task.drain`), and a task behind a repartition keeps its upstream partitions' progress in
a :class:`~streams.runtime.watermarks.Watermark`. Whatever runs the task (the worker, the test
driver) hands it records and gets outputs; a dropped or reopened task takes its buffers along.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..dsl.topology import Topology
from ..state.meta import (CHANNELS_HEADER, OFFSETS_HEADER, STREAM_TIME_HEADER, UPSTREAM_HEADER,
                          TaskId, TaskMeta, encode_channels, encode_offsets, encode_upstream,
                          shape_of, source_headers)
from ..state.store import TaskStore
from ..state.store_view import StoreView
from ..state.views import open_view
from .compile import SubTopology, build_processors, written_repartitions
from .context import Output, ProcessorContext, StreamTimeCallback
from .ordering import PartitionGroup
from .watermarks import Watermark, marker_header
from .record_limits import fit_copy

__all__ = ["Output", "Task"]


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)



class GlobalViews(Protocol):
    """The worker's global tables as a task reads them: a view by table name (a dict in tests,
    :class:`~streams.runtime.global_tables.GlobalTables` in the worker)."""

    def __getitem__(self, name: str) -> Any: ...

class Task:
    """``partitions``: partition counts of the repartition topics the task reads or writes
    (default 1 each): how many upstream partitions its watermark waits for, and how many
    partitions its progress markers go to. ``max_task_idle_ms``: see
    :mod:`streams.runtime.ordering`. ``max_future_ms``: a record whose event time is further
    ahead of ``wall_clock()`` (epoch ms) is a dead letter ``timestamp`` (< 0: no limit).
    ``repartition_idle_ms``: the watermark's wake hold (:mod:`streams.runtime.watermarks`)."""

    def __init__(self, topology: Topology, sub: SubTopology, partition: int,
                 store: TaskStore | None, global_tables: GlobalViews | None = None,
                 partitions: Mapping[str, int] | None = None, max_task_idle_ms: int = 0,
                 max_future_ms: int = -1, wall_clock: Callable[[], int] | None = None,
                 repartition_idle_ms: int = 0) -> None:
        self.topology = topology
        self.global_tables: GlobalViews = {} if global_tables is None else global_tables  # shared
        self.sub = sub
        self.partition = partition
        self.id = TaskId(sub.id, partition)
        self.store = store
        self.tps = [(t, partition) for t in sub.topics]
        self.shape = shape_of(sub.topics, sub.stores)
        meta = TaskMeta() if store is None else TaskMeta.decode(store.meta())
        # Meta holds exactly the task's current inputs: offsets of topics the topology no
        # longer reads would poison the changelog headers and the group commit.
        current = set(self.tps)
        self.offsets = {tp: o for tp, o in meta.offsets.items() if tp in current}
        self.upstream = {k: v for k, v in meta.upstream.items()
                         if k.split("|", 1)[0] in sub.topics}
        self.stream_time = meta.stream_time
        self.max_future_ms = max_future_ms
        self.wall_clock = wall_clock or _wall_clock_ms
        counts = partitions or {}
        # Repartition topics written by this sub-topology itself (an agent re-keying into its
        # own partitions) are read like direct inputs: its own progress cannot wait for itself.
        writes = written_repartitions(sub)
        behind = {t: counts.get(t, 1) for t in sub.topics
                  if t in set(topology.repartition_topics()) and t not in writes}
        self.watermark = (Watermark(behind, meta.channels, repartition_idle_ms, self.wall_clock)
                          if behind else None)
        # progress markers: to every partition of each repartition topic this task writes
        self.marker_targets = {t: counts.get(t, 1) for t in writes if t not in sub.topics}
        self.marked = -1          # the stream time of the last progress marker sent
        self.marked_idle = False  # the last marker said idle
        self._input_since_marker = False
        self.group = (PartitionGroup.for_sources(sub.sources, max_task_idle_ms,
                                                 self.future_limit)
                      if len(self.tps) > 1 else None)
        self.changelogs = {topology.stores[name].changelog: name for name in sub.stores}
        self.changelog_positions = {t: meta.changelog.get(t, 0) for t in self.changelogs}
        self.outputs: list[Output] = []
        self.dead_letters: dict[str, int] = {}
        self.dropped: dict[tuple[str, str], int] = {}
        self.late: dict[str, int] = {}  # node -> records that came after their window closed
        self.stream_time_callbacks: list[StreamTimeCallback] = []
        self.close_callbacks: list[Callable[[], None]] = []
        self._views: dict[str, StoreView] = {}
        self._repairs: dict[str, set[bytes]] = {}
        if store is not None:
            for name in sub.stores:
                spec = topology.stores[name]
                self._views[name] = open_view(store, spec)
        self.context = ProcessorContext(self)
        self._sources = build_processors(sub, self.context)

    # -- state ------------------------------------------------------------------------------------
    def table(self, name: str) -> StoreView:
        return self._views[name]

    def global_table(self, name: str) -> Any:
        try:
            return self.global_tables[name]
        except KeyError:
            raise KeyError(f"global table {name!r} is not loaded in this worker") from None

    @property
    def tables(self) -> dict[str, StoreView]:
        return self._views

    def repair(self, keys: dict[str, set[bytes]]) -> bool:
        """Write these keys' current values (or tombstones) to the changelog at the next commit:
        a restore skipped records of theirs from unfinished commits, and the finished value must
        be the latest record again before compaction keeps the unfinished one. The opener
        commits right away, so only a compaction between a crash and the next open can still
        lose such a key (at-least-once; exactly-once aborts unfinished commits instead).
        Returns whether there is anything to repair."""
        for table, ks in keys.items():
            if ks:
                self._repairs.setdefault(table, set()).update(ks)
        return bool(self._repairs)

    def approximate_keys(self) -> dict[str, int]:
        """RocksDB's key estimate per table (cheap; for metrics)."""
        store = self.store
        return {} if store is None else {t: store.approximate_keys(t) for t in self._views}

    def meta(self) -> TaskMeta:
        return TaskMeta(dict(self.offsets), dict(self.upstream), self.stream_time,
                        dict(self.changelog_positions), self.shape,
                        {} if self.watermark is None else self.watermark.channels())

    # -- input ------------------------------------------------------------------------------------
    def add(self, topic: str, raws: list[Any]) -> dict[str, int]:
        """A poll's records of one input partition. A task with one input processes them at
        once; one with several buffers them in its partition group (:meth:`drain` runs them in
        timestamp order). Returns the records processed per topic."""
        if self.group is None:
            return {topic: self.process(topic, raws)}
        self.group.add(topic, raws)
        return {}

    def buffered(self, topic: str | None = None) -> int:
        return 0 if self.group is None else self.group.buffered(topic)

    def drain(self, now_ms: int, more: Mapping[str, bool] | None = None) -> dict[str, int]:
        """Process the buffered records the partition group lets through now (see
        :meth:`PartitionGroup.drain`). Returns the records processed per topic."""
        if self.group is None:
            return {}
        runs = self.group.drain(now_ms, more)
        return self.process_runs(runs) if runs else {}

    # -- processing -------------------------------------------------------------------------------
    def process(self, topic: str, raws: list[Any]) -> int:
        """Run one batch of raw records of one input partition through the graph; records below
        the task's position (already reflected in its state) are skipped. Returns the number of
        records processed.

        If the batch advanced stream time, the stream-time callbacks run once after the whole
        batch went through the graph; their outputs join the batch's."""
        return self.process_runs([(topic, raws)]).get(topic, 0)

    def process_runs(self, runs: list[tuple[str, list[Any]]]) -> dict[str, int]:
        """Runs of records of the task's input partitions, in the order given (timestamp order,
        :mod:`streams.runtime.ordering`), as one batch: the stream-time callbacks run once,
        after the last run (operators judge each record by the stream time of its own arrival,
        so closing later within the batch changes no result). Returns the records processed
        per topic."""
        before = self.stream_time
        done: dict[str, int] = {}
        for topic, raws in runs:
            n = self._apply(topic, raws)
            if n:
                done[topic] = done.get(topic, 0) + n
                self._input_since_marker = True
        if self.stream_time > before and self.stream_time_callbacks:
            self._notify_stream_time()
        return done

    def _apply(self, topic: str, raws: list[Any]) -> int:
        position = self.offsets.get((topic, self.partition))
        if position is not None and raws and raws[0].offset < position:
            raws = [r for r in raws if r.offset >= position]
        if not raws:
            return 0
        # the values the partition group decoded for its ordering, for the source it decoded
        # them for (a filtered batch carries none: its source decodes)
        node = getattr(raws, "node", None)
        values = getattr(raws, "values", None)
        for source in self._sources[topic]:
            source.on_raw_batch(raws, values if source.node is node else None)
        if self.watermark is not None:
            now = self.watermark.end_batch()
            if now > self.stream_time:
                self.stream_time = now
        self.offsets[(topic, self.partition)] = raws[-1].offset + 1
        return len(raws)

    def future_limit(self) -> int | None:
        """The largest event time a record may have now (``max_future_ms`` ahead of the wall
        clock); None without a limit."""
        if self.max_future_ms < 0:
            return None
        return self.wall_clock() + self.max_future_ms

    def observe_time(self, ts: int) -> None:
        """A source's largest timestamp of a batch: stream time = max seen, unless the task is
        behind a repartition (its watermark decides, in :meth:`_apply`)."""
        if self.watermark is None and ts > self.stream_time:
            self.stream_time = ts

    # -- progress markers (to the tasks downstream of the repartition topics this one writes) ----
    def progress_due(self) -> bool:
        """Whether downstream tasks have not heard of this task's current progress (or last
        heard it was idle)."""
        return bool(self.marker_targets) and (
            self.stream_time > self.marked or (self.marked_idle and self._input_since_marker))

    def send_progress(self, idle: bool = False) -> None:
        """Queue a progress marker (``idle``: an idle marker) to every partition of each
        repartition topic the task writes; it goes out with the task's outputs (exactly-once:
        inside its transaction)."""
        if not self.marker_targets:
            return
        ts = self.stream_time
        headers = [marker_header(self.partition, ts, idle)]
        for topic, n in self.marker_targets.items():
            for p in range(n):
                self.outputs.append(Output(topic, p, None, None, ts if ts >= 0 else None,
                                           headers))
        self.marked, self.marked_idle = ts, idle
        self._input_since_marker = False

    def refresh_watermark(self) -> bool:
        """Move stream time to the watermark if it advanced without input (a wake hold over:
        :mod:`streams.runtime.watermarks`), running the stream-time callbacks. Returns whether
        it advanced."""
        return self.watermark is not None and self.advance_stream_time(self.watermark.value())

    def advance_stream_time(self, ts: int) -> bool:
        """Move stream time to ``ts`` without input (e.g. to close windows of an idle
        partition) and run the stream-time callbacks; nothing happens if ``ts`` is not later
        than the current stream time. Returns whether it advanced. Outputs the callbacks send
        wait in :meth:`take_outputs`, their store writes for the next commit."""
        if ts <= self.stream_time:
            return False
        self.stream_time = ts
        self._notify_stream_time()
        return True

    def _notify_stream_time(self) -> None:
        now = self.stream_time
        for callback in self.stream_time_callbacks:
            callback(now)

    # dead_letter and count_dropped stay here (the context delegates to them): they are the
    # task's counters, which the worker reads and resets for its metrics.
    def dead_letter(self, raw: Any, error: str, reason: str, node: str | None = None) -> None:
        """Route ``raw`` to the topology's dead-letter topic. After a repartition the source
        headers name the original input record (from its origin header), not the internal
        topic, which is named in ``via-topic``. ``node``: the graph node that rejected it
        (header ``node``). A record too large to copy is truncated
        (:func:`~streams.runtime.record_limits.fit_copy`)."""
        headers = [("error", error.encode()), ("reason", reason.encode()), *source_headers(raw)]
        if node is not None:
            headers.append(("node", node.encode()))
        key, value, headers = fit_copy(raw.key, raw.value, headers)  # always fits the broker
        self.outputs.append(Output(self.topology.dlq_topic, None, key, value,
                                   raw.timestamp, headers))
        self.dead_letters[reason] = self.dead_letters.get(reason, 0) + 1

    def count_dropped(self, node: str, reason: str) -> None:
        """A record an operator skips by design (a tombstone in an aggregation, no branch)."""
        self.dropped[(node, reason)] = self.dropped.get((node, reason), 0) + 1

    def take_outputs(self) -> list[Output]:
        out, self.outputs = self.outputs, []
        return out

    # -- commit -----------------------------------------------------------------------------------
    def prepare_commit(self) -> list[Output]:
        """Move table changes into the store's batch; return their changelog records."""
        if self.store is None:
            return []
        headers = [(OFFSETS_HEADER, encode_offsets(self.offsets))]
        if self.stream_time >= 0:
            headers.append((STREAM_TIME_HEADER, str(self.stream_time).encode()))
        if self.upstream:
            headers.append((UPSTREAM_HEADER, encode_upstream(self.upstream)))
        if self.watermark is not None:
            headers.append((CHANNELS_HEADER, encode_channels(self.watermark.channels())))
        out: list[Output] = []
        for name, view in self._views.items():
            topic = self.topology.stores[name].changelog
            flushed = view.flush()
            for kb, vb in flushed:
                out.append(Output(topic, self.partition, kb, vb, None, headers))
            repairs = self._repairs.pop(name, None)
            if repairs:
                repairs.difference_update(kb for kb, _ in flushed)
                for kb in sorted(repairs):
                    out.append(Output(topic, self.partition, kb, self.store.get(name, kb), None,
                                      headers))
        return out

    def write_commit(self, positions: dict[tuple[str, int], int] | None = None) -> None:
        """State + offsets + upstream positions + changelog positions in one WriteBatch (after
        the producer flush). ``positions``: end offsets of the changelog partitions written."""
        if self.store is None:
            return
        for topic in self.changelogs:
            end = (positions or {}).get((topic, self.partition))
            if end is not None:
                self.changelog_positions[topic] = end
        self.store.write(self.meta().encode())

    def abandon(self) -> None:
        """Forget uncommitted changes (the task is being closed without a commit)."""
        for view in self._views.values():
            view.discard()
        if self.store is not None:
            self.store.discard_pending()

    def close(self) -> None:
        callbacks, self.close_callbacks = self.close_callbacks, []
        for callback in callbacks:
            callback()
        if self.store is not None:
            self.store.close()
            self.store = None
