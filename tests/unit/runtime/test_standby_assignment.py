"""Standby replicas in the group protocol: actives go to members with caught-up state, standby
copies to other members (never the active's, never twice on one member, none with a single
member), and the standby tasks reach each member through its assignment."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from streams import Topology
from streams.runtime.assignor import ShapeCheckingAssignor
from streams.runtime.compile import subtopologies
from streams.runtime.task_assignment import MemberTasks, assign_tasks

TASKS = [f"s_{p}" for p in range(4)]


def test_a_moved_task_goes_to_the_member_with_a_caught_up_standby() -> None:
    # "a" ran s_0 and left the group; "c" keeps a standby of it (and runs s_2), "b" has
    # nothing: s_0 goes to "c" although "b" is less loaded at that point
    members = {"b": MemberTasks(), "c": MemberTasks({"s_0": 5000, "s_2": 100}, {"s_2"})}
    plan = assign_tasks(["s_2", "s_0", "s_1"], {"s_0", "s_1", "s_2"}, members, standbys=1)
    assert plan.active == {"b": ["s_1"], "c": ["s_2", "s_0"]}
    assert plan.standby == {"b": ["s_2", "s_0"], "c": ["s_1"]}


def test_a_lagging_copy_is_not_caught_up() -> None:
    # the previous owner's copy is far behind the other member's: the task moves
    members = {"a": MemberTasks({"s_0": 100}, {"s_0"}), "b": MemberTasks({"s_0": 50_000})}
    plan = assign_tasks(["s_0"], {"s_0"}, members, standbys=1, acceptable_lag=10_000)
    assert plan.active == {"a": [], "b": ["s_0"]}
    assert plan.standby == {"a": ["s_0"], "b": []}


def test_the_caught_up_previous_owner_keeps_its_task() -> None:
    members = {"a": MemberTasks({"s_0": 990}, {"s_0"}), "b": MemberTasks({"s_0": 1000})}
    plan = assign_tasks(["s_0"], {"s_0"}, members, standbys=1)
    assert plan.active["a"] == ["s_0"] and plan.standby["b"] == ["s_0"]


@pytest.mark.parametrize("seed", range(20))
def test_never_active_and_standby_on_one_member(seed: int) -> None:
    rng = random.Random(seed)
    names = [f"m{i}" for i in range(rng.randint(1, 4))]
    tasks = [f"s{s}_{p}" for s in range(3) for p in range(rng.randint(1, 6))]
    members = {m: MemberTasks({t: rng.randint(0, 20_000) for t in tasks if rng.random() < 0.5},
                              {t for t in tasks if rng.random() < 0.3}) for m in names}
    standbys = rng.randint(1, 3)
    plan = assign_tasks(tasks, set(tasks), members, standbys)
    assert sorted(t for ts in plan.active.values() for t in ts) == sorted(tasks)
    capacity = -(-len(tasks) // len(names))
    assert all(len(ts) <= capacity for ts in plan.active.values())
    for m in names:
        assert not set(plan.active[m]) & set(plan.standby[m])
        assert len(plan.standby[m]) == len(set(plan.standby[m]))
    for t in tasks:  # as many copies as there are other members, up to ``standbys``
        copies = sum(t in plan.standby[m] for m in names)
        assert copies == min(standbys, len(names) - 1)


def test_with_one_member_no_standby_is_assigned() -> None:
    plan = assign_tasks(TASKS, set(TASKS), {"a": MemberTasks()}, standbys=1)
    assert plan.active == {"a": TASKS} and plan.standby == {"a": []}


def test_stateless_tasks_get_no_standby() -> None:
    plan = assign_tasks(TASKS, {"s_0"}, {"a": MemberTasks(), "b": MemberTasks()}, standbys=1)
    assert sorted(t for ts in plan.standby.values() for t in ts) == ["s_0"]


# -- through the assignor (the group protocol's JSON) ---------------------------------------------
def counting() -> Topology:
    t = Topology("counts")
    (t.stream("counts-in").group_by(lambda r: r["k"], name="by-key")
      .aggregate(lambda: 0, lambda a, r: a + 1, name="count").to("counts-out"))
    return t


class Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}


def test_the_assignor_reports_local_state_and_hands_out_standbys() -> None:
    topology = counting()
    (stateful,) = [s.id for s in subtopologies(topology) if s.stores]
    got: dict[str, list[str]] = {}
    # "b" holds standby copies of partitions 0 and 1 of the stateful sub-topology; "a" is new
    a = ShapeCheckingAssignor(topology, lambda why: None, started_ms=1, standby_replicas=1,
                              local_tasks=dict, on_standby=lambda s: got.update(a=s))
    b = ShapeCheckingAssignor(topology, lambda why: None, started_ms=2, standby_replicas=1,
                              local_tasks=lambda: {f"{stateful}_0": 700, f"{stateful}_1": 800},
                              on_standby=lambda s: got.update(b=s))
    topics = sorted({t for s in subtopologies(topology) for t in s.topics})
    members = {"a": a.metadata(topics), "b": b.metadata(topics)}
    assert json.loads(members["b"].user_data)["task_offsets"] == {f"{stateful}_0": 700,
                                                                  f"{stateful}_1": 800}
    out = a.assign(Cluster(), members)
    a.on_assignment(out["a"])
    b.on_assignment(out["b"])

    def tasks_of(member: str) -> set[str]:
        return set(ShapeCheckingAssignor(topology, lambda why: None).tasks.of_partitions(
            out[member].partitions()))

    assert {f"{stateful}_0", f"{stateful}_1"} <= tasks_of("b")
    assert {f"{stateful}_2", f"{stateful}_3"} <= tasks_of("a")
    assert sorted(got["a"]) == [f"{stateful}_0", f"{stateful}_1"]
    assert sorted(got["b"]) == [f"{stateful}_2", f"{stateful}_3"]
    # every partition of every topic assigned exactly once, co-partitioned with its task
    parts = [(tp.topic, tp.partition) for m in out for tp in out[m].partitions()]
    assert sorted(parts) == sorted((t, p) for t in topics for p in range(4))
    # the tasks a member ran are reported at the next rebalance
    assert json.loads(b.metadata(topics).user_data)["previous_active"] == sorted(tasks_of("b"))


def test_without_standby_replicas_the_assignment_is_range_and_has_no_standbys() -> None:
    topology = counting()
    got: list[Any] = []
    a, b = (ShapeCheckingAssignor(topology, lambda why: None, started_ms=t,
                                  local_tasks=lambda: {"x_0": 5}, on_standby=got.append)
            for t in (1, 2))
    topics = sorted({t for s in subtopologies(topology) for t in s.topics})
    out = a.assign(Cluster(), {"a": a.metadata(topics), "b": b.metadata(topics)})
    for m, assignor in (("a", a), ("b", b)):
        assignor.on_assignment(out[m])
        assert [tp.partition for tp in out[m].partitions() if tp.topic == topics[0]] == (
            [0, 1] if m == "a" else [2, 3])
    assert got == [[], []]


def test_standbys_and_the_endpoint_map_travel_together_in_one_assignment() -> None:
    """Interactive queries route by the endpoint map: it names where each partition is active,
    never a standby copy, and the standby list next to it in the same user_data is kept."""
    topology = counting()
    (stateful,) = [s.id for s in subtopologies(topology) if s.stores]
    got: dict[str, Any] = {}
    a, b = (ShapeCheckingAssignor(topology, lambda why: None, started_ms=i, standby_replicas=1,
                                  local_tasks=dict, endpoint=f"127.0.0.1:{8000 + i}",
                                  on_endpoints=lambda e, m=m: got.update({f"map-{m}": e}),
                                  on_standby=lambda s, m=m: got.update({f"standby-{m}": s}))
            for i, m in ((1, "a"), (2, "b")))
    topics = sorted({t for s in subtopologies(topology) for t in s.topics})
    out = a.assign(Cluster(), {"a": a.metadata(topics), "b": b.metadata(topics)})
    a.on_assignment(out["a"])
    b.on_assignment(out["b"])
    assert got["map-a"] == got["map-b"]
    for member, endpoint in (("a", "127.0.0.1:8001"), ("b", "127.0.0.1:8002")):
        active = sorted((tp.topic, tp.partition) for tp in out[member].partitions())
        mapped = sorted((t, p) for t, ps in got["map-a"][endpoint].items() for p in ps)
        assert mapped == active
    standbys = sorted(got["standby-a"] + got["standby-b"])
    assert standbys == [f"{stateful}_{p}" for p in range(4)]
