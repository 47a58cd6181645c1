"""``Topology.internal_topic``: an agent→agent repartition (sizing, naming, replays)."""

from __future__ import annotations

import pytest

from streams import Topology
from streams.runtime.compile import subtopologies
from streams.runtime.topics import plan_topics
from streams.testing import TopologyTestDriver


def _hop_topology(self_loop: bool) -> Topology:
    t = Topology("hops")
    seen = t.table_store("seen", default=int)
    hop = t.internal_topic("hop")

    if self_loop:  # the writer shares a table with the reader: one sub-topology
        @t.agent("in")
        async def first(stream):
            async for _key, value in stream.items():
                seen["first"] += 1
                await hop.send(key=value["to"], value=value)
    else:
        @t.agent("in")
        async def first(stream):
            async for _key, value in stream.items():
                await hop.send(key=value["to"], value=value)

    @t.agent(hop, sink=["out"])
    async def second(stream):
        async for key, _value in stream.items():
            seen[key] += 1
            yield {"to": key, "n": seen[key]}

    return t


@pytest.mark.parametrize("self_loop", [False, True])
def test_the_internal_topic_gets_the_partition_count_of_its_writer(self_loop):
    t = _hop_topology(self_loop)
    specs, problems = plan_topics(t, {"in": 5}, 2)
    sizes = {s.name: s.partitions for s in specs}
    assert problems == []
    assert len(subtopologies(t)) == (1 if self_loop else 2)
    assert sizes["hops-hop-repartition"] == 5
    assert sizes["hops-seen-changelog"] == 5
    assert t.repartition_topics() == ["hops-hop-repartition"]
    assert "hops-hop-repartition" not in t.output_topics()


def test_an_internal_topic_no_agent_names_is_a_clear_problem():
    t = Topology("orphan")

    @t.agent("in")
    async def first(stream):
        async for key, value in stream.items():
            await t.internal_topic("hop").send(key=key, value=value)  # not bound to a name

    @t.agent(t.internal_topic("hop"), sink=["out"])
    async def second(stream):
        async for _key, value in stream.items():
            yield value

    _, problems = plan_topics(t, {"in": 3}, 3)
    assert problems and "no agent names it" in problems[0]


def test_names_are_checked():
    t = Topology("names")
    hop = t.internal_topic("hop")
    assert t.internal_topic("hop") is hop
    with pytest.raises(ValueError, match="internal topic"):
        t.topic("names-hop-repartition")
    with pytest.raises(ValueError, match="invalid repartition name"):
        t.internal_topic("bad name")
    t.topic("out", config={"cleanup.policy": "compact"})
    with pytest.raises(ValueError, match="two different configs"):
        t.topic("out", config={"cleanup.policy": "delete"})
    other = Topology("other")
    with pytest.raises(ValueError, match="belongs to topology"):
        other.agent(hop)(lambda stream: None)


def test_a_crash_replay_is_not_applied_twice_downstream(tmp_path):
    t = _hop_topology(self_loop=False)
    with TopologyTestDriver(t, state_dir=tmp_path, commit_every=10**9) as driver:
        driver.pipe("in", "k", {"to": "x"})
        driver.commit()
        driver.pipe("in", "k", {"to": "x"})
        driver.restart(commit=False)
        driver.replay()   # the hop record is read again, and sent again by the replayed input
        assert driver.table("seen") == {"x": 2}
        assert [v["n"] for _, v in driver.read_output("out")] == [1, 2, 2]  # output repeats


def test_two_agents_sending_to_one_internal_topic_are_refused():
    # Both writers would stamp the same input positions as origins, and the reader would drop
    # the second writer's records as replays: refused when the worker plans its topics.
    t = Topology("two_writers")
    hop = t.internal_topic("hop")

    @t.agent("in", name="a1")
    async def a1(stream):
        async for key, _value in stream.items():
            await hop.send(key=key, value={"from": "a1"})

    @t.agent("in", name="a2")
    async def a2(stream):
        async for key, _value in stream.items():
            await hop.send(key=key, value={"from": "a2"})

    @t.agent(hop, sink=["out"])
    async def reader(stream):
        async for _key, value in stream.items():
            yield value

    _, problems = plan_topics(t, {"in": 2}, 2)
    assert problems == ["internal topic two_writers-hop-repartition is sent to by several agents "
                        "(a1, a2): give each its own internal_topic()"]
