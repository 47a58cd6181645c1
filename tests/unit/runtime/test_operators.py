"""Unit tests of the DSL operators, run through ``TopologyTestDriver`` (no Kafka broker).

Every expected result is computed here from the inputs, independently of the framework.
"""

from __future__ import annotations

import doctest
import json
from collections import Counter
from typing import Any

import faust
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streams.serdes
import streams.dsl.topology
import streams.testing
from streams import Topology
from streams.devtools.generate import events
from streams.testing import TopologyTestDriver
from tests.conftest import examples

FAST = settings(max_examples=examples(50), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def run(topology: Topology, inputs: list[tuple[Any, Any, int]], outputs: list[str],
        topic: str = "in") -> dict[str, list]:
    """Pipe (key, value, timestamp) into ``topic``; return the records of each output topic."""
    with TopologyTestDriver(topology) as driver:
        for key, value, ts in inputs:
            driver.pipe(topic, key, value, ts)
        return {name: driver.read_records(name) for name in outputs}


def decoded(records: list) -> list[tuple[Any, Any]]:
    return [(r.key.decode(), json.loads(r.value)) for r in records]


def numbered(count: int, *, ts0: int = 1000) -> list[tuple[str, dict, int]]:
    """Inputs keyed k<i % 3> with value {"n": i, "ts": ts0 + 10 i}; the Kafka timestamp differs
    from the ``ts`` field so tests can tell which one a record carries."""
    return [(f"k{i % 3}", {"n": i, "ts": ts0 + 10 * i}, 5 + i) for i in range(count)]


# -- stateless operators -----------------------------------------------------------------------

def test_map_new_value_same_key_and_timestamp() -> None:
    t = Topology("t_map")
    t.stream("in", timestamp="ts").map(lambda v: {"double": v["n"] * 2}).to("out")
    inputs = numbered(6)
    out = run(t, inputs, ["out"])["out"]
    assert decoded(out) == [(k, {"double": v["n"] * 2}) for k, v, _ in inputs]
    assert [r.timestamp for r in out] == [v["ts"] for _, v, _ in inputs]


def test_map_without_timestamp_field_keeps_kafka_timestamp() -> None:
    t = Topology("t_map_kts")
    t.stream("in").map(lambda v: v["n"]).to("out")
    inputs = numbered(4)
    out = run(t, inputs, ["out"])["out"]
    assert decoded(out) == [(k, v["n"]) for k, v, _ in inputs]
    assert [r.timestamp for r in out] == [ts for _, _, ts in inputs]


def test_filter_keeps_matching_records_in_order() -> None:
    t = Topology("t_filter")
    t.stream("in", timestamp="ts").filter(lambda v: v["n"] % 3 != 1).to("out")
    inputs = numbered(10)
    out = run(t, inputs, ["out"])["out"]
    expected = [(k, v) for k, v, _ in inputs if v["n"] % 3 != 1]
    assert decoded(out) == expected
    assert [r.timestamp for r in out] == [v["ts"] for _, v in expected]


def test_flat_map_zero_one_many_outputs_keep_key_and_timestamp() -> None:
    t = Topology("t_flatmap")
    # n % 3 == 0 -> nothing, 1 -> one value, 2 -> n values
    t.stream("in", timestamp="ts").flat_map(
        lambda v: [] if v["n"] % 3 == 0 else [{"n": v["n"], "i": i}
                                              for i in range(1 if v["n"] % 3 == 1 else v["n"])]
    ).to("out")
    inputs = numbered(9)
    out = run(t, inputs, ["out"])["out"]
    expected, expected_ts = [], []
    for k, v, _ in inputs:
        n = v["n"]
        count = {0: 0, 1: 1, 2: n}[n % 3]
        for i in range(count):
            expected.append((k, {"n": n, "i": i}))
            expected_ts.append(v["ts"])
    assert any(n % 3 == 2 and n > 1 for n in range(9))  # the input has a "many" case
    assert decoded(out) == expected
    assert [r.timestamp for r in out] == expected_ts


def test_flat_map_accepts_a_generator() -> None:
    t = Topology("t_flatmap_gen")
    t.stream("in").flat_map(lambda v: (x for x in range(v["n"]))).to("out")
    out = run(t, [("a", {"n": 3}, 1), ("b", {"n": 0}, 2), ("c", {"n": 1}, 3)], ["out"])["out"]
    assert decoded(out) == [("a", 0), ("a", 1), ("a", 2), ("c", 0)]


def test_select_key_rekeys_by_value() -> None:
    t = Topology("t_selectkey")
    t.stream("in", timestamp="ts").select_key(lambda v: f"n{v['n'] % 2}").to("out")
    inputs = numbered(5)
    out = run(t, inputs, ["out"])["out"]
    assert decoded(out) == [(f"n{v['n'] % 2}", v) for _, v, _ in inputs]
    assert [r.timestamp for r in out] == [v["ts"] for _, v, _ in inputs]


def test_peek_sees_key_and_value_and_passes_records_through() -> None:
    seen: list[tuple[Any, Any]] = []
    t = Topology("t_peek")
    t.stream("in", timestamp="ts").peek(lambda k, v: seen.append((k, v))).to("out")
    inputs = numbered(5)
    out = run(t, inputs, ["out"])["out"]
    assert seen == [(k, v) for k, v, _ in inputs]
    assert decoded(out) == [(k, v) for k, v, _ in inputs]
    assert [r.timestamp for r in out] == [v["ts"] for _, v, _ in inputs]


def test_peek_after_select_key_sees_the_new_key() -> None:
    seen: list[tuple[Any, Any]] = []
    t = Topology("t_peek_key")
    (t.stream("in").select_key(lambda v: v["n"] * 10)
     .peek(lambda k, v: seen.append((k, v["n"]))).to("out"))
    run(t, [("a", {"n": 1}, 1), ("b", {"n": 2}, 2)], [])
    assert seen == [(10, 1), (20, 2)]


def test_branch_first_matching_predicate_wins_and_unmatched_are_dropped() -> None:
    t = Topology("t_branch")
    even, div3 = t.stream("in").branch(lambda v: v["n"] % 2 == 0, lambda v: v["n"] % 3 == 0)
    even.to("even")
    div3.to("div3")
    inputs = numbered(13)
    out = run(t, inputs, ["even", "div3"])
    # 0, 6, 12 are both even and divisible by 3: the first predicate takes them.
    assert decoded(out["even"]) == [(k, v) for k, v, _ in inputs if v["n"] % 2 == 0]
    assert decoded(out["div3"]) == [(k, v) for k, v, _ in inputs
                                    if v["n"] % 2 != 0 and v["n"] % 3 == 0]
    # 1, 5, 7, 11 match nothing and go nowhere.
    assert len(out["even"]) + len(out["div3"]) == 13 - 4


def test_branch_default_catches_the_rest() -> None:
    t = Topology("t_branch_default")
    branches = t.stream("in").branch(lambda v: v["n"] % 2 == 0, lambda v: v["n"] % 3 == 0,
                                     default=True)
    assert len(branches) == 3
    for stream, topic in zip(branches, ["even", "div3", "rest"], strict=True):
        stream.to(topic)
    inputs = numbered(13)
    out = run(t, inputs, ["even", "div3", "rest"])
    ns = {topic: [v["n"] for _, v in decoded(out[topic])] for topic in out}
    assert ns["even"] == [n for n in range(13) if n % 2 == 0]
    assert ns["div3"] == [n for n in range(13) if n % 2 and n % 3 == 0]
    assert ns["rest"] == [n for n in range(13) if n % 2 and n % 3]
    assert sorted(ns["even"] + ns["div3"] + ns["rest"]) == list(range(13))


def test_to_writes_the_selected_key() -> None:
    t = Topology("t_to_keys")
    s = t.stream("in", timestamp="ts")
    s.select_key(lambda v: v["user"]).to("by-user")
    s.select_key(lambda v: v["n"]).to("by-number")  # a non-string key is written as JSON
    inputs = [("orig", {"user": f"u{i}", "n": i * 7, "ts": i}, i) for i in range(4)]
    out = run(t, inputs, ["by-user", "by-number"])
    assert [(r.key, json.loads(r.value)) for r in out["by-user"]] == \
        [(f"u{i}".encode(), v) for i, (_, v, _) in enumerate(inputs)]
    assert [r.key for r in out["by-number"]] == [str(i * 7).encode() for i in range(4)]


# -- grouping and aggregation -------------------------------------------------------------------

def test_group_by_count_is_keyed_by_the_new_key() -> None:
    t = Topology("t_count")
    (t.stream("in", timestamp="ts").group_by(lambda v: v["city"], name="by-city")
     .count(name="rides").to("counts"))
    cities = ["berlin", "paris", "berlin", "rome", "berlin", "paris"]
    inputs = [(f"rider{i}", {"city": c, "ts": 100 + i}, i) for i, c in enumerate(cities)]
    with TopologyTestDriver(t) as driver:
        for key, value, ts in inputs:
            driver.pipe("in", key, value, ts)
        table = driver.table("rides")
        updates = driver.read_records("counts")
    assert table == dict(Counter(cities))
    running: Counter[str] = Counter()
    expected = []
    for c in cities:
        running[c] += 1
        expected.append((c, running[c]))
    assert decoded(updates) == expected
    assert [r.timestamp for r in updates] == [v["ts"] for _, v, _ in inputs]


events_strategy = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "dd", "é"]),  # group key
              st.integers(min_value=-10**9, max_value=10**9)),
    max_size=25)


@FAST
@given(events_strategy)
def test_group_by_reduce_matches_oracle(evs: list[tuple[str, int]]) -> None:
    t = Topology("t_reduce")
    (t.stream("in").group_by(lambda v: v["g"], name="g")
     .reduce(lambda a, v: {"g": v["g"], "x": a["x"] + v["x"], "n": a["n"] + 1}, name="sums")
     .to("sums-out"))
    with TopologyTestDriver(t) as driver:
        for i, (g, x) in enumerate(evs):
            driver.pipe("in", f"src{i}", {"g": g, "x": x, "n": 1}, i)
        table = driver.table("sums")
        updates = driver.read_output("sums-out")
    sums: dict[str, int] = {}
    counts: dict[str, int] = {}
    expected_updates = []
    for g, x in evs:
        sums[g] = sums.get(g, 0) + x
        counts[g] = counts.get(g, 0) + 1
        expected_updates.append((g, {"g": g, "x": sums[g], "n": counts[g]}))
    assert table == {g: {"g": g, "x": sums[g], "n": counts[g]} for g in sums}
    assert updates == expected_updates


@FAST
@given(events_strategy)
def test_group_by_aggregate_dict_matches_oracle(evs: list[tuple[str, int]]) -> None:
    t = Topology("t_aggregate")

    def add(agg: dict, v: dict) -> dict:
        return {"count": agg["count"] + 1, "sum": agg["sum"] + v["x"],
                "max": v["x"] if agg["max"] is None else max(agg["max"], v["x"]),
                "keys": sorted(set(agg["keys"]) | {v["src"]})}

    (t.stream("in").group_by(lambda v: v["g"], name="g")
     .aggregate(lambda: {"count": 0, "sum": 0, "max": None, "keys": []}, add, name="stats")
     .to("stats-out"))
    with TopologyTestDriver(t) as driver:
        for i, (g, x) in enumerate(evs):
            driver.pipe("in", f"s{i % 4}", {"g": g, "x": x, "src": f"s{i % 4}"}, i)
        table = driver.table("stats")
        updates = driver.read_output("stats-out")
    expected: dict[str, dict] = {}
    expected_updates = []
    for i, (g, _x) in enumerate(evs):
        group = [(j, y) for j, (h, y) in enumerate(evs[:i + 1]) if h == g]
        expected[g] = {"count": len(group), "sum": sum(y for _, y in group),
                       "max": max(y for _, y in group),
                       "keys": sorted({f"s{j % 4}" for j, _ in group})}
        expected_updates.append((g, expected[g]))
    assert table == expected
    assert updates == expected_updates


# -- faust Record values --------------------------------------------------------------------------

class View(faust.Record):
    viewer_id: str
    profile_id: str
    ts: int


def test_record_source_delivers_record_instances() -> None:
    seen: list[tuple[str, Any]] = []
    t = Topology("t_record")

    def note(where: str, result: Any) -> Any:
        return lambda v: (seen.append((where, v)), result(v))[1]

    s = t.stream("views", value=View, timestamp="ts")
    (s.filter(note("filter", lambda v: v.viewer_id != "skip"))
     .select_key(note("select_key", lambda v: v.profile_id))
     .map(note("map", lambda v: {"viewer": v.viewer_id}))
     .to("out"))
    s.group_by(note("group_by", lambda v: v.profile_id), name="by-profile").aggregate(
        lambda: [], lambda agg, v: (seen.append(("aggregate", v)), agg + [v.viewer_id])[1],
        name="viewers")
    views = [{"viewer_id": "u1", "profile_id": "p1", "ts": 50},
             {"viewer_id": "skip", "profile_id": "p2", "ts": 60},
             {"viewer_id": "u3", "profile_id": "p1", "ts": 70}]
    with TopologyTestDriver(t) as driver:
        for v in views:
            driver.pipe("views", v["viewer_id"], v, 1)
        out = driver.read_records("out")
        table = driver.table("viewers")
        assert driver.read_records(t.dlq_topic) == []
    assert seen, "no operator function was called"
    assert all(isinstance(v, View) for _, v in seen), [type(v) for _, v in seen]
    assert {where for where, _ in seen} == {"filter", "select_key", "map", "group_by",
                                            "aggregate"}
    assert [(v.viewer_id, v.profile_id, v.ts) for where, v in seen if where == "filter"] == \
        [(v["viewer_id"], v["profile_id"], v["ts"]) for v in views]
    assert decoded(out) == [(v["profile_id"], {"viewer": v["viewer_id"]})
                            for v in views if v["viewer_id"] != "skip"]
    assert [r.timestamp for r in out] == [v["ts"] for v in views if v["viewer_id"] != "skip"]
    assert table == {"p1": ["u1", "u3"], "p2": ["skip"]}


class ViewStats(faust.Record):
    views: int


def test_regrouping_a_table_of_a_record_source_delivers_the_aggregate_values() -> None:
    """A table's update stream carries its aggregates, not the source's Record type (formerly
    the second repartition decoded them as ``View`` and dead-lettered every update)."""
    seen: list[Any] = []
    t = Topology("t_regroup")
    per_profile = t.stream("views", value=View).group_by(
        lambda v: v.profile_id, name="by-profile").aggregate(
        lambda: {"views": 0}, lambda a, v: {"views": a["views"] + 1}, name="per-profile")
    (per_profile.to_stream()
     .group_by(lambda a: (seen.append(a), str(a["views"]))[1], name="by-views")
     .count(name="histogram"))
    # with a Record aggregate, the regrouped values are that Record
    typed = t.stream("views2", value=View).group_by(
        lambda v: v.profile_id, name="by-profile2").aggregate(
        lambda: ViewStats(views=0), lambda a, v: ViewStats(views=a.views + 1),
        name="typed", value=ViewStats)
    typed.to_stream().group_by(lambda a: (seen.append(a), str(a.views))[1],
                               name="by-views2").count(name="histogram2")
    profiles = ["p1", "p2", "p1", "p3", "p1"]
    with TopologyTestDriver(t) as driver:
        for i, p in enumerate(profiles):
            v = {"viewer_id": f"u{i}", "profile_id": p, "ts": i}
            driver.pipe("views", "k", v)
            driver.pipe("views2", "k", v)
        assert driver.read_records(t.dlq_topic) == []
        histogram, histogram2 = driver.table("histogram"), driver.table("histogram2")
    # every update (profile, running count) is counted under its running count
    expected: Counter[str] = Counter()
    running: Counter[str] = Counter()
    for p in profiles:
        running[p] += 1
        expected[str(running[p])] += 1
    assert histogram == histogram2 == dict(expected)
    # pipes alternate views/views2: plain aggregate dict, then ViewStats, per input
    assert [type(a) for a in seen] == [dict, ViewStats] * len(profiles)


def test_record_missing_a_field_is_a_dead_letter() -> None:
    t = Topology("t_record_dlq")
    t.stream("views", value=View, timestamp="ts").map(lambda v: v.profile_id).to("out")
    bad = b'{"viewer_id":"u1","ts":5}'
    with TopologyTestDriver(t) as driver:
        driver.pipe_raw("views", b"k", bad)
        driver.pipe("views", "k", {"viewer_id": "u2", "profile_id": "p9", "ts": 6})
        dlq = driver.read_records("t_record_dlq-dlq")
        assert driver.read_output("out") == [("k", "p9")]
    assert [r.value for r in dlq] == [bad]
    assert "View" in dict(dlq[0].headers)["error"].decode()


# -- dead letters ---------------------------------------------------------------------------------

def test_bad_records_go_to_the_dlq_and_processing_continues() -> None:
    t = Topology("dlqtest")

    def enrich(v: dict) -> dict:
        if v["n"] == 13:
            raise ValueError("unlucky number 13")
        return {"n": v["n"], "double": v["n"] * 2}

    t.stream("in", timestamp="ts").map(enrich).to("out")

    def good(n: int) -> bytes:
        return json.dumps({"n": n, "ts": 1000 + n}).encode()

    # (key bytes, value bytes, expected error substring or None for a good record)
    inputs: list[tuple[bytes, bytes, str | None]] = [
        (b"a", good(1), None),
        (b"b", b'{"n": 2, "ts": ', "invalid JSON"),
        (b"c", good(3), None),
        (b"d", b'[{"n": 4, "ts": 1004}]', "expected a JSON object, got list"),
        (b"e", good(5), None),
        (b"f", b'{"n": 6}', "timestamp field 'ts'"),
        (b"g", good(7), None),
        (b"h", good(13), "unlucky number 13"),
        (b"i", good(8), None),
        (b"j", b'{"n": 9, "ts": "yesterday"}', "timestamp field 'ts'"),
        (b"k", good(10), None),
    ]
    with TopologyTestDriver(t) as driver:
        for i, (kb, vb, _) in enumerate(inputs):
            driver.pipe_raw("in", kb, vb, timestamp=500 + i)
        out = driver.read_output("out")
        dlq = driver.read_records("dlqtest-dlq")

    expected_out = []
    for kb, vb, err in inputs:
        if err is None:
            n = json.loads(vb)["n"]
            expected_out.append((kb.decode(), {"n": n, "double": 2 * n}))
    assert out == expected_out

    expected_bad = [(i, kb, vb, err) for i, (kb, vb, err) in enumerate(inputs) if err]
    assert len(dlq) == len(expected_bad)
    for rec, (offset, kb, vb, err) in zip(dlq, expected_bad, strict=True):
        headers = dict(rec.headers)
        assert [h for h, _ in rec.headers] == ["error", "reason", "source-topic",
                                               "source-partition", "source-offset", "node"]
        assert rec.key == kb
        assert rec.value == vb
        assert rec.timestamp == 500 + offset
        assert err in headers["error"].decode(), headers["error"]
        assert headers["source-topic"] == b"in"
        assert headers["source-partition"] == b"0"
        assert headers["source-offset"] == str(offset).encode()
    # the user-function failure names the exception type
    assert b"ValueError" in dict(dlq[-2].headers)["error"]


def test_failing_filter_and_flat_map_send_only_the_failing_record_to_the_dlq() -> None:
    t = Topology("dlqops")
    (t.stream("in")
     .filter(lambda v: 1 / v["d"] > 0)                   # d == 0 raises ZeroDivisionError
     .flat_map(lambda v: [v["n"]] * v["times"])           # missing "times" raises KeyError
     .to("out"))
    values = [{"n": 1, "d": 1, "times": 2}, {"n": 2, "d": 0, "times": 1},
              {"n": 3, "d": -1, "times": 1}, {"n": 4, "d": 2}, {"n": 5, "d": 1, "times": 1}]
    with TopologyTestDriver(t) as driver:
        for i, v in enumerate(values):
            driver.pipe("in", f"k{i}", v, i)
        out = driver.read_output("out")
        dlq = driver.read_records("dlqops-dlq")
    assert out == [("k0", 1), ("k0", 1), ("k4", 5)]
    assert [dict(r.headers)["source-offset"] for r in dlq] == [b"1", b"3"]
    assert b"ZeroDivisionError" in dict(dlq[0].headers)["error"]
    assert b"KeyError" in dict(dlq[1].headers)["error"]


# -- the reference topology -----------------------------------------------------------------------

def test_profile_notifications_matches_oracle() -> None:
    from topologies.profile_notifications import topology

    evs = events("profile_notifications", 2000, seed=1)
    notable = ("Recruiter", "Hiring Manager", "CEO", "CTO")
    expected = [(v["profile_id"], v) for _topic, _key, v in evs
                if any(title in v["viewer_title"] for title in notable)]
    assert 0 < len(expected) < len(evs)
    with TopologyTestDriver(topology) as driver:
        for topic, key, value in evs:
            driver.pipe(topic, key, value)
        out = driver.read_records("profile-view-notifications")
        assert driver.read_records(topology.dlq_topic) == []
    assert decoded(out) == expected
    assert [r.timestamp for r in out] == [v["ts"] for _, v in expected]


# -- doctests --------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", [streams.testing, streams.dsl.topology, streams.serdes],
                         ids=lambda m: m.__name__)
def test_doctests(module: Any) -> None:
    result = doctest.testmod(module, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0
