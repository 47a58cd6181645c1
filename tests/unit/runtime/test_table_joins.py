"""Stream-table and stream-global-table joins through the TopologyTestDriver (no broker).

Expected results are computed here from the inputs: by hand for the named cases, and by a
brute-force oracle (a dict replayed in input order) for the property tests.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import Topology
from streams.runtime.task import Task
from streams.runtime.topics import plan_topics
from streams.testing import TopologyTestDriver
from tests.conftest import examples

FAST = settings(max_examples=examples(60), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def dropped(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """(node, reason) -> records a processor skipped by design."""
    seen: Counter = Counter()
    original = Task.count_dropped

    def count(self: Task, node: str, reason: str) -> None:
        seen[(node, reason)] += 1
        original(self, node, reason)

    monkeypatch.setattr(Task, "count_dropped", count)
    return seen


def table_join(how: str, joiner: Any = None) -> Topology:
    t = Topology("tj")
    users = t.table("users")
    (t.stream("orders")  # record timestamps: null values are joins' business, not timestamps'
        .join(users, joiner or (lambda o, u: {"o": o["n"], "tier": u and u["tier"]}), how=how,
              name="j")
        .to("out"))
    return t


def global_join(how: str, joiner: Any = None, selector: Any = None) -> Topology:
    t = Topology("gj")
    products = t.global_table("products")
    (t.stream("orders")
        .join(products, selector or (lambda _k, o: o["pid"]),
              joiner or (lambda o, p: {"o": o["n"], "price": p and p["price"]}), how=how,
              name="j")
        .to("out"))
    return t


def out(driver: TopologyTestDriver) -> list[tuple[str, Any]]:
    return driver.read_output("out")


# -- stream-table join -----------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["inner", "left"])
def test_a_table_update_after_the_stream_record_emits_nothing(how: str) -> None:
    with TopologyTestDriver(table_join(how)) as d:
        d.pipe("users", "u1", {"tier": "GOLD"})
        d.pipe("orders", "u1", {"n": 1, "ts": 1})
        d.pipe("users", "u1", {"tier": "SILVER"})        # no retroactive result for n=1
        d.pipe("users", "u2", {"tier": "BRONZE"})
        assert out(d) == [("u1", {"o": 1, "tier": "GOLD"})]
        d.pipe("orders", "u1", {"n": 2, "ts": 2})        # the next record sees the update
        assert out(d) == [("u1", {"o": 2, "tier": "SILVER"})]


def test_a_stream_record_before_any_table_row() -> None:
    with TopologyTestDriver(table_join("inner")) as d:
        d.pipe("orders", "u1", {"n": 1, "ts": 1})
        d.pipe("users", "u1", {"tier": "GOLD"})
        assert out(d) == []
    with TopologyTestDriver(table_join("left")) as d:
        d.pipe("orders", "u1", {"n": 1, "ts": 1})
        d.pipe("users", "u1", {"tier": "GOLD"})
        assert out(d) == [("u1", {"o": 1, "tier": None})]


def test_a_tombstone_deletes_the_row_inner_drops_left_gets_none() -> None:
    for how, expected in (("inner", []), ("left", [("u1", {"o": 2, "tier": None})])):
        with TopologyTestDriver(table_join(how)) as d:
            d.pipe("users", "u1", {"tier": "GOLD"})
            d.pipe("orders", "u1", {"n": 1, "ts": 1})
            assert out(d) == [("u1", {"o": 1, "tier": "GOLD"})]
            d.pipe("users", "u1", None)
            d.pipe("orders", "u1", {"n": 2, "ts": 2})
            assert out(d) == expected, how
            assert d.table("users") == {}


def test_left_join_with_a_missing_row_calls_the_joiner_with_none() -> None:
    calls = []

    def joiner(order: Any, user: Any) -> Any:
        calls.append((order["n"], user))
        return [order["n"], user]

    with TopologyTestDriver(table_join("left", joiner)) as d:
        d.pipe("users", "u1", {"tier": "GOLD"})
        d.pipe_batch("orders", [("u2", {"n": 1, "ts": 1}, 1), ("u1", {"n": 2, "ts": 1}, 1)])
        assert out(d) == [("u2", [1, None]), ("u1", [2, {"tier": "GOLD"}])]
    assert calls == [(1, None), (2, {"tier": "GOLD"})]


def test_null_keys_and_values_of_the_stream_are_dropped_and_counted(dropped: Counter) -> None:
    with TopologyTestDriver(table_join("left")) as d:
        d.pipe("users", "u1", {"tier": "GOLD"})
        d.pipe_raw("orders", None, b'{"n": 1, "ts": 1}', 1)
        d.pipe_raw("orders", b"u1", None, 2)
        d.pipe("orders", "u1", {"n": 3, "ts": 3})
        assert out(d) == [("u1", {"o": 3, "tier": "GOLD"})]
        assert d.read_dead_letters() == []
    assert dropped == {("j", "null-key"): 1, ("j", "null-value"): 1}


def test_the_output_keeps_the_stream_key_and_timestamp() -> None:
    with TopologyTestDriver(table_join("inner")) as d:
        d.pipe("users", "u1", {"tier": "GOLD"}, timestamp=999)
        d.pipe("orders", "u1", {"n": 1}, timestamp=42)
        [rec] = d.read_records("out")
        assert (rec.key, rec.timestamp) == (b"u1", 42)


def test_a_joiner_that_raises_sends_its_record_to_the_dead_letters_and_the_batch_goes_on() -> None:
    def joiner(order: Any, user: Any) -> Any:
        if order["n"] == 2:
            raise ZeroDivisionError("boom")
        return order["n"]

    with TopologyTestDriver(table_join("inner", joiner)) as d:
        d.pipe("users", "u1", {"tier": "GOLD"})
        d.pipe_batch("orders", [("u1", {"n": n, "ts": n}, n) for n in (1, 2, 3)])
        assert out(d) == [("u1", 1), ("u1", 3)]
        [dl] = d.read_dead_letters()
        assert dl.reason == "processing" and "ZeroDivisionError: boom" in dl.error
        assert (dl.source_topic, dl.source_offset) == ("orders", 1)
        assert json.loads(dl.value) == {"n": 2, "ts": 2}


def test_a_joiner_of_the_wrong_shape_is_a_dead_letter_shape() -> None:
    async def joiner(order: Any, user: Any) -> Any:  # an async def by mistake
        return order

    def generator(order: Any, user: Any) -> Any:
        yield order

    for fn in (joiner, generator):
        with TopologyTestDriver(table_join("left", fn)) as d:
            d.pipe("orders", "u1", {"n": 1, "ts": 1})
            assert out(d) == []
            [dl] = d.read_dead_letters()
            assert dl.reason == "shape" and "joiner" in dl.error


def test_a_joiner_returning_none_passes_a_null_value_on() -> None:
    with TopologyTestDriver(table_join("left", lambda o, u: None)) as d:
        d.pipe("orders", "u1", {"n": 1, "ts": 1})
        assert d.read_output("out", decode=False) == [(b"u1", None)]


def test_a_joiner_result_that_cannot_be_written_is_a_dead_letter_at_the_sink() -> None:
    with TopologyTestDriver(table_join("left", lambda o, u: {"x": object()})) as d:
        d.pipe("orders", "u1", {"n": 1, "ts": 1})
        assert out(d) == []
        assert [dl.reason for dl in d.read_dead_letters()] == ["processing"]


def test_a_join_on_an_aggregation_reads_its_current_aggregate() -> None:
    t = Topology("agg")
    counts = t.stream("clicks").group_by_key().count(name="clicks")
    (t.stream("orders", timestamp="ts").join(counts, lambda o, c: [o["n"], c]).to("out"))
    with TopologyTestDriver(t) as d:
        d.pipe("clicks", "u1", {})
        d.pipe("clicks", "u1", {})
        d.pipe("orders", "u1", {"n": 1, "ts": 1})
        d.pipe("clicks", "u1", {})
        d.pipe("orders", "u1", {"n": 2, "ts": 2})
        assert out(d) == [("u1", [1, 2]), ("u1", [2, 3])]


def test_a_rekeyed_stream_is_repartitioned_before_the_join() -> None:
    t = Topology("rk")
    users = t.table("users")
    (t.stream("orders", timestamp="ts").select_key(lambda o: o["user"])
        .join(users, lambda o, u: [o["n"], u["tier"]]).to("out"))
    assert t.repartition_topics() == ["rk-users-join-repartition"]
    with TopologyTestDriver(t) as d:
        d.pipe("users", "u1", {"tier": "GOLD"})
        d.pipe("orders", "order-7", {"n": 1, "user": "u1", "ts": 1})
        assert out(d) == [("u1", [1, "GOLD"])]


def test_the_stream_and_the_table_topic_form_one_subtopology_and_must_be_co_partitioned() -> None:
    t = table_join("inner")
    _specs, problems = plan_topics(t, {"orders": 4, "users": 4}, 4)
    assert problems == []
    _specs, problems = plan_topics(t, {"orders": 4, "users": 3}, 4)
    assert len(problems) == 1 and "co-partitioned" in problems[0]


def test_joins_refuse_what_they_cannot_join() -> None:
    from streams import TumblingWindows

    t = Topology("bad")
    s = t.stream("orders")
    windowed = s.group_by_key().window(TumblingWindows(size=1000)).count(name="w")
    with pytest.raises(TypeError, match="cannot be joined"):
        s.join(windowed, lambda a, b: a)
    with pytest.raises(TypeError, match="cannot join a Stream with dict"):
        s.join({}, lambda a, b: a)
    with pytest.raises(ValueError, match="how must be one of"):
        s.join(t.table("users"), lambda a, b: a, how="outer")
    other = Topology("other").table("users")
    with pytest.raises(ValueError, match="own topology"):
        s.join(other, lambda a, b: a)


# -- global tables ---------------------------------------------------------------------------------
def test_global_join_looks_up_the_foreign_key_and_follows_updates_and_tombstones() -> None:
    with TopologyTestDriver(global_join("inner")) as d:
        d.pipe("products", "p1", {"price": "1.00"})
        d.pipe("products", "p2", {"price": "2.00"})
        d.pipe("orders", "u1", {"n": 1, "pid": "p2", "ts": 1})
        d.pipe("products", "p2", {"price": "2.50"})     # no retroactive result
        d.pipe("orders", "u9", {"n": 2, "pid": "p2", "ts": 2})
        d.pipe("orders", "u1", {"n": 3, "pid": "nope", "ts": 3})
        d.pipe("products", "p1", None)
        d.pipe("orders", "u1", {"n": 4, "pid": "p1", "ts": 4})
        assert out(d) == [("u1", {"o": 1, "price": "2.00"}), ("u9", {"o": 2, "price": "2.50"})]
        assert d.table("products") == {"p2": {"price": "2.50"}}


def test_global_left_join_gets_none_for_unknown_and_deleted_keys() -> None:
    with TopologyTestDriver(global_join("left")) as d:
        d.pipe("products", "p1", {"price": "1.00"})
        d.pipe("orders", "u1", {"n": 1, "pid": "nope", "ts": 1})
        d.pipe("products", "p1", None)
        d.pipe("orders", "u1", {"n": 2, "pid": "p1", "ts": 2})
        assert out(d) == [("u1", {"o": 1, "price": None}), ("u1", {"o": 2, "price": None})]


def test_global_join_key_selector_gets_key_and_value_and_may_return_non_str_keys() -> None:
    t = Topology("gk")
    products = t.global_table("products")
    (t.stream("orders", timestamp="ts")
        .join(products, lambda k, o: (k, o["n"]), lambda o, p: p).to("out"))
    with TopologyTestDriver(t) as d:
        d.pipe("products", '["u1",7]', {"hit": True})   # tuple keys are written as JSON
        d.pipe("orders", "u1", {"n": 7, "ts": 1})
        d.pipe("orders", "u2", {"n": 7, "ts": 1})
        assert out(d) == [("u1", {"hit": True})]


def test_global_join_drops_null_foreign_keys_and_null_values(dropped: Counter) -> None:
    with TopologyTestDriver(global_join("left", selector=lambda k, o: o.get("pid"))) as d:
        d.pipe("orders", "u1", {"n": 1, "ts": 1})              # no pid
        d.pipe_raw("orders", b"u1", None, 2)
        d.pipe_raw("orders", None, b'{"n": 3, "pid": "p", "ts": 3}', 3)  # null key: fine here
        assert out(d) == [(None, {"o": 3, "price": None})]
    assert dropped == {("j", "null-foreign-key"): 1, ("j", "null-value"): 1}


def test_global_join_key_selector_failures_are_dead_letters() -> None:
    with TopologyTestDriver(global_join("left", selector=lambda k, o: o["missing"])) as d:
        d.pipe("orders", "u1", {"n": 1, "ts": 1})
        assert [dl.reason for dl in d.read_dead_letters()] == ["processing"]
    with TopologyTestDriver(global_join("left", selector=lambda k, o: o)) as d:
        d.pipe("orders", "u1", {"n": 1, "ts": 1})
        [dl] = d.read_dead_letters()
        assert dl.reason == "shape" and "key_selector" in dl.error
    with TopologyTestDriver(global_join("left", joiner=lambda o, p: 1 / 0)) as d:
        d.pipe("orders", "u1", {"n": 1, "pid": "p1", "ts": 1})
        [dl] = d.read_dead_letters()
        assert dl.reason == "processing" and "ZeroDivisionError" in dl.error


def test_bad_global_records_are_skipped_and_keep_the_previous_row(caplog: Any) -> None:
    with TopologyTestDriver(global_join("inner")) as d:
        d.pipe("products", "p1", {"price": "1.00"})
        d.pipe_raw("products", b"p1", b"not json")
        d.pipe_raw("products", b"p1", b"[1, 2]")           # not an object
        d.pipe_raw("products", None, b'{"price": "9.99"}')
        d.pipe("orders", "u1", {"n": 1, "pid": "p1", "ts": 1})
        assert out(d) == [("u1", {"o": 1, "price": "1.00"})]
        assert d.read_dead_letters() == []
        assert d._globals is not None and d._globals.dropped == {
            ("products", "decode"): 2, ("products", "null-key"): 1}
    assert "skipped 1 records" in caplog.text


def test_global_tables_survive_restarts_and_lost_state(tmp_path: Path) -> None:
    d = TopologyTestDriver(global_join("inner"), state_dir=tmp_path)
    try:
        d.pipe("products", "p1", {"price": "1.00"})
        d.restart(commit=False)
        d.pipe("products", "p2", {"price": "2.00"})
        d.restart(lose_state=True)                         # reloaded from the topic
        d.pipe("orders", "u1", {"n": 1, "pid": "p1", "ts": 1})
        d.pipe("orders", "u1", {"n": 2, "pid": "p2", "ts": 2})
        assert out(d) == [("u1", {"o": 1, "price": "1.00"}), ("u1", {"o": 2, "price": "2.00"})]
    finally:
        d.close()


def test_global_table_declarations_are_checked() -> None:
    t = Topology("g")
    t.global_table("products")
    with pytest.raises(ValueError, match="global table"):
        t.stream("products")
    with pytest.raises(ValueError, match="global table"):
        t.table("products", name="p2")
    with pytest.raises(ValueError, match="declared twice"):
        t.global_table("other", name="products")
    t.stream("orders")
    with pytest.raises(ValueError, match="already read"):
        t.global_table("orders")
    assert t.input_topics() == ["orders", "products"]
    assert "table products (global), topic products" in t.describe()


# -- property: both joins against a replayed dict --------------------------------------------------
KEYS = ["a", "b", "c"]
update = st.tuples(st.just("update"), st.sampled_from(KEYS),
                   st.one_of(st.none(), st.integers(0, 99)))
record = st.tuples(st.just("record"), st.sampled_from(KEYS), st.one_of(st.none(),
                                                                        st.sampled_from(KEYS)))
control = st.sampled_from([("commit",), ("restart",), ("crash-new-host",)])
ops = st.lists(st.one_of(st.lists(update, min_size=1, max_size=4),
                         st.lists(record, min_size=1, max_size=4), control), max_size=25)


def oracle(kind: str, how: str, steps: list[Any]) -> list[tuple[str, Any]]:
    rows: dict[str, int] = {}
    expected = []
    n = 0
    for step in steps:
        if not isinstance(step, list):
            continue
        for op, key, value in step:
            if op == "update":
                if value is None:
                    rows.pop(key, None)
                else:
                    rows[key] = value
                continue
            n += 1
            # table: the record's value None is a null value; global: a null foreign key;
            # both are dropped
            if value is None:
                continue
            lookup = key if kind == "table" else value
            row = rows.get(lookup)
            if row is not None or how == "left":
                expected.append((key, [n, row]))
    return expected


@FAST
@given(steps=ops, kind=st.sampled_from(["table", "global"]), how=st.sampled_from(["inner", "left"]))
def test_joins_match_a_replayed_dict(tmp_path: Path, steps: list[Any], kind: str,
                                     how: str) -> None:
    """Batches of table updates (tombstones included) and stream records in any interleaving,
    with commits, clean restarts and restarts on a new host in between: every stream record sees
    exactly the rows written before it, and table updates emit nothing."""
    t = Topology("prop")
    joiner = lambda v, row: [v["n"], row and row["x"]]  # noqa: E731
    stream = t.stream("s")
    if kind == "table":
        stream.join(t.table("rows"), joiner, how=how).to("out")
        # a stream "record" op's value None means a null stream value
        def encode(key: str, value: Any, n: int) -> Any:
            return None if value is None else {"n": n}
    else:
        stream.join(t.global_table("rows"), lambda k, v: v["fk"], joiner, how=how).to("out")

        def encode(key: str, value: Any, n: int) -> Any:
            return {"n": n, "fk": value}
    state = tmp_path / uuid.uuid4().hex
    d = TopologyTestDriver(t, state_dir=state, commit_every=3)
    try:
        n = 0
        for step in steps:
            if step == ("commit",):
                d.commit()
            elif step == ("restart",):
                d.restart()
            elif step == ("crash-new-host",):
                d.restart(lose_state=True)
            elif step[0][0] == "update":
                d.pipe_batch("rows", [(k, None if v is None else {"x": v}, 0) for _, k, v in step])
            else:
                batch = []
                for _, key, value in step:
                    n += 1
                    batch.append((key, encode(key, value, n), 0))
                d.pipe_batch("s", batch)
        got = [(k, v) for k, v in d.read_output("out")]
    finally:
        d.close()
    assert got == oracle(kind, how, steps)


def test_doctests() -> None:
    import doctest

    import streams.dsl.table_joins

    result = doctest.testmod(streams.dsl.table_joins, verbose=False)
    assert result.attempted > 0 and result.failed == 0
