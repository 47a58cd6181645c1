"""Topology-level rules of the DSL: several readers of one topic, build-time refusals, stable
sub-topology ids, table key identity and self-describing nodes (no broker needed)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from streams import Topology
from streams.dsl import nodes as n
from streams.runtime.compile import _stores_of, subtopologies, subtopology_id
from streams.testing import TopologyTestDriver


# -- item 1: several sources on one topic ----------------------------------------------------------

def test_two_streams_on_one_topic_both_get_every_record() -> None:
    t = Topology("two_readers")
    t.stream("clicks").map(lambda v: {"doubled": v["n"] * 2}).to("doubled")
    t.stream("clicks").filter(lambda v: v["n"] % 2 == 1).to("odd")
    inputs = [(f"k{i}", {"n": i}, i) for i in range(6)]
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("clicks", inputs)
        doubled = driver.read_output("doubled")
        odd = driver.read_output("odd")
    assert doubled == [(k, {"doubled": v["n"] * 2}) for k, v, _ in inputs]
    assert odd == [(k, v) for k, v, _ in inputs if v["n"] % 2 == 1]


def test_a_table_and_a_stream_on_one_topic_both_get_every_record() -> None:
    t = Topology("table_and_stream")
    t.table("users")
    t.stream("users").map(lambda v: v["name"]).to("user-names")
    inputs = [("u1", {"name": "ada"}, 1), ("u2", {"name": "bob"}, 2), ("u1", {"name": "al"}, 3)]
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("users", inputs)
        names = driver.read_output("user-names")
        table = driver.table("users")
    assert names == [(k, v["name"]) for k, v, _ in inputs]
    assert table == {"u1": {"name": "al"}, "u2": {"name": "bob"}}


def test_sources_of_one_topic_form_one_subtopology() -> None:
    t = Topology("one_sub")
    t.stream("clicks").to("a")
    t.stream("other").to("b")
    t.table("clicks", name="latest-click")
    subs = subtopologies(t)
    by_topic = {topic: sub for sub in subs for topic in sub.topics}
    assert len(subs) == 2
    assert len(by_topic["clicks"].sources) == 2
    assert by_topic["clicks"].stores == ["latest-click"]


def test_two_group_by_with_the_same_name_are_refused() -> None:
    t = Topology("dup")
    s = t.stream("in")
    s.group_by(lambda v: v["a"], name="g").count(name="by-a")
    with pytest.raises(ValueError, match=r"repartition 'g' \(topic dup-g-repartition\) is used "
                                         r"twice"):
        s.group_by(lambda v: v["b"], name="g")


def test_an_unnamed_group_by_may_not_take_a_named_repartition() -> None:
    t = Topology("dup2")
    s = t.stream("in")
    s.group_by(lambda v: v["a"], name="totals").count(name="by-a")
    with pytest.raises(ValueError, match="'totals'.*used twice"):
        s.group_by(lambda v: v["b"]).count(name="totals")


def test_reading_an_own_internal_topic_is_refused() -> None:
    t = Topology("loop")
    t.stream("in").group_by(lambda v: v["k"], name="by-k").count(name="counts")
    with pytest.raises(ValueError, match="'loop-by-k-repartition' is an internal topic"):
        t.stream("loop-by-k-repartition")
    with pytest.raises(ValueError, match="'loop-counts-changelog' is an internal topic"):
        t.table("loop-counts-changelog", name="copy")
    t.stream("in").group_by(lambda v: v["x"], name="later")  # named, not aggregated yet
    with pytest.raises(ValueError, match="'loop-later-repartition' is an internal topic"):
        t.stream("loop-later-repartition")


def test_an_input_cannot_later_become_a_changelog_or_repartition_topic() -> None:
    t = Topology("late")
    t.stream("late-counts-changelog").to("x")
    t.stream("late-g-repartition").to("y")
    with pytest.raises(ValueError, match="'late-counts-changelog' is an input"):
        t.store("counts")
    with pytest.raises(ValueError, match="'late-g-repartition' is an input"):
        t.stream("in").group_by(lambda v: v, name="g")


def test_a_sink_into_its_own_input_or_an_internal_topic_is_refused() -> None:
    t = Topology("selfloop")
    t.stream("a").map(lambda v: v).to("a")
    with pytest.raises(ValueError, match=r"to\('a'\) writes to a topic its own pipeline reads"):
        subtopologies(t)
    t2 = Topology("intoclog")
    t2.stream("in").group_by(lambda v: v["k"]).count(name="c")
    t2.stream("other").to("intoclog-c-changelog")
    with pytest.raises(ValueError, match="writes to an internal topic"):
        subtopologies(t2)
    # writing to an input of ANOTHER pipeline is a plain chain of pipelines, and allowed
    t3 = Topology("chain")
    t3.stream("a").to("b")
    t3.stream("b").to("c")
    assert len(subtopologies(t3)) == 2


# -- item 6: table keys are their serialized bytes ----------------------------------------------

def test_int_and_str_keys_with_the_same_text_are_one_table_key() -> None:
    """Documented: 7 and "7" serialize to the same bytes and therefore are the same key."""
    t = Topology("keys")
    t.store("s")

    def put_both(_key: Any, value: Any, stores: Any) -> list:
        stores["s"].put(7, "int")
        stores["s"].put("7", "str")  # overwrites the int key's value
        return [("seen", stores["s"].get(7))]

    t.stream("in").process(put_both, stores=["s"]).to("seen")
    t.stream("counted").group_by(lambda v: v["k"]).count(name="counts")
    with TopologyTestDriver(t) as driver:
        driver.pipe("in", "x", {})
        driver.pipe_batch("counted", [("a", {"k": 7}, 1), ("b", {"k": "7"}, 2)])
        assert driver.read_output("seen") == [("seen", "str")]
        assert driver.table("s") == {"7": "str"}
        assert driver.table("counts") == {"7": 2}


# -- item 7: stable sub-topology ids ------------------------------------------------------------

def _totals(t: Topology) -> None:
    (t.stream("rides").group_by(lambda r: r["driver_id"], name="by-driver")
     .count(name="rides-per-driver"))


def test_inserting_a_pipeline_above_keeps_the_subtopology_ids() -> None:
    before = Topology("app")
    _totals(before)
    after = Topology("app")
    after.stream("payments").group_by(lambda p: p["user"]).count(name="payments-per-user")
    _totals(after)

    def ids(t: Topology) -> dict[str, tuple[int, str]]:
        return {sub.stores[0] if sub.stores else sub.topics[0]: (sub.index, sub.id)
                for sub in subtopologies(t)}

    old, new = ids(before), ids(after)
    for key in ("rides", "rides-per-driver"):
        assert old[key][1] == new[key][1]
        assert old[key][0] != new[key][0]  # the index moved, which is why ids exist
    assert len({sid for _, sid in new.values()}) == len(new)


def test_subtopology_ids_are_safe_path_and_task_id_parts() -> None:
    t = Topology("shapes")
    t.store("shared")
    t.stream("a").process(lambda k, v, s: None, stores=["shared"])
    t.stream("b").process(lambda k, v, s: None, stores=["shared"])  # one sub reads a and b
    t.stream("a2").to("x")
    long_name = "very-long-topic-name-" * 5
    t.stream(long_name).to("y")
    t.stream("my_topic_7").to("z")
    t.stream("2024").to("w")
    subs = {tuple(sub.topics): sub.id for sub in subtopologies(t)}
    assert subs[("a2",)] == "a2"
    assert subs[("a", "b")] != subtopology_id(["a"])
    assert subs[("a", "b")] == subtopology_id(["b", "a"])  # order does not matter
    assert subs[("a", "b")].startswith("a-b-")
    for sid in subs.values():
        assert re.fullmatch(r"[A-Za-z0-9.-]{1,60}", sid), sid
        assert not sid.isdigit()  # would look like an old index-based state dir
        task_id = f"{sid}_12"
        assert task_id.rsplit("_", 1) == [sid, "12"] and task_id.split("_") == [sid, "12"]
    assert subs[(long_name,)] != subs[("my_topic_7",)]
    assert subs[("my_topic_7",)].startswith("my-topic-7-")
    # replacing "_" by "-" must not merge distinct topics
    assert subtopology_id(["my_topic"]) != subtopology_id(["my-topic"])


def test_the_reference_topology_keeps_its_topics() -> None:
    from topologies.trip_stats import topology

    assert sorted(topology.repartition_topics()) == [
        "trip_stats-rides-by-driver-repartition", "trip_stats-rides-by-rider-repartition"]
    assert sorted(topology.changelog_topics()) == [
        "trip_stats-busy-drivers-changelog", "trip_stats-busy-drivers-records-changelog",
        "trip_stats-driver-totals-changelog", "trip_stats-rider-sessions-changelog",
        "trip_stats-rides-per-city-1m-changelog", "trip_stats-rides-per-city-5m-changelog"]
    assert topology.late_topic == "rides-late"
    assert sorted(topology.output_topics()) == [
        "busy-drivers", "driver-totals", "rider-sessions", "rides-per-city-1m",
        "rides-per-city-5m"]
    assert [sub.id for sub in subtopologies(topology)][0] == "rides"


# -- item 8: nodes describe themselves ----------------------------------------------------------

def test_nodes_name_their_stores_and_labels() -> None:
    t = Topology("self_describing")
    t.store("bal")
    s = t.stream("in")
    p = s.process(lambda k, v, st: None, stores=["bal"], name="apply")
    table = s.group_by(lambda v: v["k"]).count(name="counts")
    assert p.node.store_names() == ["bal"] == _stores_of(p.node)
    assert table.node.store_names() == ["counts"]
    assert t.sources[0].store_names() == []
    assert p.node.label() == "process apply stores=bal"
    assert n.SinkNode("x", "out", None, None).label() == "sink out"  # type: ignore[arg-type]
    assert "-> aggregate counts-aggregate -> table counts" in t.describe()
