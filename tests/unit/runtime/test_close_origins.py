"""Results emitted when a window closes (no one input record behind them) reach a task behind a
repartition exactly once: across restarts, after other records went through the same
repartition topic, and when the close is replayed after a crash before its commit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import JoinWindows, SessionWindows, SlidingWindows, Topology, TumblingWindows
from streams.state.meta import ORIGIN_HEADER, decode_origin, header
from streams.testing import TopologyTestDriver
from tests.conftest import examples

WINDOWS = {"tumbling": TumblingWindows(size=100),
           "session": SessionWindows(gap=10),
           "sliding": SlidingWindows(max_difference=10)}


def closed_windows_counted(kind: str) -> Topology:
    """Final per-user window counts, re-keyed to one key and counted: the number of windows
    that closed."""
    t = Topology("wclose")
    (t.stream("plays", timestamp="ts").group_by_key()
      .window(WINDOWS[kind]).count(name="per-window", emit="final")
      .to_stream().group_by(lambda v: "windows", name="all").count(name="closed"))
    return t


def play(ts: int) -> dict:
    return {"ts": ts}


@pytest.mark.parametrize("kind", sorted(WINDOWS))
def test_final_window_results_after_a_restart_are_not_taken_for_replays(kind: str) -> None:
    with TopologyTestDriver(closed_windows_counted(kind)) as d:
        d.pipe("plays", "u1", play(10))
        d.pipe("plays", "u2", play(20))
        d.pipe("plays", "u1", play(500))    # closes the windows of 10 and 20
        closed_before = d.table("closed")["windows"]
        assert closed_before >= 2
        d.restart()
        d.pipe("plays", "u2", play(1000))   # closes the windows of 500
        closed_after = d.table("closed")["windows"]
        assert closed_after > closed_before
        d.restart()
        d.advance_stream_time(5000)         # closes the windows of 1000
        assert d.table("closed")["windows"] > closed_after


def test_a_close_replayed_after_a_crash_before_its_commit_counts_once() -> None:
    with TopologyTestDriver(closed_windows_counted("tumbling")) as d:
        d.pipe("plays", "u1", play(10))
        d.pipe("plays", "u2", play(20))
        d.pipe("plays", "u3", play(120))
        d.commit()
        d.pipe("plays", "u1", play(250))    # closes [0, 100) of u1, u2 and [100, 200) of u3
        assert len(d.read_records("wclose-all-repartition")) == 3  # (table() would commit)
        d.restart(commit=False)             # crash: the close is not committed anywhere
        d.replay()                          # its three results again, then the input again
        assert d.table("closed") == {"windows": 3}
        d.pipe("plays", "u2", play(400))    # closes [200, 300) of u1
        assert d.table("closed") == {"windows": 4}


def test_final_window_origins_are_their_close_times() -> None:
    """The origin position of a final result is (its window's close time, its rank among the
    results of that close): the same on a replay, larger for every later close."""
    t = Topology("wpos")
    (t.stream("plays", timestamp="ts").group_by_key()
      .window(TumblingWindows(size=100, grace=30)).count(name="per-window", emit="final")
      .to_stream().group_by(lambda v: "windows", name="all").count(name="closed"))
    with TopologyTestDriver(t) as d:
        d.pipe("plays", "u2", play(10))
        d.pipe("plays", "u1", play(20))
        d.pipe("plays", "u1", play(150))
        d.pipe("plays", "u1", play(500))
        origins = [decode_origin(header(r.headers, ORIGIN_HEADER) or b"")
                   for r in d.read_records("wpos-all-repartition")]
        assert [(o.topic, o.offset, o.output_index) for o in origins] == [
            ("wpos-per-window-changelog", 130, 0), ("wpos-per-window-changelog", 130, 1),
            ("wpos-per-window-changelog", 230, 0)]


def pair(left: dict | None, right: dict | None) -> dict:
    return {"l": left and left["id"], "r": right and right["id"]}


def unmatched_counted() -> Topology:
    """A left join's results re-keyed by whether they found a partner, and counted."""
    t = Topology("jclose")
    a, b = t.stream("a", timestamp="ts"), t.stream("b", timestamp="ts")
    (a.join(b, pair, JoinWindows(before=10, after=10), how="left", name="j")
      .group_by(lambda v: "unmatched" if v["r"] is None else "matched", name="kind")
      .count(name="kinds"))
    return t


def rec(rid: str, ts: int) -> dict:
    return {"id": rid, "ts": ts}


def test_unmatched_join_results_after_other_results_and_restarts_all_count() -> None:
    with TopologyTestDriver(unmatched_counted()) as d:
        d.pipe("a", "k1", rec("l1", 0))
        d.pipe("a", "k2", rec("l2", 100))   # closes l1: unmatched
        d.pipe("b", "k2", rec("r2", 100))   # matched: another origin in between
        d.pipe("a", "k3", rec("l3", 200))
        d.pipe("a", "k4", rec("l4", 300))   # closes l3: unmatched
        assert d.table("kinds") == {"unmatched": 2, "matched": 1}
        d.restart()
        d.pipe("a", "k5", rec("l5", 400))   # closes l4: unmatched
        assert d.table("kinds") == {"unmatched": 3, "matched": 1}


def test_an_unmatched_close_replayed_after_a_crash_counts_once() -> None:
    with TopologyTestDriver(unmatched_counted()) as d:
        d.pipe("a", "k1", rec("l1", 0))
        d.pipe("a", "k2", rec("l2", 5))
        d.commit()
        d.pipe("a", "k3", rec("l3", 100))   # closes l1 and l2
        assert len(d.read_records("jclose-kind-repartition")) == 2  # (table() would commit)
        d.restart(commit=False)             # crash: the close is not committed anywhere
        d.replay()
        assert d.table("kinds") == {"unmatched": 2}
        d.pipe("a", "k4", rec("l4", 200))   # closes l3
        assert d.table("kinds") == {"unmatched": 3}


def test_unmatched_results_of_both_sides_of_an_asymmetric_outer_join_all_count() -> None:
    """Left markers close ``after`` later than right ones here, so one close emits them out of
    close-time order; each side has its own origin (its changelog), in close-time order."""
    t = Topology("oclose")
    a, b = t.stream("a", timestamp="ts"), t.stream("b", timestamp="ts")
    (a.join(b, pair, JoinWindows(before=0, after=50), how="outer", name="j")
      .group_by(lambda v: "left" if v["r"] is None else "right", name="side")
      .count(name="sides"))
    with TopologyTestDriver(t) as d:
        d.pipe("a", "k1", rec("l1", 0))     # closes at 51
        d.pipe("b", "k2", rec("r2", 30))    # closes at 31
        d.pipe("a", "k3", rec("l3", 40))    # closes at 91
        d.pipe("b", "k4", rec("r4", 60))    # closes r2 and l1
        d.pipe("b", "k5", rec("r5", 100))   # closes r4 and l3
        d.restart()
        d.pipe("a", "k6", rec("l6", 300))   # closes r5
        assert d.table("sides") == {"left": 2, "right": 3}


def held_joins_counted() -> Topology:
    """A versioned-table join with grace (records held back, released later), re-keyed and
    counted."""
    t = Topology("vclose")
    users = t.table("users", versioned=timedelta(milliseconds=1000))
    (t.stream("clicks", timestamp="ts")
      .join(users, lambda c, u: {"id": c["id"], "u": u}, how="left",
            grace=timedelta(milliseconds=50), name="vj")
      .group_by(lambda v: "joined", name="one").count(name="joined"))
    return t


def test_records_released_by_a_versioned_join_after_a_restart_all_count() -> None:
    with TopologyTestDriver(held_joins_counted()) as d:
        d.pipe("clicks", "k1", rec("c1", 10))
        d.pipe("clicks", "k2", rec("c2", 50))
        d.pipe("clicks", "k3", rec("c3", 100))   # releases c1, then c2 (at 100)
        d.pipe("clicks", "k4", rec("c4", 20))    # too old to wait: joined at once
        d.pipe("clicks", "k5", rec("c5", 50))    # its release time (100) is past: at once too
        d.pipe("clicks", "k6", rec("c6", 200))   # releases c3
        assert d.table("joined") == {"joined": 5}
        d.restart()
        d.pipe("clicks", "k7", rec("c7", 300))   # releases c6
        assert d.table("joined") == {"joined": 6}


# -- property: every window that closes is counted once behind the repartition ------------------
events = st.lists(
    st.one_of(st.tuples(st.just("play"), st.sampled_from(["u1", "u2", "u3"]),
                        st.integers(0, 1000)),
              st.tuples(st.sampled_from(["commit", "restart", "crash"]))),
    max_size=30)


@settings(max_examples=examples(40), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=events)
def test_every_closed_window_is_counted_once_whatever_restarts_and_crashes(events) -> None:
    """Oracle (Kafka Streams' rules for tumbling windows, grace 0): stream time is the largest
    timestamp seen; a record whose window ends at or before stream time (itself included) is
    late and dropped; every other (key, window) closes exactly once, here by the end."""
    size = 100
    stream_time, windows = -1, set()
    with TopologyTestDriver(closed_windows_counted("tumbling")) as d:
        for event in events:
            if event[0] == "play":
                _, user, ts = event
                d.pipe("plays", user, play(ts))
                stream_time = max(stream_time, ts)
                start = ts - ts % size
                if start + size > stream_time:
                    windows.add((user, start))
            elif event[0] == "commit":
                d.commit()
            elif event[0] == "restart":
                d.restart()
            else:
                d.restart(commit=False)
                d.replay()
        d.advance_stream_time(10_000)
        assert d.table("closed").get("windows", 0) == len(windows)
