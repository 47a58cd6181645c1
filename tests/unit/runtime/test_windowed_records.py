"""Windowed aggregations over faust Record values, and bad input to window operators."""

from __future__ import annotations

import faust

from streams import HoppingWindows, SessionWindows, Topology, TumblingWindows
from streams.testing import TopologyTestDriver


class Ride(faust.Record, serializer="json"):
    city: str
    fare: int
    ts: int


class Stats(faust.Record, serializer="json"):
    rides: int
    fares: int


def test_record_values_and_record_aggregates_survive_commits() -> None:
    t = Topology("rec")
    g = t.stream("rides", value=Ride, timestamp="ts").group_by(lambda r: r.city, name="by-city")
    (g.window(TumblingWindows(size=100, grace=0))
      .aggregate(lambda: Stats(rides=0, fares=0),
                 lambda s, r: Stats(rides=s.rides + 1, fares=s.fares + r.fare),
                 name="stats", emit="final").to("stats-out"))
    (g.window(HoppingWindows(size=100, advance=50))
      .reduce(lambda a, b: Ride(city=a.city, fare=max(a.fare, b.fare), ts=max(a.ts, b.ts)),
              name="max-fare", emit="update").to("max-out"))
    with TopologyTestDriver(t, commit_every=1) as driver:  # a commit between every record
        for fare, ts in [(5, 10), (7, 20), (3, 60), (9, 150)]:
            driver.pipe_batch("rides", [("x", {"city": "berlin", "fare": fare, "ts": ts}, ts)])
        assert driver.read_output("stats-out") == [
            ("berlin", {"rides": 3, "fares": 15, "window_start": 0, "window_end": 100})]
        maxes = [(v["window_start"], v["fare"]) for _, v in driver.read_output("max-out")]
        assert maxes == [(0, 5), (0, 7), (0, 7), (50, 3), (100, 9), (150, 9)]


def test_a_failing_adder_sends_only_its_record_to_the_dlq_and_leaves_no_effect() -> None:
    t = Topology("bad")

    def add(total: int, v: dict) -> int:
        return total + 100 // v["n"]   # n == 0 raises

    (t.stream("in", timestamp="ts").group_by(lambda v: v["k"], name="by-k")
      .window(HoppingWindows(size=10, advance=5)).aggregate(lambda: 0, add, name="sums",
                                                            emit="final").to("out"))
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("x", {"k": "a", "n": 1, "ts": 7}, 7),
                                 ("x", {"k": "a", "n": 0, "ts": 8}, 8),
                                 ("x", {"k": "a", "n": 2, "ts": 9}, 9),
                                 ("x", {"k": None, "n": 2, "ts": 9}, 9)])
        (dead,) = driver.read_dead_letters()
        assert dead.reason == "processing" and dead.source_offset == 1
        driver.advance_stream_time(100)
        assert [(v["window_start"], v["value"]) for _, v in driver.read_output("out")] == [
            (0, 150), (5, 150)]


def test_sessions_without_a_merger_are_refused() -> None:
    t = Topology("nomerge")
    g = t.stream("in").group_by(lambda v: v["k"], name="by-k")
    try:
        g.window(SessionWindows(gap=5)).aggregate(lambda: 0, lambda a, v: a + 1, name="s")
    except ValueError as exc:
        assert "merger" in str(exc)
    else:
        raise AssertionError("a session aggregate without merger must be refused")


def test_an_aggregate_that_cannot_be_stored_fails_only_its_record() -> None:
    """Final mode encodes each window once per batch; when that fails, the records are applied
    one by one to find the one whose aggregate cannot be stored."""
    t = Topology("unstorable")

    def add(agg: dict, v: dict) -> dict:
        return {**agg, "n": agg["n"] + 1, **({"bad": object()} if v["bad"] else {})}

    (t.stream("in", timestamp="ts").group_by(lambda v: v["k"], name="by-k")
      .window(TumblingWindows(size=10)).aggregate(lambda: {"n": 0}, add, name="agg",
                                                  emit="final").to("out"))
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("x", {"k": "a", "bad": b, "ts": ts}, ts)
                                 for ts, b in [(1, False), (2, True), (3, False)]])
        assert [d.source_offset for d in driver.read_dead_letters()] == [1]
        driver.advance_stream_time(100)
        assert driver.read_output("out") == [("a", {"n": 2, "window_start": 0,
                                                     "window_end": 10})]
