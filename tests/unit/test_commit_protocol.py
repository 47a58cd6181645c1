"""Model-based test of the at-least-once commit protocol, without a broker.

The real tasks of ``trip_stats`` (an upstream task that repartitions rides by driver and a
downstream task that aggregates them into a RocksDB table) run over in-memory logs, while
hypothesis interleaves batches, commits, crashes at every point of the commit cycle, upstream
replays and lost state directories. Whatever the schedule, once the input is drained the table
must equal a brute-force oracle: no input is ever applied twice, none is lost.
"""

from __future__ import annotations

import json
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import given, settings, strategies as st

from streams.dsl.serdes import json_dumps
from streams.runtime.compile import subtopologies
from streams.runtime.task import Task
from streams.state.meta import TaskMeta
from streams.state.recovery import ChangelogFilter, local_state_behind
from streams.state.store import TaskStore
from streams.testing import TestRecord
from topologies.trip_stats import topology

SUBS = subtopologies(topology)
UP = next(s for s in SUBS if "rides" in s.topics)
DOWN = next(s for s in SUBS if "driver-totals" in s.stores)
REP = topology.repartition_topics()[0]
TABLE = "driver-totals"


class Deployment:
    """Two tasks over in-memory topics, with the group's committed offsets kept apart from the
    tasks' local state, as Kafka and RocksDB keep them."""

    def __init__(self, root: Path, rides: list[dict[str, Any]]) -> None:
        self.path = root / f"{DOWN.index}_0"
        self.rides = [TestRecord("rides", 0, i, r["city"].encode(), json_dumps(r), r["ts"])
                      for i, r in enumerate(rides)]
        self.rep: list[TestRecord] = []
        self.changelog: list[tuple[bytes, bytes | None, dict[str, bytes]]] = []
        self.up_committed = 0
        self.down_committed: int | None = None
        self._start_up()
        self._open_down()

    # -- upstream (stateless: position = committed offset after a crash) ----------------------------
    def _start_up(self) -> None:
        self.up = Task(topology, UP, 0, None)
        self.up_pos = self.up_committed

    def step_up(self, n: int) -> None:
        batch = self.rides[self.up_pos:self.up_pos + n]
        if not batch:
            return
        self.up.process("rides", batch)
        for topic, _p, key, value, ts, headers in self.up.take_outputs():
            assert topic == REP
            self.rep.append(TestRecord(REP, 0, len(self.rep), key, value, ts or 0, headers or []))
        self.up_pos += len(batch)

    def commit_up(self) -> None:
        self.up_committed = self.up_pos  # outputs are already in the log ("flushed")

    def crash_up(self) -> None:
        self._start_up()  # re-sends from its committed offset, at new repartition offsets

    # -- downstream (stateful) -------------------------------------------------------------------
    def _open_down(self) -> None:
        committed = {} if self.down_committed is None else {(REP, 0): self.down_committed}
        store = TaskStore(self.path, DOWN.stores)
        task = Task(topology, DOWN, 0, store)
        if local_state_behind(task.offsets, committed):
            task.close()
            TaskStore.destroy(self.path)
            store = TaskStore(self.path, DOWN.stores)
            decide = ChangelogFilter(committed)
            for key, value, headers in self.changelog:
                if decide.accept(headers):
                    store.write_raw(TABLE, [(key, value)])
            store.write(TaskMeta(dict(committed), decide.upstream).encode())
            task = Task(topology, DOWN, 0, store)
        self.down = task
        self.down_pos = task.offsets.get((REP, 0), self.down_committed or 0)

    def step_down(self, n: int) -> None:
        batch = self.rep[self.down_pos:self.down_pos + n]
        if batch:
            self.down.process(REP, batch)
            self.down.take_outputs()
            self.down_pos += len(batch)

    def commit_down(self, stage: str) -> None:
        """stage: how far the commit gets before a crash ("changelog", "batch") or "full"."""
        for _t, _p, key, value, _ts, headers in self.down.prepare_commit():
            self.changelog.append((key, value, dict(headers or [])))
        if stage == "changelog":
            return self.crash_down()
        self.down.write_commit()
        if stage == "batch":
            return self.crash_down()
        self.down_committed = self.down_pos

    def crash_down(self, lose_state: bool = False) -> None:
        self.down.abandon()
        self.down.close()
        if lose_state:
            TaskStore.destroy(self.path)
        self._open_down()

    def drain(self) -> None:
        self.step_up(len(self.rides))
        self.commit_up()
        self.step_down(len(self.rep))
        self.commit_down("full")

    def table(self) -> dict[str, Any]:
        assert self.down.store is not None
        return {k.decode(): json.loads(v) for k, v in self.down.store.items(TABLE)}


def oracle(rides: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in rides:
        rides_n, total = out.get(r["driver_id"], (0, Decimal(0)))
        out[r["driver_id"]] = (rides_n + 1, total + Decimal(r["fare"]))
    return {d: {"driver_id": d, "rides": n, "fare_total": f"{t:.2f}"} for d, (n, t) in out.items()}


rides_strategy = st.lists(
    st.builds(lambda i, d, c, cents: {"ride_id": f"r{i}", "rider_id": "x", "driver_id": f"d{d}",
                                      "city": f"c{c}", "fare": f"{cents / 100:.2f}", "ts": i},
              st.integers(0, 10**6), st.integers(0, 4), st.integers(0, 3), st.integers(1, 9999)),
    min_size=1, max_size=60)

# A schedule is a list of rounds: upstream work, downstream work, how far the downstream commit
# gets, and what crashes afterwards. Rounds keep crashes next to the work they interrupt.
round_strategy = st.tuples(
    st.integers(0, 15),                                          # rides the upstream processes
    st.booleans(),                                               # upstream commits its offsets
    st.integers(0, 15),                                          # records the downstream processes
    st.sampled_from([None, "full", "changelog", "batch"]),       # downstream commit, or crash in it
    st.sampled_from([None, "up", "down", "down-lose-state"]),    # crash after the round
)


@settings(max_examples=150, deadline=None)
@given(rides=rides_strategy, rounds=st.lists(round_strategy, max_size=12))
def test_no_schedule_of_crashes_double_applies_or_loses_input(rides, rounds) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Deployment(Path(tmp), rides)
        for up_n, up_commit, down_n, down_commit, crash in rounds:
            d.step_up(up_n)
            if up_commit:
                d.commit_up()
            d.step_down(down_n)
            if down_commit:
                d.commit_down(down_commit)
            if crash == "up":
                d.crash_up()
            elif crash is not None:
                d.crash_down(lose_state=crash == "down-lose-state")
        d.drain()
        assert d.table() == oracle(rides)
        d.down.close()


def test_an_upstream_replay_is_recognised_record_by_record(tmp_path: Path) -> None:
    rides = [{"ride_id": f"r{i}", "rider_id": "x", "driver_id": "d1", "city": "c", "fare": "1.00",
              "ts": i} for i in range(10)]
    d = Deployment(tmp_path, rides)
    d.step_up(6)          # produced 6 repartition records, upstream never commits
    d.step_down(4)
    d.commit_down("full")  # downstream applied 4 of them
    d.crash_up()           # upstream replays all 10: the first 6 again, at offsets 6..11
    d.step_up(10)
    d.step_down(100)
    assert len(d.rep) == 16
    # 16 records arrived, 6 of them replays: each ride counted once.
    assert d.down.table(TABLE).get("d1")["rides"] == 10
    d.drain()
    assert d.table() == oracle(rides)
    d.down.close()
