"""Stateful DSL pieces through the TopologyTestDriver: process() with stores, table(topic),
state surviving a driver restart on the same state directory."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings, strategies as st

from streams import Topology
from streams.testing import TopologyTestDriver
from tests.conftest import examples


def _ledger() -> Topology:
    t = Topology("ledger")
    t.store("balances")
    t.store("seen")

    def apply(key, value, stores):
        seen, balances = stores["seen"], stores["balances"]
        if value["id"] in seen:
            return None  # duplicate id: no second effect
        seen.put(value["id"], True)
        balance = balances.get(key, 0) + value["amount"]
        balances.put(key, balance)
        return [(key, {"account": key, "balance": balance})]

    t.stream("moves").process(apply, stores=["balances", "seen"]).to("balances-out")
    return t


@settings(max_examples=examples(40), deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 15), st.integers(-50, 50)),
                max_size=40))
def test_process_reads_and_writes_stores_like_an_oracle(moves) -> None:
    oracle: dict[str, int] = {}
    seen: set[int] = set()
    expected_out = []
    for account, move_id, amount in moves:
        if move_id in seen:
            continue
        seen.add(move_id)
        oracle[account] = oracle.get(account, 0) + amount
        expected_out.append((account, {"account": account, "balance": oracle[account]}))
    with TopologyTestDriver(_ledger()) as driver:
        for account, move_id, amount in moves:
            driver.pipe("moves", account, {"id": move_id, "amount": amount})
        assert driver.read_output("balances-out") == expected_out
        assert driver.table("balances") == oracle


def test_state_survives_a_restart_on_the_same_directory(tmp_path: Path) -> None:
    with TopologyTestDriver(_ledger(), state_dir=tmp_path) as driver:
        driver.pipe("moves", "a", {"id": 1, "amount": 10})
        driver.restart()
        driver.read_output("balances-out")
        driver.pipe("moves", "a", {"id": 1, "amount": 10})   # duplicate id, remembered
        driver.pipe("moves", "a", {"id": 2, "amount": 5})
        assert driver.read_output("balances-out") == [("a", {"account": "a", "balance": 15})]


def test_a_new_driver_on_old_state_wipes_it(tmp_path: Path) -> None:
    """State whose changelog positions are beyond the (new, empty) changelog is from another
    incarnation of the topics (as after `streams tables reset` on another host): wiped."""
    with TopologyTestDriver(_ledger(), state_dir=tmp_path) as driver:
        driver.pipe("moves", "a", {"id": 1, "amount": 10})
    with TopologyTestDriver(_ledger(), state_dir=tmp_path) as driver:
        assert driver.table("balances") == {}
        driver.pipe("moves", "a", {"id": 1, "amount": 10})
        assert driver.read_output("balances-out") == [("a", {"account": "a", "balance": 10})]


def test_table_from_topic_keeps_latest_value_and_null_deletes() -> None:
    t = Topology("users")
    users = t.table("users-in", name="users")
    users.to_stream().map(lambda u: u and u["name"]).to("names")
    with TopologyTestDriver(t) as driver:
        driver.pipe("users-in", "u1", {"name": "Ann"})
        driver.pipe("users-in", "u2", {"name": "Bob"})
        driver.pipe("users-in", "u1", {"name": "Anna"})
        driver.pipe("users-in", "u2", None)
        assert driver.table("users") == {"u1": {"name": "Anna"}}
        assert [v for _, v in driver.read_output("names")] == ["Ann", "Bob", "Anna", None]


def test_undeclared_store_is_a_clear_error() -> None:
    t = Topology("bad")
    try:
        t.stream("x").process(lambda k, v, s: None, stores=["nope"])
    except ValueError as exc:
        assert "undeclared store 'nope'" in str(exc)
    else:
        raise AssertionError("process() with an undeclared store must fail")
