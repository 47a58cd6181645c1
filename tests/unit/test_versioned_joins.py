"""Versioned tables and as-of stream-table joins with grace, through the TopologyTestDriver.

The property test compares the join's output with a brute-force oracle written from Kafka
Streams' rules (VersionedKeyValueStore, KStreamKTableJoinProcessor with a grace buffer): every
accepted table version kept in a list, the stream records held back in a list, nothing shared
with the implementation.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import Topology
from streams.state.versioned_store import count_versions
from streams.testing import TopologyTestDriver
from tests.conftest import examples

KEYS = ["a", "b", "c"]


def joined(value: dict[str, Any], row: Any) -> dict[str, Any]:
    return {"id": value["id"], "ts": value["ts"], "row": row}


def build(history_ms: int, grace_ms: int | None, how: str = "left") -> Topology:
    t = Topology("vj")
    users = t.table("vj-table", versioned=timedelta(milliseconds=history_ms))
    grace = None if grace_ms is None else timedelta(milliseconds=grace_ms)
    (t.stream("vj-stream", timestamp="ts")
        .join(users, joined, how=how, grace=grace, name="vj")
        .to("vj-out"))
    return t


# -- oracle ----------------------------------------------------------------------------------------
class Oracle:
    """Kafka Streams' rules, brute force.

    Versioned store: stream time ``T`` = max timestamp put; a put older than ``T - R`` is not
    applied; ``get(key, t)``: if ``t < T - R`` the latest version if it is not after ``t``,
    else the version with the largest timestamp <= t (the later write of equal timestamps), a
    tombstone meaning no row. Join with grace ``G``: a stream record older than
    ``stream time - G`` is joined at once; otherwise it waits until stream time reaches
    ``ts + G`` and is then joined, with the others released at the same time, in timestamp
    order (then key, then arrival).
    """

    def __init__(self, history_ms: int, grace_ms: int) -> None:
        self.r, self.g = history_ms, grace_ms
        self.table_time = -1
        self.stream_time = -1      # the task's: every record of both inputs
        self.versions: dict[str, list[tuple[int, Any]]] = {}
        self.held: list[tuple[int, str, int, dict[str, Any]]] = []
        self.arrivals = 0
        self.out: list[tuple[str, dict[str, Any]]] = []

    def as_of(self, key: str, t: int) -> Any:
        versions = self.versions.get(key, [])
        if t < self.table_time - self.r:
            if not versions:
                return None
            latest_ts = max(ts for ts, _ in versions)
            latest = [v for ts, v in versions if ts == latest_ts][-1]
            return latest if latest_ts <= t else None
        older = [(ts, v) for ts, v in versions if ts <= t]
        if not older:
            return None
        best = max(ts for ts, _ in older)
        return [v for ts, v in older if ts == best][-1]

    def table(self, key: str, value: Any, ts: int) -> None:
        if self.table_time < 0 or ts >= self.table_time - self.r:
            self.versions.setdefault(key, []).append((ts, value))
            self.table_time = max(self.table_time, ts)
        self.stream_time = max(self.stream_time, ts)
        self.release()

    def stream(self, key: str, value: dict[str, Any]) -> None:
        ts = value["ts"]
        self.stream_time = max(self.stream_time, ts)
        if self.g == 0 or ts < self.stream_time - self.g:
            self.join(key, value)
            return
        self.arrivals += 1
        self.held.append((ts, key, self.arrivals, value))
        self.release()

    def release(self) -> None:
        due = sorted(h for h in self.held if h[0] <= self.stream_time - self.g)
        self.held = [h for h in self.held if h[0] > self.stream_time - self.g]
        for _, key, _, value in due:
            self.join(key, value)

    def join(self, key: str, value: dict[str, Any]) -> None:
        self.out.append((key, joined(value, self.as_of(key, value["ts"]))))


# -- property -------------------------------------------------------------------------------------
# Timestamps relative to the largest so far: mostly near it, some ahead, some far behind (late
# beyond the grace and the retention too).
delta = st.integers(-150, 60)
table_op = st.tuples(st.just("table"), st.sampled_from(KEYS),
                     st.one_of(st.none(), st.integers(0, 9)), delta)
stream_op = st.tuples(st.just("stream"), st.sampled_from(KEYS), st.just(0), delta)
restart_op = st.tuples(st.just("restart"), st.just(""), st.booleans(), st.just(0))
ops_strategy = st.lists(st.one_of(table_op, table_op, stream_op, stream_op, stream_op,
                                  restart_op), min_size=1, max_size=40)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_strategy, history_ms=st.sampled_from([0, 30, 100, 1000]),
       grace_ms=st.sampled_from([0, 20, 80]), commit_every=st.sampled_from([1, 3, 1000]))
def test_versioned_join_matches_the_as_of_oracle(ops: list[tuple[str, str, Any, int]],
                                                 history_ms: int, grace_ms: int,
                                                 commit_every: int) -> None:
    """Out-of-order table and stream records, tombstones, records older than the retention,
    stream records held for the grace, and restarts (``lose_state``: restored from the
    changelogs): the outputs are the oracle's, in its order."""
    oracle = Oracle(history_ms, grace_ms)
    topology = build(history_ms, grace_ms or None)
    with TopologyTestDriver(topology, commit_every=commit_every) as d:
        latest = 200
        for i, (kind, key, value, dt) in enumerate(ops):
            ts = max(0, latest + dt)
            if kind != "restart":
                latest = max(latest, ts)
            if kind == "table":
                d.pipe("vj-table", key, None if value is None else {"v": value}, timestamp=ts)
                oracle.table(key, None if value is None else {"v": value}, ts)
            elif kind == "stream":
                record = {"id": i, "ts": ts}
                d.pipe("vj-stream", key, record)
                oracle.stream(key, record)
            else:
                d.restart(lose_state=bool(value))
        got = d.read_output("vj-out")
        assert d.read_dead_letters() == []
    assert got == oracle.out


# -- minimal examples ------------------------------------------------------------------------------
def test_a_table_update_later_in_time_does_not_change_an_earlier_stream_records_row() -> None:
    with TopologyTestDriver(build(history_ms=60_000, grace_ms=None)) as d:
        d.pipe("vj-table", "a", {"v": 1}, timestamp=1_000)
        d.pipe("vj-table", "a", {"v": 2}, timestamp=5_000)
        d.pipe("vj-stream", "a", {"id": "early", "ts": 3_000})  # processed after both updates
        d.pipe("vj-stream", "a", {"id": "late", "ts": 6_000})
        d.pipe("vj-stream", "a", {"id": "before-all", "ts": 500})
        assert [v["row"] for _, v in d.read_output("vj-out")] == [{"v": 1}, {"v": 2}, None]


def test_an_out_of_order_stream_record_within_grace_joins_the_version_of_its_own_time() -> None:
    with TopologyTestDriver(build(history_ms=60_000, grace_ms=10_000)) as d:
        d.pipe("vj-table", "a", {"v": 1}, timestamp=1_000)
        d.pipe("vj-stream", "a", {"id": 1, "ts": 8_000})
        d.pipe("vj-stream", "a", {"id": 2, "ts": 4_000})      # out of order, within grace
        d.pipe("vj-table", "a", {"v": 2}, timestamp=3_000)    # arrives after both, in grace
        d.pipe("vj-table", "a", {"v": 3}, timestamp=6_000)
        assert d.read_output("vj-out") == []                  # held until ts + grace
        d.pipe("vj-stream", "b", {"id": 3, "ts": 19_000})     # stream time passes 8_000 + grace
        assert d.read_output("vj-out") == [
            ("a", {"id": 2, "ts": 4_000, "row": {"v": 2}}),   # released in timestamp order
            ("a", {"id": 1, "ts": 8_000, "row": {"v": 3}})]
        d.pipe("vj-stream", "a", {"id": 4, "ts": 2_000})      # older than stream time - grace
        assert d.read_output("vj-out") == [("a", {"id": 4, "ts": 2_000, "row": {"v": 1}})]


def test_held_records_are_released_when_table_records_move_stream_time() -> None:
    with TopologyTestDriver(build(history_ms=60_000, grace_ms=10_000)) as d:
        d.pipe("vj-stream", "a", {"id": 1, "ts": 1_000})
        d.pipe("vj-table", "a", {"v": 1}, timestamp=500)
        assert d.read_output("vj-out") == []
        d.pipe("vj-table", "b", {"v": 9}, timestamp=11_000)
        assert d.read_output("vj-out") == [("a", {"id": 1, "ts": 1_000, "row": {"v": 1}})]


def test_a_tombstone_is_a_version() -> None:
    for how in ("left", "inner"):
        with TopologyTestDriver(build(history_ms=60_000, grace_ms=None, how=how)) as d:
            d.pipe("vj-table", "a", {"v": 1}, timestamp=1_000)
            d.pipe("vj-table", "a", None, timestamp=2_000)
            d.pipe("vj-table", "a", {"v": 3}, timestamp=3_000)
            for ts in (1_500, 2_000, 2_500, 3_500):
                d.pipe("vj-stream", "a", {"id": ts, "ts": ts})
            rows = {v["id"]: v["row"] for _, v in d.read_output("vj-out")}
            if how == "left":
                assert rows == {1_500: {"v": 1}, 2_000: None, 2_500: None, 3_500: {"v": 3}}
            else:
                assert rows == {1_500: {"v": 1}, 3_500: {"v": 3}}
            assert d.table("vj-table") == {"a": {"v": 3}}


def test_history_retention_drops_old_table_records_and_bounds_lookups() -> None:
    with TopologyTestDriver(build(history_ms=1_000, grace_ms=None)) as d:
        d.pipe("vj-table", "a", {"v": 1}, timestamp=1_000)
        d.pipe("vj-table", "a", {"v": 2}, timestamp=5_000)
        d.pipe("vj-table", "b", {"v": 1}, timestamp=1_000)    # stream time 5_000: too old
        d.pipe("vj-table", "c", {"v": 1}, timestamp=4_500)    # within retention
        for key, ts in (("a", 4_200), ("a", 3_000), ("b", 3_000), ("c", 3_000), ("a", 6_000)):
            d.pipe("vj-stream", key, {"id": f"{key}@{ts}", "ts": ts})
        rows = {v["id"]: v["row"] for _, v in d.read_output("vj-out")}
        assert rows == {
            "a@4200": {"v": 1},  # within retention: exact
            "a@3000": None,      # before T - R, and a's latest (5_000) is later: no row
            "b@3000": None,      # b's record was dropped
            "c@3000": None,      # c's only version is after 3_000
            "a@6000": {"v": 2}}
        assert d.table("vj-table") == {"a": {"v": 2}, "c": {"v": 1}}


def test_only_new_latest_versions_are_table_updates() -> None:
    t = Topology("vj_updates")
    users = t.table("vj-table", versioned=timedelta(seconds=60))
    users.to_stream().to("vj-updates")
    with TopologyTestDriver(t) as d:
        d.pipe("vj-table", "a", {"v": 1}, timestamp=1_000)
        d.pipe("vj-table", "a", {"v": 3}, timestamp=3_000)
        d.pipe("vj-table", "a", {"v": 2}, timestamp=2_000)    # history only
        d.pipe("vj-table", "a", {"v": 4}, timestamp=3_000)    # replaces the latest
        assert d.read_output("vj-updates") == [("a", {"v": 1}), ("a", {"v": 3}), ("a", {"v": 4})]


def test_held_records_and_versions_survive_a_restart_without_local_state() -> None:
    with TopologyTestDriver(build(history_ms=60_000, grace_ms=10_000)) as d:
        d.pipe("vj-table", "a", {"v": 1}, timestamp=1_000)
        d.pipe("vj-table", "a", {"v": 2}, timestamp=5_000)
        d.pipe("vj-stream", "a", {"id": 1, "ts": 4_000})
        d.restart(lose_state=True)                            # restored from the changelogs
        assert d.read_output("vj-out") == []
        d.pipe("vj-stream", "b", {"id": 2, "ts": 30_000})
        assert d.read_output("vj-out") == [("a", {"id": 1, "ts": 4_000, "row": {"v": 1}})]


def test_old_versions_are_deleted_once_no_lookup_can_return_them() -> None:
    with TopologyTestDriver(build(history_ms=100, grace_ms=None)) as d:
        [task] = [task for task in d._tasks.values() if "vj-table" in task.tables]

        def stored() -> tuple[int, int]:
            d.commit()
            return count_versions(task.store, "vj-table")  # type: ignore[arg-type]

        for i in range(210):
            d.pipe("vj-table", "a", {"v": i}, timestamp=i * 10)
        d.pipe("vj-table", "b", {"v": 0}, timestamp=2_050)
        d.pipe("vj-table", "b", None, timestamp=2_060)
        d.pipe("vj-table", "c", {"v": 0}, timestamp=2_100)
        # T - R = 2_000: a keeps 2_000 (valid then) .. 2_090; b both versions; c its one
        assert stored() == (10 + 2 + 1, 3)
        d.pipe("vj-stream", "a", {"id": 1, "ts": 2_000})
        assert [v["row"] for _, v in d.read_output("vj-out")] == [{"v": 200}]
        d.pipe("vj-table", "c", {"v": 1}, timestamp=2_300)
        # T - R = 2_200: a keeps its latest only; b's tombstone and the value it ended are gone
        assert stored() == (1 + 0 + 2, 2)


def test_grace_needs_a_versioned_table_and_a_name() -> None:
    t = Topology("vj_bad")
    plain = t.table("plain")
    versioned = t.table("versioned", versioned=timedelta(minutes=1))
    with pytest.raises(ValueError, match="versioned"):
        t.stream("s").join(plain, joined, grace=timedelta(seconds=1), name="x")
    with pytest.raises(TypeError, match="name="):
        t.stream("s").join(versioned, joined, grace=timedelta(seconds=1))
    with pytest.raises(ValueError, match="negative"):
        t.table("other", versioned=timedelta(seconds=-1))


def test_tables_get_reads_latest_as_of_and_every_version_from_local_state(tmp_path) -> None:
    from streams.tables.inspect import get_value, get_versions

    topology = build(history_ms=60_000, grace_ms=None)
    # the driver keeps tasks under its state dir, a worker under <state dir>/<topology>
    with TopologyTestDriver(topology, state_dir=tmp_path / topology.name) as d:
        d.pipe("vj-table", "a", {"v": 1}, timestamp=1_000)
        d.pipe("vj-table", "a", {"v": 2}, timestamp=5_000)
        d.pipe("vj-table", "b", {"v": 1}, timestamp=2_000)
        d.pipe("vj-table", "b", None, timestamp=3_000)
    state = str(tmp_path)
    assert get_value(topology, state, "vj-table", "a") == {"v": 2}
    assert get_value(topology, state, "vj-table", "a", as_of=4_999) == {"v": 1}
    assert get_value(topology, state, "vj-table", "b", as_of=2_500) == {"v": 1}
    with pytest.raises(LookupError, match="as of 3000"):
        get_value(topology, state, "vj-table", "b", as_of=3_000)
    assert get_versions(topology, state, "vj-table", "b") == [
        {"timestamp": 2_000, "value": {"v": 1}}, {"timestamp": 3_000, "value": None}]


def test_the_dsl_docstring_example_runs() -> None:
    import doctest

    import streams.dsl.versioned

    result = doctest.testmod(streams.dsl.versioned)
    assert result.attempted > 0 and result.failed == 0
