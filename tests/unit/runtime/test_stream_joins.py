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
    with TopologyTestDriver(topology(joiner=lambda left, right: None)) as d:
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
        # retention = before 10 + after 10 + grace 5 = 25
        d.pipe("b", "k", rec("old", 974))    # 974 + 25 < 1000: late
        d.pipe("b", "k", rec("r1", 975))     # 975 + 25 >= 1000: kept, but not l1's partner
        d.pipe("b", "k", rec("r2", 990))     # pairs with l1
        assert d.read_output("out") == [("k", {"l": "l1", "r": "r2"})]
        [late] = d.read_records("late")
        headers = dict(late.headers)
        assert headers["reason"] == b"late" and headers["node"] == b"j-right-join"
        assert late.value == b'{"id":"old","ts":974}'
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


# -- Kafka Streams parity: order of unmatched results, retention -----------------------------------

def _kv(d: TopologyTestDriver) -> list[tuple[str, str | None, str | None, int]]:
    return [(r.key.decode(), *(lambda v: (v["l"], v["r"]))(__import__("json").loads(r.value)),
             r.timestamp) for r in d.read_records("out")]


def test_unmatched_results_closed_by_a_record_come_before_its_own_results() -> None:
    # b@101 closes A0's window (0 + after 100 + grace 0 < 101) and pairs with A1.
    w = JoinWindows(before=100, after=100, grace=0)
    with TopologyTestDriver(topology("left", windows=w)) as d:
        d.pipe("a", "0", rec("A0", 0))
        d.pipe("a", "0", rec("A1", 50))
        d.pipe("b", "0", rec("b", 101))
        assert _kv(d) == [("0", "A0", None, 0), ("0", "A1", "b", 101)]


def test_unmatched_results_come_out_in_timestamp_order_right_side_first() -> None:
    w = JoinWindows(before=100, after=100, grace=1000)
    with TopologyTestDriver(topology("outer", windows=w)) as d:
        d.pipe("b", "0", rec("R", 0))
        d.pipe("a", "0", rec("L", 150))
        d.pipe("a", "9", rec("Z", 2000))     # closes R (0 + 1100) and L (150 + 1100)
        assert _kv(d) == [("0", None, "R", 0), ("0", "L", None, 150)]


def test_unmatched_results_of_one_timestamp_are_ordered_right_first_then_by_key_bytes() -> None:
    w = JoinWindows(before=10, after=10, grace=0)
    with TopologyTestDriver(topology("outer", windows=w)) as d:
        d.pipe_batch("a", [("b", rec("Lb", 5), None), ("ab", rec("Lab", 5), None),
                           ("ab", rec("Lab2", 5), None)])
        d.pipe("b", "c", rec("Rc", 5))
        d.pipe("b", "zz", rec("close", 100))
        assert _kv(d) == [("c", None, "Rc", 5), ("ab", "Lab", None, 5), ("ab", "Lab2", None, 5),
                          ("b", "Lb", None, 5)]


def test_a_record_behind_its_window_still_pairs_within_the_retention() -> None:
    # before/after 100, grace 0: records are kept for 200 ms of stream time. R@40 arrives at
    # stream time 150, after its own window (40 + 100) closed: Kafka still joins it with L@0.
    w = JoinWindows(before=100, after=100, grace=0)
    with TopologyTestDriver(topology("inner", windows=w)) as d:
        d.pipe("a", "k", rec("L", 0))
        d.pipe("a", "z", rec("Z", 150))
        d.pipe("b", "k", rec("R", 40))
        d.pipe("b", "y", rec("Y", 210))      # L (0 + 200 < 210) is no longer kept
        d.pipe("b", "k", rec("R2", 60))      # R2 is kept (60 + 200 >= 210), L is not
        assert _kv(d) == [("k", "L", "R", 40)]
        assert next(iter(d._tasks.values())).late == {}


def test_an_out_of_order_record_whose_window_ended_is_emitted_unmatched_at_once() -> None:
    # Kafka: a left record with no partner whose window end (ts + after) is already behind
    # stream time goes out unmatched right away; a partner arriving later within the retention
    # still pairs with it.
    w = JoinWindows(before=100, after=100, grace=1000)
    with TopologyTestDriver(topology("left", windows=w)) as d:
        d.pipe("a", "z", rec("Z", 500))
        d.pipe("a", "k", rec("K", 300))      # 300 + 100 < 500
        assert _kv(d) == [("k", "K", None, 300)]
        d.pipe("b", "k", rec("R", 350))
        assert _kv(d) == [("k", "K", "R", 350)]
