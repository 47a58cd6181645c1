"""Sliding windows against a declarative oracle, and stream time surviving a restore.

Oracle (Kafka Streams' sliding windows, stated without its incremental algorithm): when no
record is late, the final windows of a key are the left window ``[t - d, t]`` of every record
(``[0, d]`` for ``t < d``) and the right window ``[t + 1, t + 1 + d]`` of every record that has a
later record within ``d``; each aggregates all records within its bounds. That must hold for any
arrival order and any split into poll batches.
"""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from streams import SlidingWindows, Topology, TumblingWindows
from streams.testing import TopologyTestDriver
from tests.conftest import examples

D = 10


def _topology(grace: int) -> Topology:
    t = Topology("slide", late_topic="slide-late")
    (t.stream("in", timestamp="ts").group_by(lambda v: v["k"], name="by-k")
      .window(SlidingWindows(max_difference=D, grace=grace))
      .aggregate(lambda: {"n": 0, "sum": 0},
                 lambda a, v: {"n": a["n"] + 1, "sum": a["sum"] + v["x"]},
                 name="sliding", emit="final")
      .to("out"))
    return t


def oracle(records: list[tuple[str, int, int]]) -> dict[tuple[str, int, int], dict]:
    by_key: dict[str, list[tuple[int, int]]] = {}
    for k, ts, x in records:
        by_key.setdefault(k, []).append((ts, x))
    out = {}
    for k, recs in by_key.items():
        times = sorted({ts for ts, _ in recs})
        bounds = set()
        for t in times:
            bounds.add((0, D) if t < D else (t - D, t))
            if any(t < u <= t + D for u in times):
                bounds.add((t + 1, t + 1 + D))
        for s, e in bounds:
            inside = [x for ts, x in recs if s <= ts <= e]
            out[(k, s, e)] = {"n": len(inside), "sum": sum(inside)}
    return out


records_strategy = st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 60),
                                      st.integers(-5, 5)), min_size=1, max_size=25)


@settings(max_examples=examples(80), deadline=None)
@given(records=records_strategy, cuts=st.lists(st.integers(1, 6), max_size=8))
def test_final_windows_equal_the_declarative_oracle(records, cuts) -> None:
    with TopologyTestDriver(_topology(grace=1000)) as driver:
        rest = list(records)
        for n in cuts + [len(rest)]:
            batch, rest = rest[:n], rest[n:]
            if batch:
                driver.pipe_batch("in", [(k, {"k": k, "ts": ts, "x": x}, ts)
                                         for k, ts, x in batch])
        driver.advance_stream_time(10_000)
        got = {}
        for key, value in driver.read_output("out"):
            window = (key, value.pop("window_start"), value.pop("window_end"))
            assert window not in got, f"window {window} emitted twice"
            got[window] = value
        assert got == oracle(records)
        assert driver.read_output("slide-late") == []


def test_a_record_is_late_only_when_its_right_window_closed() -> None:
    with TopologyTestDriver(_topology(grace=0)) as driver:
        driver.pipe_batch("in", [("a", {"k": "a", "ts": 50, "x": 1}, 50)])
        # stream time 50: a record at 40 still has its right window [41, 51] open
        driver.pipe_batch("in", [("a", {"k": "a", "ts": 40, "x": 1}, 40),
                                 ("a", {"k": "a", "ts": 39, "x": 1}, 39)])
        assert [v["ts"] for _, v in driver.read_output("slide-late")] == [39]


def test_stream_time_is_restored_from_the_changelog() -> None:
    """After losing local state, a record late before the crash is still late (stream time
    comes back with the state), and the closed window is not emitted again."""
    t = Topology("restored", late_topic="restored-late")
    (t.stream("in", timestamp="ts").group_by(lambda v: v["k"], name="by-k")
      .window(TumblingWindows(size=10, grace=0)).count(name="counts", emit="final").to("out"))
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("a", {"k": "a", "ts": ts}, ts) for ts in (1, 2, 25)])
        assert driver.read_output("out") == [("a", {"value": 2, "window_start": 0,
                                                     "window_end": 10})]
        driver.restart(lose_state=True)
        driver.pipe_batch("in", [("a", {"k": "a", "ts": 3}, 3)])
        assert [v["ts"] for _, v in driver.read_output("restored-late")] == [3]
        assert driver.read_output("out") == []
