"""A task: one sub-topology on one partition, with its state, offsets and pending outputs.

The task is transport-free: it turns input batches into state changes and output records. The
worker (or the test driver) moves the outputs to Kafka and drives the commit cycle:

1. ``prepare_commit()`` serializes the interval's table changes and returns them as changelog
   records, each carrying the task's input offsets (header ``streams-offsets``);
2. the caller produces outputs + changelog records and flushes the producer;
3. ``write_commit()`` writes state + offsets + upstream positions in ONE RocksDB WriteBatch;
4. the caller commits the consumer offsets.
"""

from __future__ import annotations

from typing import Any

from ..dsl.topology import Topology
from ..state.meta import OFFSETS_HEADER, UPSTREAM_HEADER, TaskMeta, encode_offsets, encode_upstream
from ..state.store import TaskStore
from ..state.table import TableView
from .compile import SubTopology, build_processors
from .processors import ORIGIN_HEADER

# (topic, partition or None, key, value, timestamp ms, headers or None)
Output = tuple[str, int | None, bytes | None, bytes | None, int | None, list | None]


class Task:
    def __init__(self, topology: Topology, sub: SubTopology, partition: int,
                 store: TaskStore | None) -> None:
        self.topology = topology
        self.sub = sub
        self.partition = partition
        self.id = f"{sub.index}_{partition}"
        self.store = store
        self.tps = [(t, partition) for t in sub.topics]
        meta = TaskMeta() if store is None else TaskMeta.decode(store.meta())
        self.offsets = meta.offsets
        self.upstream = meta.upstream
        self.stream_time = meta.stream_time
        self.outputs: list[Output] = []
        self.dead_letters: dict[str, int] = {}
        self.dropped: dict[tuple[str, str], int] = {}
        self._views: dict[str, TableView] = {}
        if store is not None:
            for name in sub.stores:
                spec = topology.stores[name]
                self._views[name] = TableView(store, name, spec.key_serde, spec.value_serde)
        self._sources = build_processors(sub, self)

    # -- state ------------------------------------------------------------------------------------

    def table(self, name: str) -> TableView:
        return self._views[name]

    @property
    def tables(self) -> dict[str, TableView]:
        return self._views

    # -- processing -------------------------------------------------------------------------------
    def process(self, topic: str, raws: list[Any]) -> int:
        """Run one batch of raw records of one input partition through the graph; records below
        the task's position (already reflected in its state) are skipped. Returns the number of
        records processed."""
        position = self.offsets.get((topic, self.partition))
        if position is not None and raws and raws[0].offset < position:
            raws = [r for r in raws if r.offset >= position]
        if not raws:
            return 0
        for source in self._sources[topic]:
            source.process_raw(raws)
        self.offsets[(topic, self.partition)] = raws[-1].offset + 1
        return len(raws)

    def observe_time(self, ts: int) -> None:
        if ts > self.stream_time:
            self.stream_time = ts

    def skip_replayed(self, topic: str, raws: list[Any]) -> list[Any]:
        """Drop repartitioned records this task already applied.

        After a crash the upstream task re-sends records at new offsets of the repartition topic;
        each carries its source position (topic:partition:offset:index), and positions from one
        upstream partition arrive in order, so anything at or below the highest position applied
        is a replay.
        """
        upstream = self.upstream
        fresh = []
        for raw in raws:
            origin = _header(raw.headers, ORIGIN_HEADER)
            if origin is None:
                fresh.append(raw)
                continue
            src_topic, src_part, off, idx = origin.decode().rsplit(":", 3)
            key = f"{topic}|{src_topic}:{src_part}"
            pos = (int(off), int(idx))
            last = upstream.get(key)
            if last is not None and pos <= last:
                continue
            upstream[key] = pos
            fresh.append(raw)
        return fresh

    def produce(self, topic: str, key: bytes | None, value: bytes | None, ts: int | None,
                headers: list | None = None, partition: int | None = None) -> None:
        self.outputs.append((topic, partition, key, value, ts, headers))

    def dead_letter(self, raw: Any, error: str, reason: str) -> None:
        headers = [("error", error.encode()), ("source-topic", raw.topic.encode()),
                   ("source-partition", str(raw.partition).encode()),
                   ("source-offset", str(raw.offset).encode())]
        self.outputs.append((self.topology.dlq_topic, None, raw.key, raw.value, raw.timestamp,
                             headers))
        self.dead_letters[reason] = self.dead_letters.get(reason, 0) + 1

    def count_dropped(self, node, reason):
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
        if self.upstream:
            headers.append((UPSTREAM_HEADER, encode_upstream(self.upstream)))
        out: list[Output] = []
        for name, view in self._views.items():
            topic = self.topology.stores[name].changelog
            for kb, vb in view.flush():
                out.append((topic, self.partition, kb, vb, None, headers))
        return out

    def write_commit(self) -> None:
        """State + offsets + upstream positions in one WriteBatch (after the producer flush)."""
        if self.store is not None:
            self.store.write(TaskMeta(self.offsets, self.upstream, self.stream_time).encode())

    def abandon(self) -> None:
        """Forget uncommitted changes (the task is being closed without a commit)."""
        for view in self._views.values():
            view.discard()
        if self.store is not None:
            self.store.discard_pending()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


def _header(headers: Any, name: str) -> bytes | None:
    for k, v in headers or ():
        if k == name:
            return v
    return None

