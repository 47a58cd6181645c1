"""The topology shape a worker advertises to its group, and the leader's decision: partitions
only for the members running the group's shape, a refusal saying what differs for the others."""

from __future__ import annotations

import json
from typing import Any

from streams import Topology
from streams.runtime.assignor import ShapeCheckingAssignor, TopologyShape


def v1() -> Topology:
    t = Topology("rides", version="1")
    t.stream("rides-in").map(lambda r: r).to("rides-out")
    return t


def v2() -> Topology:
    t = Topology("rides", version="2")
    (t.stream("rides-in").group_by(lambda r: r["d"], name="by-driver")
      .aggregate(lambda: 0, lambda a, r: a + 100, name="bonus").to("rides-out"))
    return t


class Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}


def test_the_fingerprint_covers_version_and_shape_but_not_code() -> None:
    same_code_other_lambda = Topology("rides", version="1")
    same_code_other_lambda.stream("rides-in").map(lambda r: {**r}).to("rides-out")
    other = TopologyShape.of(same_code_other_lambda)
    assert TopologyShape.of(v1()).fingerprint == other.fingerprint
    renamed = Topology("rides", version="1b")
    renamed.stream("rides-in").map(lambda r: r).to("rides-out")
    assert TopologyShape.of(v1()).fingerprint != TopologyShape.of(renamed).fingerprint
    diff = TopologyShape.of(v2()).differences(TopologyShape.of(v1()))
    assert diff.startswith("version '2' (group: '1'); tables +bonus (aggregate); topics +")


def members(*assignors: ShapeCheckingAssignor) -> dict[str, Any]:
    return {f"m{i}": a.metadata(["rides-in"]) for i, a in enumerate(assignors)}


def test_the_longest_running_shape_keeps_the_partitions_and_the_other_is_refused() -> None:
    refused: list[str] = []
    old = ShapeCheckingAssignor(v1(), refused.append, started_ms=1000)
    old_too = ShapeCheckingAssignor(v1(), refused.append, started_ms=3000)
    new = ShapeCheckingAssignor(v2(), refused.append, started_ms=2000)
    # the newcomer may be the group's leader: it still defers to the running shape
    out = new.assign(Cluster(), members(new, old, old_too))
    assert out["m0"].partitions() == []
    assert sorted(p.partition for m in ("m1", "m2") for p in out[m].partitions()) == [0, 1, 2, 3]
    for member, a in (("m0", new), ("m1", old), ("m2", old_too)):
        a.on_assignment(out[member])
    assert len(refused) == 1
    assert "version '2' (group: '1'); tables +bonus (aggregate)" in refused[0]
    assert json.loads(out["m0"].user_data)["refused"] == refused[0]


def test_one_shape_is_plain_range_assignment() -> None:
    a, b = (ShapeCheckingAssignor(v1(), lambda why: None, started_ms=t) for t in (1, 2))
    out = a.assign(Cluster(), members(a, b))
    assert [len(out[m].partitions()) for m in ("m0", "m1")] == [2, 2]
