"""A task: one sub-topology on one partition, with its state, offsets and pending outputs.

The task is transport-free: it turns input batches into state changes and output records.
:mod:`streams.runtime.checkpoint` drives its commit (the same code for the worker and the test
driver): ``prepare_commit()`` returns the changelog records, the caller produces and flushes
them, ``write_commit(positions)`` writes state + offsets + changelog positions in ONE WriteBatch.

Processors never see the task: it builds one :class:`~streams.runtime.context.ProcessorContext`
for itself and compiles its sub-topology against that.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..dsl.topology import Topology
from ..state.meta import (OFFSETS_HEADER, STREAM_TIME_HEADER, UPSTREAM_HEADER, TaskId, TaskMeta,
                          encode_offsets, encode_upstream, shape_of, source_headers)
from ..state.store import TaskStore
from ..state.table import StoreView
from ..state.views import open_view
from .compile import SubTopology, build_processors
from .context import Output, ProcessorContext, StreamTimeCallback
from .record_limits import fit_copy

__all__ = ["Output", "Task"]


class Task:
    def __init__(self, topology: Topology, sub: SubTopology, partition: int,
                 store: TaskStore | None, global_tables: Mapping[str, Any] | None = None) -> None:
        self.topology = topology
        self.global_tables = global_tables or {}  # the worker's, shared by its tasks
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
                        dict(self.changelog_positions), self.shape)

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
        if self.stream_time > before and self.stream_time_callbacks:
            self._notify_stream_time()
        return done

    def _apply(self, topic: str, raws: list[Any]) -> int:
        position = self.offsets.get((topic, self.partition))
        if position is not None and raws and raws[0].offset < position:
            raws = [r for r in raws if r.offset >= position]
        if not raws:
            return 0
        for source in self._sources[topic]:
            source.on_raw_batch(raws)
        self.offsets[(topic, self.partition)] = raws[-1].offset + 1
        return len(raws)

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
