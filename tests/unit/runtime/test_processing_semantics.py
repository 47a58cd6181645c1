"""Processing semantics of the batch processors, fed as ONE batch (``pipe_batch``) as the worker
does after a poll: per-record updates, type stability of state across commits, all-or-nothing
``process()``, tombstones and null keys in aggregations, no re-run of user functions, the shape
of ``flat_map``/``process`` results, and records no branch takes.

Every test here failed on the code before these fixes (each docstring says how), except the
two marked "Guard", which pin down what the new shape checks must keep accepting.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import faust
import pytest

from streams import Topology
from streams.runtime.task import Task
from streams.testing import TopologyTestDriver


@pytest.fixture
def dropped(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """(node name, reason) -> number of ``Task.count_dropped`` calls."""
    calls: Counter = Counter()
    monkeypatch.setattr(Task, "count_dropped",
                        lambda self, node, reason: calls.update([(node, reason)]))
    return calls


# -- 1. in-place aggregate adders ---------------------------------------------------------------

def _mutating_counter(name: str) -> Topology:
    t = Topology(name)

    def add(agg: dict, v: dict) -> dict:
        agg["n"] += 1          # mutates the aggregate it was given, as faust users do
        agg["sum"] += v["x"]
        return agg

    (t.stream("in").group_by_key()
     .aggregate(lambda: {"n": 0, "sum": 0}, add, name="totals").to("totals-out"))
    return t


def test_in_place_adder_emits_the_state_after_each_record() -> None:
    """Formerly every update of a batch carried the final aggregate (n=3, n=3, n=3): the emitted
    value was the object the table cache held, serialized after the batch."""
    t = _mutating_counter("inplace")
    inputs = [("a", {"x": 1}, 1), ("b", {"x": 10}, 2), ("a", {"x": 2}, 3), ("a", {"x": 3}, 4),
              ("b", {"x": 20}, 5)]
    expected, state = [], {}
    for key, v, _ in inputs:
        n, s = state.get(key, (0, 0))
        state[key] = (n + 1, s + v["x"])
        expected.append((key, {"n": n + 1, "sum": s + v["x"]}))
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", inputs)
        assert driver.read_output("totals-out") == expected
        assert driver.table("totals") == {k: {"n": n, "sum": s} for k, (n, s) in state.items()}


def test_in_place_adder_that_raises_leaves_the_aggregate_unchanged() -> None:
    """Formerly an adder that mutated the cached aggregate and then raised changed the table
    although its record went to the dead letters."""
    t = Topology("inplace_fail")

    def add(agg: dict, v: dict) -> dict:
        agg["n"] += 1
        if v.get("bad"):
            raise ValueError("bad record")
        return agg

    t.stream("in").group_by_key().aggregate(lambda: {"n": 0}, add, name="c").to("c-out")
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("a", {}, 1), ("a", {"bad": True}, 2), ("a", {}, 3)])
        assert driver.read_output("c-out") == [("a", {"n": 1}), ("a", {"n": 2})]
        assert driver.table("c") == {"a": {"n": 2}}
        assert [d.source_offset for d in driver.read_dead_letters()] == [1]


# -- 2. state values have the serde's type, commit or not -----------------------------------------

class Seen(faust.Record):
    n: int


def _type_reporting(name: str) -> Topology:
    """Puts a faust Record into a generic-JSON store and reports what ``get`` gave back."""
    t = Topology(name)
    t.store("last")

    def step(key: str, value: dict, stores: dict) -> list:
        store = stores["last"]
        prev = store.get(key)
        store.put(key, Seen(n=value["n"]))
        return [(key, {"prev_type": type(prev).__name__})]

    t.stream("in").process(step, stores=["last"]).to("out")
    return t


def _aggregate_of_records(name: str) -> Topology:
    """An adder written for what the (generic JSON) store gives back: dicts."""
    t = Topology(name)
    (t.stream("in").group_by_key()
     .aggregate(lambda: {"n": 0}, lambda a, v: Seen(n=a["n"] + v["x"]), name="agg")
     .to("out"))
    return t


@pytest.mark.parametrize("build", [_type_reporting, _aggregate_of_records])
def test_results_do_not_depend_on_where_commits_fall(build: Any) -> None:
    """Formerly ``get`` returned the object put (a Record) until the commit and the serde's
    decoding (a dict) after it: the process step saw 'Seen' in one batch but 'dict' across
    commits, and the aggregate's adder failed (``Seen`` has no ``[]``) only within a batch."""
    inputs = [("a", {"n": 1, "x": 1}, 1), ("a", {"n": 2, "x": 2}, 2), ("b", {"n": 3, "x": 3}, 3),
              ("a", {"n": 4, "x": 4}, 4), ("b", {"n": 5, "x": 5}, 5)]
    results = []
    for committing in (False, True):
        t = build(f"rt{int(committing)}")
        with TopologyTestDriver(t) as driver:
            if committing:
                for rec in inputs:
                    driver.pipe_batch("in", [rec])
                    driver.commit()
            else:
                driver.pipe_batch("in", inputs)
            dead = [(d.source_offset, d.error) for d in driver.read_dead_letters()]
            results.append((driver.read_output("out"), dead))
    assert results[0] == results[1]
    out, dead = results[0]
    assert dead == []
    assert len(out) == len(inputs)


# -- 4. process() is all or nothing per record -----------------------------------------------------

def _process_topology(name: str, step: Any) -> Topology:
    t = Topology(name)
    t.store("s")
    t.stream("in").process(step, stores=["s"]).to("out")
    return t


def test_process_that_raises_after_a_store_write_leaves_no_write() -> None:
    """Formerly the write made before the exception was committed although the record went to
    the dead letters."""

    def step(key: str, value: dict, stores: dict) -> list:
        s = stores["s"]
        s.put(key, s.get(key, 0) + value["x"])
        s.put("writes", s.get("writes", 0) + 1)
        if value["x"] < 0:
            raise ValueError("negative")
        return [(key, s.get(key))]

    t = _process_topology("proc_raise", step)
    inputs = [("a", {"x": 1}, 1), ("a", {"x": -5}, 2), ("b", {"x": 2}, 3), ("a", {"x": 3}, 4)]
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", inputs)
        assert driver.read_output("out") == [("a", 1), ("b", 2), ("a", 4)]
        assert driver.table("s") == {"a": 4, "b": 2, "writes": 3}
        assert [d.source_offset for d in driver.read_dead_letters()] == [1]


def test_process_generator_that_raises_emits_nothing_for_its_record() -> None:
    """Formerly the pairs yielded before the exception were emitted, and the store write made
    before it was kept."""

    def step(key: str, value: dict, stores: dict) -> Any:
        stores["s"].put(key, value["x"])
        yield key, value["x"]
        if value["x"] == 2:
            raise RuntimeError("boom after one yield")
        yield key + "!", value["x"]

    t = _process_topology("proc_gen", step)
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("a", {"x": 1}, 1), ("b", {"x": 2}, 2), ("c", {"x": 3}, 3)])
        assert driver.read_output("out") == [("a", 1), ("a!", 1), ("c", 3), ("c!", 3)]
        assert driver.table("s") == {"a": 1, "c": 3}
        ((offset, error),) = [(d.source_offset, d.error) for d in driver.read_dead_letters()]
        assert offset == 1 and "boom after one yield" in error


@pytest.mark.parametrize("bad,what", [
    ({"ab": 1}, "dict"),             # formerly emitted ("a", "b") from the key "ab"
    ("kv", "str"),                   # formerly emitted ("k", "v")
    (b"kv", "bytes"),
    (("k", "v"), "tuple"),           # a bare pair, not a list of pairs
    ([("k", "v", "w")], "tuple"),
    (["ab"], "str"),
    (5, "int"),
])
def test_process_result_of_the_wrong_shape_is_a_dead_letter(bad: Any, what: str,
                                                            reasons: list[str]) -> None:
    """Formerly a dict or a str was iterated and unpacked (emitting garbage) and other shapes
    failed as "processing" errors with the store write kept; now: reason "shape", an error
    naming the node and what was returned, no output and no store write."""

    def step(key: str, value: dict, stores: dict) -> Any:
        stores["s"].put(key, value["x"])
        return bad if value["x"] == 2 else [(key, value["x"])]

    t = Topology("proc_shape")
    t.store("s")
    t.stream("in").process(step, stores=["s"], name="shaper").to("out")
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("a", {"x": 1}, 1), ("b", {"x": 2}, 2), ("c", {"x": 3}, 3)])
        assert driver.read_output("out") == [("a", 1), ("c", 3)]
        assert driver.table("s") == {"a": 1, "c": 3}
        ((offset, error),) = [(d.source_offset, d.error) for d in driver.read_dead_letters()]
    assert offset == 1
    assert reasons == ["shape"]
    assert "shaper" in error and what in error, error


def test_process_accepts_every_iterable_of_pairs(reasons: list[str]) -> None:
    """Guard for the shape check: None, lists, tuples, generators, sets of pairs all pass."""
    shapes = [None, [], [("k", 1)], (("k", 2), ("k", 3)), (("g", i) for i in range(2)),
              {("s", 9)}]

    def step(key: str, value: dict, stores: dict) -> Any:
        return shapes[value["i"]]

    t = _process_topology("proc_shapes_ok", step)
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("k", {"i": i}, i) for i in range(len(shapes))])
        assert driver.read_output("out") == [("k", 1), ("k", 2), ("k", 3), ("g", 0), ("g", 1),
                                             ("s", 9)]
    assert reasons == []


# -- 5. tombstones and null keys in aggregations ---------------------------------------------------

@pytest.mark.parametrize("kind", ["count", "reduce", "aggregate"])
def test_aggregations_skip_tombstones_and_null_keys(kind: str, dropped: Counter,
                                                    reasons: list[str]) -> None:
    """Formerly a tombstone was counted (or crashed the reducer) and a null key was a
    "processing" dead letter; now both are skipped, change nothing, emit nothing and are
    counted as dropped (Kafka Streams semantics)."""
    t = Topology(f"nulls_{kind}")
    grouped = t.stream("in").group_by_key()
    if kind == "count":
        table = grouped.count(name="agg")
    elif kind == "reduce":
        table = grouped.reduce(lambda a, v: {"x": a["x"] + v["x"]}, name="agg")
    else:
        table = grouped.aggregate(lambda: {"x": 0}, lambda a, v: {"x": a["x"] + v["x"]},
                                  name="agg")
    table.to("out")
    # (key bytes, value bytes): None key / None value are the records to skip
    raws = [(b"a", b'{"x": 1}'), (b"a", None), (None, b'{"x": 5}'), (b"b", b'{"x": 2}'),
            (b"a", b'{"x": 3}'), (b"b", None), (None, None)]
    expected, state = [], {}
    for kb, vb in raws:
        if kb is None or vb is None:
            continue
        key, x = kb.decode(), json.loads(vb)["x"]
        if kind == "count":
            state[key] = state.get(key, 0) + 1
        else:
            state[key] = {"x": state.get(key, {"x": 0})["x"] + x}
        expected.append((key, state[key]))
    with TopologyTestDriver(t) as driver:
        for kb, vb in raws:
            driver.pipe_raw("in", kb, vb, timestamp=1)
        assert driver.read_output("out") == expected
        assert driver.table("agg") == state
        assert driver.read_records(t.dlq_topic) == []
    assert reasons == []
    assert dropped == {("agg-aggregate", "null-value"): 2, ("agg-aggregate", "null-key"): 2}


def test_tombstones_reach_a_count_after_a_repartition_and_are_dropped(dropped: Counter) -> None:
    """Same through group_by: a value mapped to None and a group key of None travel the
    repartition topic as a tombstone and a null key. Formerly the tombstone was counted and the
    null key was a dead letter."""
    t = Topology("nulls_repart")
    (t.stream("in").map(lambda v: None if v.get("drop") else v)
     .group_by(lambda v: "x" if v is None else v.get("g"), name="g").count(name="c").to("out"))
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("1", {"g": "x"}, 1), ("2", {"drop": True}, 2),
                                 ("3", {"g": "x"}, 3), ("4", {}, 4)])
        assert driver.read_output("out") == [("x", 1), ("x", 2)]
        assert driver.table("c") == {"x": 2}
        assert driver.read_records(t.dlq_topic) == []
    assert dropped == {("c-aggregate", "null-value"): 1, ("c-aggregate", "null-key"): 1}


# -- 6. a failing record does not re-run the others ------------------------------------------------

def test_each_user_function_runs_once_per_record_when_records_fail(dropped: Counter) -> None:
    """Formerly map, filter, flat_map and select_key re-ran the whole batch record by record
    after a failure, so user side effects ran twice for the records before the failing one."""
    calls: Counter = Counter()

    def op(name: str, fails_at: int, result: Any) -> Any:
        def fn(*args: Any) -> Any:
            v = args[-1]
            calls[(name, v["n"])] += 1
            if v["n"] == fails_at:
                raise ValueError(f"{name} fails at {fails_at}")
            return result(v)
        return fn

    t = Topology("once")
    even, div3 = (t.stream("in")
                  .peek(op("peek", 1, lambda v: None))
                  .map(op("map", 3, lambda v: v))
                  .filter(op("filter", 5, lambda v: v["n"] != 7))
                  .flat_map(op("flat_map", 8, lambda v: [v] * (2 if v["n"] == 4 else 1)))
                  .select_key(op("select_key", 9, lambda v: f"k{v['n']}"))
                  .branch(op("branch_even", 10, lambda v: v["n"] % 2 == 0),
                          op("branch_div3", 11, lambda v: v["n"] % 3 == 0)))
    even.to("even")
    div3.to("div3")
    ns = list(range(16))
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("k", {"n": n}, n) for n in ns])
        out_even = [v["n"] for _, v in driver.read_output("even")]
        out_div3 = [v["n"] for _, v in driver.read_output("div3")]
        dead = sorted(d.source_offset for d in driver.read_dead_letters())

    # oracle: every operator a record (or each of its flat_map copies) reaches, exactly once
    expected: Counter = Counter()
    exp_even, exp_div3, exp_dead, unmatched = [], [], [], 0
    for n in ns:
        def reaches(name: str, fails_at: int, n: int = n) -> bool:
            expected[(name, n)] += 1
            if n == fails_at:
                exp_dead.append(n)
            return n != fails_at
        if not (reaches("peek", 1) and reaches("map", 3) and reaches("filter", 5)) or n == 7:
            continue
        if not reaches("flat_map", 8):
            continue
        for _copy in range(2 if n == 4 else 1):
            if not (reaches("select_key", 9) and reaches("branch_even", 10)):
                continue
            if n % 2 == 0:
                exp_even.append(n)
            elif reaches("branch_div3", 11):
                if n % 3 == 0:
                    exp_div3.append(n)
                else:
                    unmatched += 1
    assert calls == expected
    assert out_even == exp_even and out_div3 == exp_div3
    assert dead == exp_dead
    assert unmatched > 0 and list(dropped.values()) == [unmatched]
    assert [reason for _, reason in dropped] == ["no-branch"]


# -- 7. flat_map results --------------------------------------------------------------------------

@pytest.mark.parametrize("bad,what", [("abc", "str"), (b"abc", "bytes"), ({"a": 1}, "dict"),
                                      (42, "int"), (None, "NoneType")])
def test_flat_map_result_that_is_not_a_collection_is_a_dead_letter(bad: Any, what: str,
                                                                   reasons: list[str]) -> None:
    """Formerly a str, bytes or dict was iterated (by character, byte, key) silently, and a
    non-iterable was a "processing" error; now all are dead letters with reason "shape"."""
    t = Topology("fm_shape")
    t.stream("in").flat_map(lambda v: bad if v["n"] == 1 else [v["n"]], name="splitter").to("out")
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("a", {"n": 0}, 1), ("b", {"n": 1}, 2), ("c", {"n": 2}, 3)])
        assert driver.read_output("out") == [("a", 0), ("c", 2)]
        ((offset, error),) = [(d.source_offset, d.error) for d in driver.read_dead_letters()]
    assert offset == 1 and reasons == ["shape"]
    assert "splitter" in error and what in error, error


def test_flat_map_accepts_collections_and_generators(reasons: list[str]) -> None:
    """Guard for the shape check: list, tuple, set, range, generator are all fine; a generator
    that raises emits nothing for its record."""
    makers: list[Any] = [lambda: [1], lambda: (2, 3), lambda: {4}, lambda: range(5, 6),
                         lambda: (x for x in [6, 7])]

    def gen_fail() -> Any:
        yield 99
        raise RuntimeError("late failure")

    t = Topology("fm_ok")
    t.stream("in").flat_map(lambda v: gen_fail() if v["i"] == len(makers)
                            else makers[v["i"]]()).to("out")
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("k", {"i": i}, i) for i in range(len(makers) + 1)])
        assert [v for _, v in driver.read_output("out")] == [1, 2, 3, 4, 5, 6, 7]
    assert reasons == ["processing"]


# -- 8. branch: unmatched records are counted ------------------------------------------------------

def test_branch_counts_records_matching_no_predicate(dropped: Counter) -> None:
    """Formerly records that matched no predicate vanished without a trace."""
    t = Topology("branch_drop")
    small, big = t.stream("in").branch(lambda v: v["n"] < 3, lambda v: v["n"] > 7)
    small.to("small")
    big.to("big")
    ns = list(range(10))
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("k", {"n": n}, n) for n in ns])
        assert [v["n"] for _, v in driver.read_output("small")] == [0, 1, 2]
        assert [v["n"] for _, v in driver.read_output("big")] == [8, 9]
    ((node, reason),) = dropped
    assert reason == "no-branch" and node.startswith("branch")
    assert dropped[(node, reason)] == len([n for n in ns if 3 <= n <= 7])
