"""A task with several inputs orders them by event time, which decodes each value: the source
reuses that decoded value instead of decoding it again, and bad input still reaches the dead
letters exactly once with its reason."""

from __future__ import annotations

from typing import Any

import faust

from streams import JoinWindows, Topology
from streams.serdes import JsonObjectSerde
from streams.testing import TopologyTestDriver


class CountingSerde(JsonObjectSerde):
    """JSON objects, counting the values it decodes."""

    def __init__(self) -> None:
        self.decoded = 0

    def deserialize(self, data: bytes | None) -> Any:
        self.decoded += 1
        return super().deserialize(data)


def _id(value: Any) -> Any:
    if value is None:
        return None
    # a Record source hands its Records to the joiner
    return value.id if isinstance(value, faust.Record) else value["id"]


def pair(left: Any, right: Any) -> dict:
    return {"l": _id(left), "r": _id(right),
            "left_type": type(left).__name__ if left is not None else None}


def join_topology(left_serde: Any, right_serde: Any) -> Topology:
    t = Topology("decode_once")
    a = t.stream("a", value=left_serde, timestamp="ts")
    b = t.stream("b", value=right_serde, timestamp="ts")
    a.join(b, pair, JoinWindows(before=10, after=10, grace=5), how="left", name="j").to("out")
    return t


def test_each_value_of_a_two_input_task_is_decoded_once() -> None:
    left, right = CountingSerde(), CountingSerde()
    with TopologyTestDriver(join_topology(left, right)) as d:
        d.pipe_poll({"a": [("k1", {"id": "a1", "ts": 100}, 100),
                           ("k2", {"id": "a2", "ts": 105}, 105)],
                     "b": [("k1", {"id": "b1", "ts": 102}, 102)]})
        assert (left.decoded, right.decoded) == (2, 1)
        assert d.read_output("out") == [("k1", {"l": "a1", "r": "b1", "left_type": "dict"})]


def test_bad_input_of_a_two_input_task_is_one_dead_letter_with_its_reason() -> None:
    with TopologyTestDriver(join_topology("json", "json")) as d:
        d.pipe_poll({"a": [("k1", b"{not json", 100), ("k1", {"id": "a1"}, 101),
                           ("k1", {"id": "a2", "ts": 103}, 103)],
                     "b": [("k1", {"id": "b1", "ts": 102}, 102)]})
        dead = sorted((x.source_offset, x.reason) for x in d.read_dead_letters())
        assert dead == [(0, "decode"), (1, "timestamp")]
        assert d.read_output("out") == [("k1", {"l": "a2", "r": "b1", "left_type": "dict"})]


class Order(faust.Record):
    id: str
    ts: int


def test_record_values_are_decoded_once_for_both_ordering_and_the_join() -> None:
    with TopologyTestDriver(join_topology(Order, "json")) as d:
        d.pipe_poll({"a": [("k1", {"id": "a1", "ts": 100}, 100),
                           ("k1", {"id": "bad", "ts": "soon"}, 101)],
                     "b": [("k1", {"id": "b1", "ts": 104}, 104)]})
        assert d.read_output("out") == [("k1", {"l": "a1", "r": "b1", "left_type": "Order"})]
        assert [(x.source_offset, x.reason) for x in d.read_dead_letters()] == [(1, "invalid")]
