"""A timestamp far ahead of the wall clock (year 9999) is a dead letter, never stream time."""

from __future__ import annotations

from streams import JoinWindows, Topology, TumblingWindows
from streams.config import Settings, load_settings
from streams.testing import TopologyTestDriver

NOW = 1_700_000_000_000
DAY = 86_400_000
YEAR_9999 = 253402300799999


def test_the_default_limit_is_one_day() -> None:
    assert Settings().max_future_ms == DAY
    assert load_settings().max_future_ms == DAY  # config/defaults.toml has the entry


def window_topology() -> Topology:
    t = Topology("future_w", late_topic="late")
    (t.stream("in", timestamp="ts").group_by_key()
      .window(TumblingWindows(size=10_000, grace=5_000))
      .aggregate(lambda: 0, lambda n, v: n + 1, name="counts", emit="final")
      .to("out"))
    return t


def test_a_poison_timestamp_is_dead_lettered_and_later_records_still_count() -> None:
    with TopologyTestDriver(window_topology(), wall_clock_ms=NOW, max_future_ms=DAY) as d:
        d.pipe("in", "k", {"ts": NOW})
        d.pipe("in", "k", {"ts": YEAR_9999})
        [dead] = d.read_dead_letters()
        assert (dead.reason, dead.source_offset) == ("timestamp", 1)
        assert "max_future_ms" in dead.error
        d.pipe("in", "k", {"ts": NOW + 1})           # not late: stream time is still NOW
        d.pipe("in", "k", {"ts": NOW + DAY - 1})     # within the limit: a normal record
        assert d.read_output("late") == []
        [(key, window)] = d.read_output("out")
        assert (key, window["value"]) == ("k", 2)    # the window of NOW closed, with both
        assert d.read_dead_letters() == []


def test_without_a_limit_the_poison_timestamp_silences_the_partition() -> None:
    """What the limit protects from (max_future_ms = -1 turns it off)."""
    with TopologyTestDriver(window_topology(), wall_clock_ms=NOW, max_future_ms=-1) as d:
        d.pipe("in", "k", {"ts": YEAR_9999})
        d.pipe("in", "k", {"ts": NOW})
        assert len(d.read_output("late")) == 1


def join_topology() -> Topology:
    t = Topology("future_j", late_topic="late")
    a, b = t.stream("a", timestamp="ts"), t.stream("b", timestamp="ts")
    a.join(b, lambda left, right: {"l": left["id"], "r": right["id"]},
           JoinWindows(before=1_000, after=1_000, grace=500), name="j").to("out")
    return t


def test_a_poison_timestamp_does_not_close_a_join() -> None:
    with TopologyTestDriver(join_topology(), wall_clock_ms=NOW, max_future_ms=DAY) as d:
        d.pipe("a", "k", {"id": "a1", "ts": NOW})
        d.pipe("b", "k", {"id": "poison", "ts": YEAR_9999})
        assert [x.reason for x in d.read_dead_letters()] == ["timestamp"]
        d.pipe("b", "k", {"id": "b1", "ts": NOW + 10})
        assert d.read_output("out") == [("k", {"l": "a1", "r": "b1"})]
        assert d.read_output("late") == []


def test_a_poison_timestamp_does_not_hold_back_its_partition_in_timestamp_order() -> None:
    """A join's task takes its inputs in timestamp order and waits (max_task_idle_ms) for an
    empty one: a year-9999 record at the head of one input must not hold back that input's
    later records behind the other's."""
    with TopologyTestDriver(join_topology(), wall_clock_ms=NOW, max_future_ms=DAY,
                            max_task_idle_ms=10_000) as d:
        d.pipe_poll({"a": [("k", {"id": "a1", "ts": NOW}, None),
                           ("k", {"id": "a2", "ts": NOW + 5}, None)],
                     "b": [("k", {"id": "poison", "ts": YEAR_9999}, None),
                           ("k", {"id": "b1", "ts": NOW + 1}, None)]})
        assert [x.reason for x in d.read_dead_letters()] == ["timestamp"]
        # a1 (NOW), b1 (NOW + 1); a2 waits for b's next record (max_task_idle_ms)
        assert d.read_output("out") == [("k", {"l": "a1", "r": "b1"})]
