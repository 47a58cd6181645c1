"""Stream-stream joins in the driver: bad input, user functions that fail, late records,
repartitioning a re-keyed side, and timestamp order across the two inputs."""

from __future__ import annotations

import pytest

from streams import JoinWindows, Topology
from streams.testing import TopologyTestDriver


def pair(left: dict | None, right: dict | None) -> dict:
    return {"l": left and left["id"], "r": right and right["id"]}


def topology(how: str = "inner", joiner=pair, late_topic: str | None = None,
             windows: JoinWindows | None = None) -> Topology:
    t = Topology("joins_rt", late_topic=late_topic)
    a, b = t.stream("a", timestamp="ts"), t.stream("b", timestamp="ts")
    a.join(b, joiner, windows or JoinWindows(before=10, after=10, grace=5), how=how,
           name="j").to("out")
    return t


def rec(rid: str, ts: int) -> dict:
    return {"id": rid, "ts": ts}


def test_a_failing_joiner_dead_letters_the_record_and_leaves_no_state() -> None:
    def joiner(left, right):
        if left["id"] == "bad":
            raise RuntimeError("boom")
        return pair(left, right)

    with TopologyTestDriver(topology("left", joiner)) as d:
        d.pipe("b", "k", rec("r1", 100))
        d.pipe("a", "k", rec("bad", 100))      # pairs with r1: the joiner raises
        [dead] = d.read_dead_letters()
        assert (dead.reason, dead.source_topic, dead.source_offset) == ("processing", "a", 0)
        assert "boom" in dead.error
        assert d.table("j-left") == {} and d.table("j-left-unmatched") == {}
        d.pipe("b", "k", rec("r2", 101))       # "bad" was rolled back: nothing to pair with,
        assert d.read_dead_letters() == []     # so its joiner is not called again
        d.advance_stream_time(10_000)          # and no unmatched marker of it either
        assert d.read_output("out") == []


def test_a_joiner_returning_none_is_a_shape_error() -> None:
    with TopologyTestDriver(topology(joiner=lambda l, r: None)) as d:
        d.pipe("a", "k", rec("l1", 100))
        d.pipe("b", "k", rec("r1", 100))
        [dead] = d.read_dead_letters()
        assert dead.reason == "shape" and dead.source_topic == "b"
        assert d.read_output("out") == []


def test_an_unmatched_record_whose_joiner_fails_at_close_is_a_dead_letter() -> None:
    def joiner(left, right):
        if right is None:
            raise ValueError("no partner")
        return pair(left, right)

    with TopologyTestDriver(topology("left", joiner)) as d:
        d.pipe("a", "k", rec("l1", 100))
        d.pipe("a", "z", rec("l2", 1000))      # closes l1's window: its joiner raises
        [dead] = d.read_dead_letters()
        assert dead.reason == "processing" and "no partner" in dead.error
        assert d.read_output("out") == []


def test_null_keys_and_values_are_dropped_and_malformed_input_dead_lettered() -> None:
    with TopologyTestDriver(topology("outer")) as d:
        d.pipe_raw("a", None, b'{"id": "nokey", "ts": 100}')
        d.pipe_raw("a", b"k", b"not json")
        d.pipe_raw("b", b"k", b'{"id": "nan", "ts": "NaN"}')
        d.pipe("b", "k", rec("r1", 100))
        d.advance_stream_time(10_000)
        reasons = sorted(x.reason for x in d.read_dead_letters())
        assert reasons == ["decode", "timestamp"]
        assert d.read_output("out") == [("k", {"l": None, "r": "r1"})]  # "nokey" joined nothing
        task = next(iter(d._tasks.values()))
        assert task.dropped == {("j-left-join", "null-key"): 1}


def test_late_records_are_counted_and_written_to_the_late_topic() -> None:
    with TopologyTestDriver(topology("left", late_topic="late")) as d:
        d.pipe("a", "k", rec("l1", 1000))
        d.pipe("b", "k", rec("old", 984))    # 984 + before 10 + grace 5 < 1000: late
        d.pipe("b", "k", rec("r1", 990))     # 990 + 15 >= 1000: on time, pairs with l1
        assert d.read_output("out") == [("k", {"l": "l1", "r": "r1"})]
        [late] = d.read_records("late")
        headers = dict(late.headers)
        assert headers["reason"] == b"late" and headers["node"] == b"j-right-join"
        assert late.value == b'{"id":"old","ts":984}'
        task = next(iter(d._tasks.values()))
        assert task.late == {"j-right-join": 1}


def test_a_rekeyed_side_is_repartitioned_before_the_join() -> None:
    t = Topology("joins_rekey")
    a = t.stream("a", timestamp="ts").select_key(lambda v: v["user"])
    b = t.stream("b", timestamp="ts")
    a.join(b, pair, JoinWindows(before=10, after=10), name="j").to("out")
    assert t.repartition_topics() == ["joins_rekey-j-left-repartition"]
    with TopologyTestDriver(t) as d:
        d.pipe("a", "ignored", {"id": "l1", "user": "u1", "ts": 100})
        d.pipe("b", "u1", rec("r1", 105))
        assert d.read_output("out") == [("u1", {"l": "l1", "r": "r1"})]


def test_join_dispatches_on_the_type_of_the_other_side() -> None:
    t = Topology("joins_types")
    s = t.stream("a")
    with pytest.raises(TypeError, match="cannot join a Stream with int"):
        s.join(3)
    with pytest.raises(TypeError, match="needs name="):
        s.join(t.stream("b"), pair, JoinWindows(before=1, after=1))
    with pytest.raises(ValueError, match="how must be one of"):
        s.join(t.stream("c"), pair, JoinWindows(before=1, after=1), how="full", name="x")


def _two_backlogs(d: TopologyTestDriver, n: int, *, poll: bool) -> None:
    """Left and right records k{i} at ts i*100, as one poll (or topic after topic)."""
    left = [(f"k{i}", rec(f"l{i}", i * 100), None) for i in range(n)]
    right = [(f"k{i}", rec(f"r{i}", i * 100 + 50), None) for i in range(n)]
    if poll:
        d.pipe_poll({"a": left, "b": right})
    else:
        d.pipe_batch("a", left)
        d.pipe_batch("b", right)


def test_a_poll_of_both_inputs_is_processed_in_timestamp_order() -> None:
    # Window 0..60 ms, grace 10 ms: each pair is only found if neither side ran ahead.
    windows = JoinWindows(before=0, after=60, grace=10)
    with TopologyTestDriver(topology(windows=windows)) as d:
        _two_backlogs(d, 50, poll=True)
        assert len(d.read_output("out")) == 50
    with TopologyTestDriver(topology(windows=windows)) as d:   # the same, topic after topic
        _two_backlogs(d, 50, poll=False)
        assert len(d.read_output("out")) < 5


def test_max_task_idle_holds_records_for_an_empty_input() -> None:
    windows = JoinWindows(before=0, after=60, grace=10)
    with TopologyTestDriver(topology(windows=windows), max_task_idle_ms=1000) as d:
        d.pipe("a", "k", rec("l1", 100))
        d.pipe("a", "z", rec("l2", 500))       # held: input b has nothing buffered
        d.advance_wall_clock(500)
        d.pipe("b", "k", rec("r1", 150))       # now both have records: in timestamp order
        assert d.read_output("out") == [("k", {"l": "l1", "r": "r1"})]
        d.pipe("a", "y", rec("l3", 600))       # b is empty again: l2, l3 wait 1 s of wall clock
        d.advance_wall_clock(999)
        task = next(iter(d._tasks.values()))
        assert task.stream_time == 150
        d.advance_wall_clock(1)
        assert task.stream_time == 600
