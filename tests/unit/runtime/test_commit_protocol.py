"""Model-based test of the at-least-once commit protocol, without a broker.

The real tasks of ``trip_stats`` (an upstream task that repartitions rides by driver — and by
city and rider for the windowed aggregations, not followed here — and a downstream task that
aggregates them into a RocksDB table) run over in-memory topics with the
worker's own commit protocol (:func:`streams.runtime.checkpoint.commit`) and open-or-restore
decision (:func:`streams.state.recovery.decide_open`, via :func:`streams.testing.open_task`).
The downstream task moves between two hosts with their own state directories. Hypothesis
interleaves batches, commits that crash at every step or whose offset commit is lost, upstream
replays, lost state directories, hand-overs and log compaction. Whatever the schedule, once the
input is drained the table must equal a brute-force oracle — and so must a fresh restore from the
changelog: no input is ever applied twice, none is lost.
"""

from __future__ import annotations

import json
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import given, settings, strategies as st

from streams import Topology
from streams.serdes import json_dumps
from streams.runtime import checkpoint
from streams.runtime.compile import subtopologies
from streams.runtime.task import Task
from streams.testing import MemoryTopics, open_task, run_sync
from tests.conftest import examples
from topologies.trip_stats import add_ride, new_totals

# The protocol's subject: trip_stats' driver-totals pipeline (an upstream task that repartitions
# rides by driver, a downstream task that aggregates them into a RocksDB table), on its own so
# that the reference topology can grow without changing this test.
topology = Topology("trip_stats")
(topology.stream("rides", timestamp="ts")
    .group_by(lambda ride: ride["driver_id"], name="rides-by-driver")
    .aggregate(new_totals, add_ride, name="driver-totals")
    .to("driver-totals"))

SUBS = subtopologies(topology)
UP = next(s for s in SUBS if "rides" in s.topics)
DOWN = next(s for s in SUBS if "driver-totals" in s.stores)
REP = next(t for t in DOWN.topics if t in topology.repartition_topics())  # rides by driver
TABLE = "driver-totals"
CHANGELOG = topology.stores[TABLE].changelog


class Crash(Exception):
    """The process dies here."""


class FaultyTopics(MemoryTopics):
    """In-memory topics whose flush or offset commit can be made to crash or to be lost."""

    def __init__(self) -> None:
        super().__init__(lambda: 0)
        self.crash_in_flush = False
        self.crash_in_offset_commit = False
        self.lose_offset_commit = False

    async def flush(self) -> dict[tuple[str, int], int]:
        if self.crash_in_flush:     # the records are in the log, the process dies before step 3
            raise Crash()
        return await super().flush()

    async def commit_offsets(self, offsets: Any) -> None:
        if self.crash_in_offset_commit:
            raise Crash()
        if self.lose_offset_commit:  # a rebalance: the commit fails, the worker goes on
            return
        await super().commit_offsets(offsets)


class Deployment:
    def __init__(self, root: Path, rides: list[dict[str, Any]]) -> None:
        self.kafka = FaultyTopics()
        self.hosts = {"A": root / "A", "B": root / "B"}
        self.host = "A"
        for r in rides:
            self.kafka.append("rides", r["city"].encode(), json_dumps(r), r["ts"], [])
        self.rides = list(self.kafka.logs["rides"])
        self.kafka.logs.setdefault(REP, [])
        self.up = self._open(UP)
        self.up_pos = 0
        self.down = self._open(DOWN)

    def _open(self, sub: Any) -> Task:
        task = open_task(topology, sub, 0, self.hosts[self.host], self.kafka)
        return task

    # -- upstream (stateless: after a crash it resumes from the group's offset) ------------------
    def step_up(self, n: int) -> None:
        batch = self.rides[self.up_pos:self.up_pos + n]
        if batch:
            self.up.process("rides", batch)
            run_sync(self.kafka.send(self.up.take_outputs()))
            self.up_pos += len(batch)

    def commit_up(self) -> None:
        run_sync(checkpoint.commit([self.up], self.kafka))

    def crash_up(self) -> None:
        self.up = self._open(UP)
        self.up_pos = self.kafka.group.get(("rides", 0), 0)

    # -- downstream (stateful) -------------------------------------------------------------------
    def step_down(self, n: int) -> None:
        start = self.down.offsets.get((REP, 0), self.kafka.group.get((REP, 0), 0))
        batch = self.kafka.logs[REP][start:start + n]
        if batch:
            self.down.process(REP, batch)
            run_sync(self.kafka.send(self.down.take_outputs()))

    def commit_down(self, stage: str, reopen: bool = True) -> None:
        """stage: "full", a crash in it ("changelog": after producing the changelog, "batch":
        after the WriteBatch), or "offsets-lost" (the offset commit fails, the worker goes on)."""
        k = self.kafka
        k.crash_in_flush = stage == "changelog"
        k.crash_in_offset_commit = stage == "batch"
        k.lose_offset_commit = stage == "offsets-lost"
        try:
            run_sync(checkpoint.commit([self.down], k))
            crashed = False
        except Crash:
            crashed = True
        k.crash_in_flush = k.crash_in_offset_commit = k.lose_offset_commit = False
        if crashed or (stage == "offsets-lost" and reopen):
            # A failed offset commit means a rebalance: the worker closes the task and it is
            # opened again (here or, with a "move" event, on the other host).
            self.crash_down()

    def crash_down(self, lose_state: bool = False, move: bool = False) -> None:
        self.down.abandon()
        self.down.close()
        run_sync(self.kafka.flush())  # forget the crashed process's unacknowledged positions
        if move:
            self.host = "B" if self.host == "A" else "A"
        if lose_state:
            import shutil
            shutil.rmtree(self.hosts[self.host], ignore_errors=True)
        self.down = self._open(DOWN)

    def compact(self) -> None:
        """Log compaction of the changelog's committed prefix: a record is removed when a later
        record of the same key exists before the cleaner's point (offsets are kept)."""
        log = self.kafka.logs.get(CHANGELOG, [])
        point = self.down.changelog_positions.get(CHANGELOG, 0)
        last: dict[bytes, int] = {}
        for i in range(point):
            if log[i] is not None:
                last[log[i].key] = i
        for i in range(point):
            if log[i] is not None and last[log[i].key] != i:
                log[i] = None

    def drain(self) -> None:
        self.step_up(len(self.rides))
        self.commit_up()
        self.step_down(len(self.kafka.logs[REP]))
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


def ride(i: int, driver: str = "d1", fare: str = "1.00") -> dict[str, Any]:
    return {"ride_id": f"r{i}", "rider_id": "x", "driver_id": driver, "city": "c", "fare": fare,
            "ts": i}


rides_strategy = st.lists(
    st.builds(lambda i, d, c, cents: {"ride_id": f"r{i}", "rider_id": "x", "driver_id": f"d{d}",
                                      "city": f"c{c}", "fare": f"{cents / 100:.2f}", "ts": i},
              st.integers(0, 10**6), st.integers(0, 4), st.integers(0, 3), st.integers(1, 9999)),
    min_size=1, max_size=60)

# A schedule is a list of rounds: upstream work, downstream work, how far the downstream commit
# gets, and what happens afterwards. Rounds keep crashes next to the work they interrupt.
round_strategy = st.tuples(
    st.integers(0, 15),                                          # rides the upstream processes
    st.booleans(),                                               # upstream commits
    st.integers(0, 15),                                          # records the downstream processes
    st.sampled_from([None, "full", "changelog", "batch", "offsets-lost"]),
    st.sampled_from([None, "up", "down", "down-lose-state", "move", "move-lose-state",
                     "compact"]),
)


def run_schedule(root: Path, rides: list[dict[str, Any]], rounds: list[Any]) -> Deployment:
    d = Deployment(root, rides)
    for up_n, up_commit, down_n, down_commit, event in rounds:
        d.step_up(up_n)
        if up_commit:
            d.commit_up()
        d.step_down(down_n)
        if down_commit:
            d.commit_down(down_commit)
        if event == "up":
            d.crash_up()
        elif event == "compact":
            d.compact()
        elif event is not None:
            d.crash_down(lose_state=event.endswith("lose-state"), move=event.startswith("move"))
    d.drain()
    return d


def check(d: Deployment, rides: list[dict[str, Any]]) -> None:
    expected = oracle(rides)
    assert d.table() == expected
    d.compact()
    d.crash_down(lose_state=True, move=True)  # a later restore from the changelog alone
    assert d.table() == expected
    d.down.close()


@settings(max_examples=examples(200), deadline=None)
@given(rides=rides_strategy, rounds=st.lists(round_strategy, max_size=12))
def test_no_schedule_of_crashes_double_applies_or_loses_input(rides, rounds) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        check(run_schedule(Path(tmp), rides, rounds), rides)


def test_an_upstream_replay_is_recognised_record_by_record(tmp_path: Path) -> None:
    rides = [ride(i) for i in range(10)]
    d = Deployment(tmp_path, rides)
    d.step_up(6)           # produced 6 repartition records, upstream never commits
    d.step_down(4)
    d.commit_down("full")  # downstream applied 4 of them
    d.crash_up()           # upstream replays all 10: the first 6 again, at offsets 6..11
    d.step_up(10)
    d.step_down(100)
    assert len(d.kafka.logs[REP]) == 16
    # 16 records arrived, 6 of them replays: each ride counted once.
    assert d.down.table(TABLE).get("d1")["rides"] == 10
    d.drain()
    check(d, rides)


def test_replay_after_downstream_restore_uses_the_restored_upstream_positions(
        tmp_path: Path) -> None:
    """6 rides go upstream and are never committed there; downstream applies and fully commits
    them; downstream loses its state and restores from the changelog; upstream crashes and
    replays all 6 at new repartition offsets. The table must say 6 rides, not 12 (the restored
    upstream positions must come from the changelog headers)."""
    rides = [ride(i) for i in range(6)]
    d = Deployment(tmp_path, rides)
    d.step_up(6)
    d.step_down(6)
    d.commit_down("full")
    d.crash_down(lose_state=True)
    d.crash_up()
    d.step_up(6)
    d.step_down(100)
    assert d.down.table(TABLE).get("d1")["rides"] == 6
    d.drain()
    check(d, rides)


def test_state_ahead_of_the_group_is_not_trusted_after_another_owner_wrote(tmp_path: Path) -> None:
    """A writes its WriteBatch but its offset commit fails; B restores, processes and commits;
    the task returns to A, whose local offsets are >= the group's. A must take B's timeline
    (what the changelog says), not keep its own."""
    rides = [ride(i, driver=f"d{i % 2}", fare=f"{i + 1}.00") for i in range(12)]
    d = Deployment(tmp_path, rides)
    d.step_up(12)
    d.commit_up()
    d.step_down(4)
    d.commit_down("full")
    d.step_down(4)
    d.commit_down("offsets-lost", reopen=False)  # A: state at 8, group at 4
    d.crash_down(move=True)           # B restores up to 4 and processes 4..12
    d.step_down(8)
    d.commit_down("full")
    d.crash_down(move=True)           # back to A, whose local offsets (8) are < group (12)
    d.step_down(100)
    d.commit_down("full")
    check(d, rides)


def test_compaction_cannot_resurrect_an_unfinished_commit(tmp_path: Path) -> None:
    """A commit that never finished leaves a record for key d0 after d0's finished record. The
    next owner skips it on restore and writes d0's finished value again at its next commit, so
    compaction keeps that one and a later restore still finds the right value."""
    rides = [ride(0, "d0"), ride(1, "d0"), ride(2, "d1")]
    d = Deployment(tmp_path, rides)
    d.step_up(3)
    d.commit_up()
    d.step_down(1)
    d.commit_down("full")             # d0 = 1 ride, finished
    d.step_down(1)
    d.commit_down("changelog")        # d0 = 2 rides in the changelog, never finished; crash
    d.step_down(0)
    d.commit_down("full")             # the repair: d0 = 1 ride again, as the latest record
    d.compact()
    d.crash_down(lose_state=True, move=True)
    assert d.table() == {"d0": {"driver_id": "d0", "rides": 1, "fare_total": "1.00"}}
    d.drain()
    check(d, rides)
