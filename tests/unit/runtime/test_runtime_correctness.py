"""Runtime regressions: task meta holds only current inputs, state of another topology shape is
never opened, internal topics are sized from the inputs, dead letters after a repartition name
the original record, fan-out through a repartition keeps every record, and offset-commit errors
other than a rebalance stop the worker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import CommitFailedError, KafkaConnectionError

from streams import Topology
from streams.runtime.compile import subtopologies
from streams.runtime.transport import KafkaTransport
from streams.runtime.task import Task
from streams.runtime.topics import plan_topics
from streams.runtime.task_manager import StateShapeMismatch, check_state_shape
from streams.state.meta import OFFSETS_HEADER, TaskId, TaskMeta, encode_offsets
from streams.state.recovery import ChangelogFilter
from streams.state.store import TaskStore
from streams.testing import TopologyTestDriver


def _counter(topics: list[str]) -> Topology:
    t = Topology("shape")
    t.store("seen")

    def remember(key: Any, value: Any, stores: Any) -> None:
        stores["seen"].put(key, value)

    for topic in topics:
        t.stream(topic).process(remember, stores=["seen"])
    return t


# -- item 6: meta holds exactly the task's current inputs ------------------------------------------
def test_offsets_of_topics_no_longer_read_are_dropped_from_meta(tmp_path: Path) -> None:
    t = _counter(["a"])
    (sub,) = subtopologies(t)
    store = TaskStore(tmp_path / "task", sub.stores)
    store.write(TaskMeta({("a", 0): 5, ("gone", 0): 9}).encode())
    task = Task(t, sub, 0, store)
    assert task.offsets == {("a", 0): 5}
    task.table("seen").put("k", 1)
    (record,) = task.prepare_commit()
    assert dict(record.headers)[OFFSETS_HEADER] == encode_offsets({("a", 0): 5})
    task.write_commit({})
    assert "offset:gone:0" not in store.meta() and store.meta()["offset:a:0"] == "5"
    task.close()


def test_restore_filter_ignores_offsets_of_topics_the_task_no_longer_reads() -> None:
    accept = ChangelogFilter({("a", 0): 10}, inputs=[("a", 0)])
    assert accept.accept({OFFSETS_HEADER: encode_offsets({("a", 0): 7, ("gone", 0): 99})})
    assert not accept.accept({OFFSETS_HEADER: encode_offsets({("a", 0): 11})})


class _Consumer:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def commit(self, offsets: Any) -> None:
        raise self.error


def test_offset_commit_errors_other_than_a_rebalance_are_raised() -> None:
    lost = KafkaTransport(None, _Consumer(CommitFailedError("rebalanced")))  # type: ignore[arg-type]
    asyncio.run(lost.commit_offsets({("a", 0): 1}))  # state is ahead; decide_open handles it
    broken = KafkaTransport(None, _Consumer(KafkaConnectionError("gone")))  # type: ignore[arg-type]
    with pytest.raises(KafkaConnectionError):
        asyncio.run(broken.commit_offsets({("a", 0): 1}))


# -- item 7: never open state written by another shape ---------------------------------------------
def test_state_with_other_tables_is_refused_with_a_reset_hint(tmp_path: Path) -> None:
    t = _counter(["a"])
    (sub,) = subtopologies(t)
    path = tmp_path / str(TaskId(sub.id, 0))
    TaskStore(path, ["driver-totals"]).close()
    with pytest.raises(StateShapeMismatch, match="streams tables reset shape"):
        check_state_shape(path, t, sub)


def test_state_of_the_same_tables_from_other_inputs_is_refused(tmp_path: Path) -> None:
    old, new = _counter(["a", "b"]), _counter(["a", "c"])
    (old_sub,), (new_sub,) = subtopologies(old), subtopologies(new)
    path = tmp_path / "task"
    with TopologyTestDriver(old, state_dir=tmp_path / "drv") as driver:
        driver.pipe("a", "k", {"n": 1})
    (written,) = [p for p in (tmp_path / "drv").iterdir()]
    written.rename(path)
    check_state_shape(path, old, old_sub)  # its own shape opens
    with pytest.raises(StateShapeMismatch, match="other input topics"):
        check_state_shape(path, new, new_sub)


def test_no_state_yet_is_fine(tmp_path: Path) -> None:
    t = _counter(["a"])
    (sub,) = subtopologies(t)
    check_state_shape(tmp_path / "nothing", t, sub)


# -- item 8: internal topics sized from the inputs -------------------------------------------------
def _grouped() -> Topology:
    t = Topology("sized")
    t.stream("clicks").group_by(lambda v: v["user"], name="by-user").count(name="clicks-per-user")
    return t


def test_internal_topics_get_the_partition_count_of_their_inputs() -> None:
    specs, problems = plan_topics(_grouped(), {"clicks": 12}, default=4)
    sizes = {s.name: s.partitions for s in specs}
    assert not problems
    assert sizes["clicks"] == 12
    assert sizes["sized-by-user-repartition"] == 12
    assert sizes["sized-clicks-per-user-changelog"] == 12
    assert sizes["sized-dlq"] == 4  # not an internal topic: the default when missing


def test_an_internal_topic_of_the_wrong_size_is_one_clear_problem() -> None:
    _, problems = plan_topics(_grouped(), {"clicks": 12, "sized-clicks-per-user-changelog": 4}, 4)
    assert problems == ["internal topic sized-clicks-per-user-changelog has 4 partitions but its "
                        "sub-topology has 12 tasks; "
                        "run `streams tables reset sized` to recreate it"]


def test_inputs_read_together_must_be_co_partitioned() -> None:
    _, problems = plan_topics(_counter(["a", "b"]), {"a": 2, "b": 3}, 4)
    assert len(problems) == 1 and "co-partitioned" in problems[0]


# -- item 10: dead letters after a repartition name the original input -----------------------------
def test_a_dead_letter_after_a_repartition_names_the_original_record() -> None:
    t = Topology("dl")

    def add(total: int, value: dict) -> int:
        return total + 100 // value["n"]  # n == 0 raises

    t.stream("in").group_by(lambda v: v["user"], name="by-user").aggregate(
        lambda: 0, add, name="totals")
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("x", {"user": "u", "n": 1}, 1), ("x", {"user": "u", "n": 2}, 2),
                                 ("y", {"user": "u", "n": 0}, 3)])
        (dead,) = driver.read_records("dl-dlq")
        headers = dict(dead.headers)
        assert headers["reason"] == b"processing"
        assert b"ZeroDivisionError" in headers["error"]
        assert headers["source-topic"] == b"in"
        assert headers["source-partition"] == b"0" and headers["source-offset"] == b"2"
        assert headers["via-topic"] == b"dl-by-user-repartition"
        assert driver.table("totals") == {"u": 150}


# -- item 14: fan-out through a repartition --------------------------------------------------------
def test_fan_out_through_a_repartition_keeps_every_record() -> None:
    """One input fans out to several repartition records; each carries its own origin index, so
    the downstream task does not take records 2..n for replays of record 1."""
    t = Topology("fan")
    (t.stream("orders")
      .flat_map(lambda v: [{"item": i} for i in v["items"]])
      .group_by(lambda v: v["item"], name="by-item")
      .count(name="per-item"))
    orders = [("o1", {"items": ["a", "b", "a"]}, 1), ("o2", {"items": ["b", "c"]}, 2)]
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("orders", orders)
        assert driver.table("per-item") == {"a": 2, "b": 2, "c": 1}
        driver.pipe_batch("orders", [("o3", {"items": ["c", "c"]}, 3)])
        assert driver.table("per-item") == {"a": 2, "b": 2, "c": 3}
