"""The partition group: runs in timestamp order across a task's inputs, and when it waits."""

from __future__ import annotations

from types import SimpleNamespace

from streams.runtime.ordering import LAG_WAIT_CAP_MS, PartitionGroup


def raws(*stamps: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(timestamp=ts, offset=i) for i, ts in enumerate(stamps)]


def group(idle: int = 0) -> PartitionGroup:
    by_ts = lambda raw: raw.timestamp  # noqa: E731
    return PartitionGroup(["a", "b"], {"a": by_ts, "b": by_ts}, idle)


def shape(runs: list) -> list[tuple[str, list[int]]]:
    return [(topic, [r.timestamp for r in run]) for topic, run in runs]


def test_runs_follow_the_earliest_next_record_and_keep_each_partitions_order() -> None:
    g = group()
    g.add("a", raws(1, 2, 5, 4, 9))
    g.add("b", raws(3, 3, 8))
    # a's run continues while its records are not later than b's next one (3): 1, 2; then b
    # up to a's next (5): 3, 3; then a: 5, 4 (4 < 8 stays in the run), then b 8, then a 9.
    assert shape(g.drain(0)) == [("a", [1, 2]), ("b", [3, 3]), ("a", [5, 4]), ("b", [8]),
                                 ("a", [9])]
    assert g.buffered() == 0


def test_an_empty_input_with_known_records_on_the_broker_is_waited_for() -> None:
    g = group()
    g.add("a", raws(10, 20))
    assert g.drain(0, {"b": True}) == []                 # b's records exist: wait
    g.add("b", raws(15))
    assert shape(g.drain(5, {"b": False})) == [("a", [10]), ("b", [15]), ("a", [20])]


def test_the_wait_for_known_records_is_bounded() -> None:
    g = group()
    g.add("a", raws(10))
    assert g.drain(0, {"b": True}) == []
    assert g.drain(LAG_WAIT_CAP_MS - 1, {"b": True}) == []
    assert shape(g.drain(LAG_WAIT_CAP_MS, {"b": True})) == [("a", [10])]


def test_max_task_idle_and_minus_one() -> None:
    g = group(idle=100)
    g.add("a", raws(10))
    assert g.drain(1000) == [] and g.drain(1099) == []
    assert shape(g.drain(1100)) == [("a", [10])]
    never = group(idle=-1)
    never.add("a", raws(10))
    assert shape(never.drain(0, {"b": True})) == [("a", [10])]
