"""Grouping in the DSL: when a repartition happens, how its topic is named, and which serde the
aggregation's table uses (no broker needed)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import faust

from streams import Topology
from streams.runtime.compile import subtopologies
from streams.testing import TopologyTestDriver


def _sub_reading(t: Topology, topic: str) -> Any:
    return next(sub for sub in subtopologies(t) if topic in sub.topics)


# -- item 2: group_by_key after a key change repartitions -----------------------------------------

def test_select_key_then_group_by_key_repartitions() -> None:
    t = Topology("rekey")
    (t.stream("in").select_key(lambda v: v["user"]).group_by_key()
     .count(name="per-user").to("per-user-out"))
    assert t.repartition_topics() == ["rekey-per-user-repartition"]
    # the count runs in its own sub-topology, fed by the repartition topic, not by "in"
    assert _sub_reading(t, "in").stores == []
    assert _sub_reading(t, "rekey-per-user-repartition").stores == ["per-user"]
    users = ["ann", "bob", "ann", "cy", "ann", "bob"]
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [(f"src{i}", {"user": u}, i) for i, u in enumerate(users)])
        repartitioned = driver.read_output("rekey-per-user-repartition")
        table = driver.table("per-user")
        updates = driver.read_output("per-user-out")
    assert [k for k, _ in repartitioned] == users  # written under the selected key
    assert table == dict(Counter(users))
    running: Counter[str] = Counter()
    expected = []
    for u in users:
        running[u] += 1
        expected.append((u, running[u]))
    assert updates == expected


def test_process_then_group_by_key_repartitions() -> None:
    t = Topology("rekey2")
    (t.stream("in").process(lambda k, v, s: [(v["user"], v)])
     .filter(lambda v: True).group_by_key().count(name="c"))
    assert t.repartition_topics() == ["rekey2-c-repartition"]
    named = Topology("rekey3")
    (named.stream("in").process(lambda k, v, s: [(v["user"], v)])
     .group_by_key(name="by-user").count(name="c"))
    assert named.repartition_topics() == ["rekey3-by-user-repartition"]


def test_group_by_key_without_a_key_change_does_not_repartition() -> None:
    t = Topology("nokey")
    s = t.stream("in")
    s.map(lambda v: v).filter(lambda v: True).flat_map(lambda v: [v]).peek(
        lambda k, v: None).group_by_key().count(name="a")
    first, _ = s.branch(lambda v: True, default=True)
    first.group_by_key().count(name="b")
    # a table's updates are keyed by the grouping key already
    (s.select_key(lambda v: v["x"]).group_by_key().count(name="c")
     .to_stream().group_by_key().count(name="d"))
    assert t.repartition_topics() == ["nokey-c-repartition"]
    assert _sub_reading(t, "in").stores == ["a", "b"]


# -- item 3: stable repartition names -------------------------------------------------------------

def _rides(t: Topology) -> None:
    t.stream("rides").group_by(lambda r: r["driver"]).count(name="counts")


def test_unnamed_group_by_is_named_after_the_table() -> None:
    t = Topology("app")
    _rides(t)
    assert t.repartition_topics() == ["app-counts-repartition"]


def test_inserting_operators_earlier_does_not_rename_the_repartition() -> None:
    t = Topology("app")
    t.stream("other").map(lambda v: v).filter(lambda v: True).group_by(
        lambda v: v["x"]).count(name="other-counts")
    _rides(t)
    assert "app-counts-repartition" in t.repartition_topics()
    assert _sub_reading(t, "app-counts-repartition").stores == ["counts"]


def test_several_aggregations_share_one_repartition() -> None:
    t = Topology("shared")
    g = t.stream("in").group_by(lambda v: v["k"])
    g.count(name="n")
    g.reduce(lambda a, v: {"k": v["k"], "x": a["x"] + v["x"]}, name="sums")
    assert t.repartition_topics() == ["shared-n-repartition"]
    evs = [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("b", 5)]
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [(f"s{i}", {"k": k, "x": x}, i) for i, (k, x) in enumerate(evs)])
        assert driver.table("n") == dict(Counter(k for k, _ in evs))
        assert driver.table("sums") == {k: {"k": k, "x": sum(x for j, x in evs if j == k)}
                                         for k in {k for k, _ in evs}}
        # one repartition record per input, not one per aggregation
        assert len(driver.read_output("shared-n-repartition")) == len(evs)


def test_an_unused_group_by_creates_no_topic() -> None:
    t = Topology("unused")
    t.stream("in").group_by(lambda v: v["k"])
    assert t.repartition_topics() == []


# -- item 4: tables of faust Records round-trip through the store ---------------------------------

class Ride(faust.Record):
    driver: str
    fare: int
    ts: int


class Totals(faust.Record):
    rides: int
    fare: int


def _batches() -> list[list[tuple[str, dict, int]]]:
    rides = [("d1", 10), ("d2", 7), ("d1", 5), ("d1", 1), ("d2", 3), ("d3", 4), ("d1", 2)]
    records = [(f"city{i % 2}", {"driver": d, "fare": f, "ts": i}, i)
               for i, (d, f) in enumerate(rides)]
    return [records[:3], records[3:]]


def test_reduce_over_records_survives_a_commit() -> None:
    t = Topology("reduce_records")
    (t.stream("rides", value=Ride, timestamp="ts").group_by(lambda r: r.driver)
     .reduce(lambda a, v: Ride(driver=v.driver, fare=a.fare + v.fare, ts=max(a.ts, v.ts)),
             name="fares").to("fares-out"))
    batches = _batches()
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("rides", batches[0])
        driver.commit()  # the store now holds serialized values: they must come back as Rides
        driver.pipe_batch("rides", batches[1])
        assert driver.read_records(t.dlq_topic) == []
        table = driver.table("fares")
        updates = driver.read_output("fares-out")
    oracle: dict[str, dict] = {}
    expected_updates = []
    for _key, v, _ts in batches[0] + batches[1]:
        old = oracle.get(v["driver"])
        oracle[v["driver"]] = v if old is None else {
            "driver": v["driver"], "fare": old["fare"] + v["fare"], "ts": max(old["ts"], v["ts"])}
        expected_updates.append((v["driver"], oracle[v["driver"]]))
    assert all(isinstance(r, Ride) for r in table.values())
    assert {k: r.asdict() for k, r in table.items()} == oracle
    assert [(k, {f: v[f] for f in ("driver", "fare", "ts")}) for k, v in updates] == \
        expected_updates


def test_aggregate_with_a_record_initializer_stores_that_record() -> None:
    t = Topology("agg_records")
    (t.stream("rides", value=Ride).group_by(lambda r: r.driver)
     .aggregate(lambda: Totals(rides=0, fare=0),
                lambda a, r: Totals(rides=a.rides + 1, fare=a.fare + r.fare), name="totals"))
    batches = _batches()
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("rides", batches[0])
        driver.commit()
        driver.pipe_batch("rides", batches[1])
        assert driver.read_records(t.dlq_topic) == []
        table = driver.table("totals")
    oracle: dict[str, dict] = {}
    for _key, v, _ts in batches[0] + batches[1]:
        cur = oracle.setdefault(v["driver"], {"rides": 0, "fare": 0})
        cur["rides"] += 1
        cur["fare"] += v["fare"]
    assert {k: {"rides": r.rides, "fare": r.fare} for k, r in table.items()} == oracle
    assert t.stores["totals"].value_serde.record is Totals  # type: ignore[attr-defined]
