"""Event time behind a repartition: the watermark over upstream partitions (driver tests).

The driver runs partition 0 of every topic; with ``upstream_partitions=2`` the task behind the
repartition topic also waits for upstream partition 1, whose records and progress markers the
tests write into the repartition topic themselves (with the origin header an upstream task puts
on them). Records of partition 0 come through the real upstream task.
"""

from __future__ import annotations

import json
from typing import Any

from streams import Topology, TumblingWindows
from streams.runtime.watermarks import Watermark, marker_header
from streams.state.meta import ORIGIN_HEADER
from streams.testing import TopologyTestDriver

SIZE, GRACE = 10_000, 5_000


def topology() -> Topology:
    t = Topology("wm", late_topic="late")
    (t.stream("in", timestamp="ts")
      .group_by(lambda v: v["k"], name="by-k")
      .window(TumblingWindows(size=SIZE, grace=GRACE))
      .aggregate(lambda: 0, lambda n, v: n + 1, name="counts", emit="final")
      .to("out"))
    return t


T = topology()
REPART = T.repartition_topics()[0]


def driver(**kw: Any) -> TopologyTestDriver:
    return TopologyTestDriver(T, upstream_partitions=2, **kw)


_offsets = iter(range(10**6))


def from_partition_1(d: TopologyTestDriver, key: str, ts: int) -> None:
    """A record upstream partition 1 re-keyed into the repartition topic."""
    origin = f"in:1:{next(_offsets)}:0".encode()
    d.pipe_raw(REPART, key.encode(), json.dumps({"k": key, "ts": ts}).encode(), ts,
               [(ORIGIN_HEADER, origin)])


def marker_1(d: TopologyTestDriver, ts: int, idle: bool = False) -> None:
    """A progress marker of upstream partition 1."""
    d.pipe_raw(REPART, None, None, None, [marker_header(1, ts, idle)])


def windows(d: TopologyTestDriver) -> dict[tuple[str, int], int]:
    return {(k, v["window_start"]): v["value"] for k, v in d.read_output("out")}


def late(d: TopologyTestDriver) -> int:
    return len(d.read_output("late", decode=False))


def test_a_fast_upstream_partition_does_not_make_a_slow_ones_records_late() -> None:
    with driver() as d:
        d.pipe("in", "x", {"k": "a", "ts": 100_000})   # partition 0 is far ahead (a backlog)
        from_partition_1(d, "b", 10_000)               # partition 1 is not: on time
        from_partition_1(d, "b", 12_000)
        assert late(d) == 0
        assert windows(d) == {}                        # min(100 000, 12 000): still open
        from_partition_1(d, "b", 30_000)               # partition 1 moves past end + grace
        assert windows(d) == {("b", 10_000): 2}
        assert late(d) == 0


def test_progress_markers_move_a_channel_without_data_and_are_no_data() -> None:
    with driver() as d:
        from_partition_1(d, "b", 10_000)
        d.pipe("in", "x", {"k": "a", "ts": 50_000})
        assert windows(d) == {}
        marker_1(d, 40_000)  # partition 1 is at 40 000: [10 s, 20 s) closes
        assert windows(d) == {("b", 10_000): 1}
        assert d.read_dead_letters() == [] and late(d) == 0
        # and the upstream task itself sent markers into the repartition topic
        sent = [r for r in d.topics[REPART] if r.value is None and r.headers[0][1] == b"0:50000"]
        assert sent


def test_an_unheard_of_upstream_partition_is_waited_for_an_idle_one_is_not() -> None:
    with driver() as d:
        d.pipe("in", "x", {"k": "a", "ts": 1_000})
        d.pipe("in", "x", {"k": "a", "ts": 50_000})
        assert windows(d) == {}                        # partition 1 may still send 1 000s
        marker_1(d, -1, idle=True)                     # caught up, nothing to send
        assert windows(d) == {("a", 0): 1}
        from_partition_1(d, "b", 60_000)               # data again: waited for again
        d.pipe("in", "x", {"k": "a", "ts": 90_000})
        assert windows(d) == {}                        # min(90 000, 60 000) < 50 000 + 15 000
        from_partition_1(d, "b", 70_000)
        assert windows(d) == {("a", 50_000): 1}        # min(90 000, 70 000) closes it


def test_all_channels_idle_give_the_largest_progress() -> None:
    with driver(repartition_idle_ms=1_000) as d:
        from_partition_1(d, "b", 60_000)
        marker_1(d, 60_000, idle=True)
        d.pipe("in", "x", {"k": "a", "ts": 40_000})
        assert windows(d) == {}                        # only partition 0 counts: 40 000
        d.advance_wall_clock(1_000)                    # upstream 0 caught up and quiet: idle
        assert windows(d) == {("a", 40_000): 1}        # all idle: the largest, 60 000


def test_channels_survive_a_restart_and_a_restore_from_the_changelog() -> None:
    for lose_state in (False, True):
        with driver() as d:
            d.pipe("in", "x", {"k": "a", "ts": 100_000})
            from_partition_1(d, "b", 10_000)
            d.restart(lose_state=lose_state)
            from_partition_1(d, "b", 12_000)           # on time: the watermark is 10 000
            assert late(d) == 0
            marker_1(d, 40_000)                        # partition 0 is known to be at 100 000
            assert windows(d) == {("b", 10_000): 2}, lose_state


def test_the_watermark_never_moves_back() -> None:
    wm = Watermark({"r": 2})
    assert wm.value() == -1
    wm._advance("r|0", 50, False)
    wm._advance("r|1", 30, False)
    assert wm.value() == 30
    wm._advance("r|1", 20, False)                     # an older record: no change
    assert wm.value() == 30
    wm._advance("r|1", 80, False)
    assert wm.value() == 50
    restored = Watermark({"r": 2}, wm.channels())
    assert restored.value() == 50


def agent_topology() -> Topology:
    t = Topology("wm_agents")
    hop = t.internal_topic("hop")
    counts = t.table_store("counts", default=int).tumbling(10_000)

    @t.agent("in")
    async def forward(stream):  # noqa: ANN001
        async for _key, value in stream.items():
            await hop.send(key=value["k"], value=value)

    @t.agent(hop, sink=["out"])
    async def count(stream):  # noqa: ANN001
        async for key, _value in stream.items():
            counts[key] += 1
            yield {"k": key, "n": counts[key].now()}
    return t


def test_an_agents_windowed_table_reads_now_by_the_watermark() -> None:
    """``now()`` reads the window of the task's stream time: behind an internal topic the
    watermark, so a batch holding a fast upstream partition's record does not move it."""
    t = agent_topology()
    hop = t.repartition_topics()[0]

    def origin(partition: int) -> list[tuple[str, bytes]]:
        return [(ORIGIN_HEADER, f"in:{partition}:{next(_offsets)}:0".encode())]

    with TopologyTestDriver(t, upstream_partitions=2) as d:
        d.pipe_batch(hop, [("a", {"k": "a"}, 100_000, origin(0)),
                           ("b", {"k": "b"}, 10_000, origin(1))])
        assert d.read_output("out") == [("a", {"k": "a", "n": 1}), ("b", {"k": "b", "n": 1})]


def _all_idle(d: TopologyTestDriver) -> None:
    """Both upstream partitions at 1 000, caught up and quiet: both idle."""
    d.pipe("in", "x", {"k": "a", "ts": 1_000})
    from_partition_1(d, "b", 1_000)
    marker_1(d, 1_000, idle=True)
    d.advance_wall_clock(1_000)                        # upstream 0 quiet for 1 s: idle too
    assert windows(d) == {} and late(d) == 0


def test_input_after_a_quiet_spell_is_not_late_for_the_partition_that_wakes_second() -> None:
    with driver(repartition_idle_ms=1_000) as d:
        _all_idle(d)
        d.pipe("in", "x", {"k": "a", "ts": 100_000})  # new input: partition 0 processes first
        assert windows(d) == {}                        # partition 1 still counts, at 1 000
        from_partition_1(d, "b", 21_000)               # its part of the same input, a bit later
        assert late(d) == 0
        assert windows(d) == {("a", 0): 1, ("b", 0): 1}  # min(100 000, 21 000)


def test_a_partition_that_stays_quiet_is_left_out_again_after_the_hold() -> None:
    with driver(repartition_idle_ms=1_000) as d:
        _all_idle(d)
        d.pipe("in", "x", {"k": "a", "ts": 100_000})
        d.advance_wall_clock(500)
        d.pipe("in", "x", {"k": "a", "ts": 100_500})
        assert windows(d) == {}                        # held: partition 1 may still send
        d.advance_wall_clock(500)                      # the hold is over, partition 1 silent
        assert windows(d) == {("a", 0): 1, ("b", 0): 1}  # partition 0 alone: 100 500
