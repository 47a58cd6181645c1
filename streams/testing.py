"""``TopologyTestDriver``: run a topology's compiled processors without a broker.

It executes the same tasks, processors and RocksDB stores as the worker, with every topic on one
partition; records written to a repartition topic are fed to the downstream task at once.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dsl.serdes import KeySerde, json_dumps
from .dsl.topology import Topology
from .runtime.compile import subtopologies
from .runtime.task import Task
from .state.store import TaskStore


@dataclass
class TestRecord:
    """A record as the driver's topics hold it (the same fields aiokafka's records have)."""

    __test__ = False  # not a pytest class

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def _encode(key: Any, value: Any) -> tuple[bytes | None, bytes | None]:
    return KeySerde().serialize(key), (value if isinstance(value, (bytes, type(None)))
                                       else json_dumps(value))


class TopologyTestDriver:
    __test__ = False

    def __init__(self, topology: Topology, state_dir: str | Path | None = None,
                 wall_clock_ms: int = 0) -> None:
        self.topology = topology
        self._tmp = None if state_dir else tempfile.mkdtemp(prefix="streams-driver-")
        self.state_dir = Path(state_dir or self._tmp)  # type: ignore[arg-type]
        self.wall_clock_ms = wall_clock_ms
        self.topics: dict[str, list[TestRecord]] = {}
        self._read_pos: dict[str, int] = {}
        self._tasks: dict[str, Task] = {}
        self._by_topic: dict[str, Task] = {}
        for sub in subtopologies(topology):
            store = None
            if sub.stores:
                store = TaskStore(self.state_dir / f"{sub.index}_0", sub.stores)
            task = Task(topology, sub, 0, store)
            self._tasks[task.id] = task
            for topic in sub.topics:
                self._by_topic[topic] = task

    # -- input ------------------------------------------------------------------------------------
    def pipe(self, topic: str, key: Any, value: Any, timestamp: int | None = None,
             headers: list[tuple[str, bytes]] | None = None) -> None:
        """Send one record (key: str or bytes; value: dict/list/str → JSON, bytes as is)."""
        self.pipe_raw(topic, *_encode(key, value), timestamp, headers)

    def pipe_raw(self, topic: str, key: bytes | None, value: bytes | None,
                 timestamp: int | None = None, headers: list[tuple[str, bytes]] | None = None) -> None:
        self._run(topic, [self._input(topic, key, value, timestamp, headers or [])])

    def pipe_batch(self, topic: str, records: list[tuple[Any, Any, int | None]]) -> None:
        """Send (key, value, timestamp) records as ONE batch, as the worker does after a poll."""
        self._run(topic, [self._input(topic, *_encode(key, value), ts, [])
                          for key, value, ts in records])

    def _input(self, topic: str, key: bytes | None, value: bytes | None, ts: int | None,
               headers: list) -> TestRecord:
        return self._append(topic, key, value, self.wall_clock_ms if ts is None else ts, headers)

    def _run(self, topic: str, raws: list[TestRecord]) -> None:
        task = self._by_topic.get(topic)
        if task is None:
            raise KeyError(f"topology {self.topology.name!r} does not read topic {topic!r}")
        if raws:
            task.process(topic, raws)
            self._drain(task)
            self.commit()

    def _append(self, topic: str, key: bytes | None, value: bytes | None, ts: int,
                headers: list) -> TestRecord:
        log = self.topics.setdefault(topic, [])
        rec = TestRecord(topic, 0, len(log), key, value, ts, list(headers))
        log.append(rec)
        return rec

    def _drain(self, task: Task) -> None:
        for topic, _part, key, value, ts, headers in task.take_outputs():
            rec = self._append(topic, key, value, ts if ts is not None else self.wall_clock_ms,
                               headers or [])
            downstream = self._by_topic.get(topic)
            if downstream is not None and topic in self.topology.repartition_topics():
                downstream.process(topic, [rec])
                self._drain(downstream)

    def commit(self) -> None:
        for task in self._tasks.values():
            for topic, _part, key, value, ts, headers in task.prepare_commit():
                self._append(topic, key, value, ts or self.wall_clock_ms, headers or [])
            task.write_commit()

    def advance_wall_clock(self, ms: int) -> None:
        self.wall_clock_ms += ms

    # -- output -----------------------------------------------------------------------------------
    def read_output(self, topic: str, decode: bool = True) -> list[tuple[Any, Any]]:
        """Records written to ``topic`` since the last read: (key, value), JSON-decoded."""
        records = self.read_records(topic)
        if not decode:
            return [(r.key, r.value) for r in records]
        return [(None if r.key is None else r.key.decode(),
                 None if r.value is None else json.loads(r.value)) for r in records]

    def read_records(self, topic: str) -> list[TestRecord]:
        log = self.topics.get(topic, [])
        start = self._read_pos.get(topic, 0)
        self._read_pos[topic] = len(log)
        return log[start:]

    def table(self, name: str) -> dict[Any, Any]:
        """The current contents of a table as {key: value}."""
        for task in self._tasks.values():
            if name in task.tables:
                view = task.tables[name]
                out = {}
                for kb, vb in task.store.items(name):  # type: ignore[union-attr]
                    out[kb.decode()] = view.value_serde.deserialize(vb)
                return out
        raise KeyError(f"no table {name!r} in topology {self.topology.name!r}")

    def close(self) -> None:
        for task in self._tasks.values():
            task.close()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> TopologyTestDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
