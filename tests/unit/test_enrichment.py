"""The enrichment reference topology through the TopologyTestDriver, against an oracle that
replays the generated input in order with plain dicts: the user as of each transaction's time
(users are versioned by their record timestamps), the product current when it is processed."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from streams.devtools.generate import events, record_timestamps
from streams.testing import TopologyTestDriver
from topologies.enrichment import topology

OUTPUTS = {"PREMIUM": "premium-transactions", "REGULAR": "regular-transactions"}
OTHER, UNENRICHED = "other-transactions", "unenriched-transactions"
ALL_OUTPUTS = [*OUTPUTS.values(), OTHER, UNENRICHED]
Stamped = tuple[str, str, Any, int]  # topic, key, value, record timestamp


def stamped(items: list[tuple[str, str, Any]]) -> list[Stamped]:
    """The items with the record timestamps `streams generate` produces them with."""
    return [(t, k, v, ts) for (t, k, v), ts in zip(items, record_timestamps(items), strict=True)]


def user_as_of(versions: list[tuple[int, Any]], ts: int) -> Any:
    """The version with the largest timestamp <= ts (the later of equal ones), else None."""
    found = None
    for vts, value in versions:
        if vts <= ts:
            if found is None or vts >= found[0]:
                found = (vts, value)
    return None if found is None else found[1]


def oracle(items: list[Stamped]) -> dict[str, list[tuple[str, Any]]]:
    """Where each transaction goes: the user as of the transaction's ts among the user
    versions processed before it, the product current when it comes."""
    users: dict[str, list[tuple[int, Any]]] = {}
    products: dict[str, Any] = {}
    out: dict[str, list[tuple[str, Any]]] = {t: [] for t in ALL_OUTPUTS}
    for topic, key, value, ts in items:
        if topic == "users":
            users.setdefault(key, []).append((ts, value))
        elif topic == "products":
            products[key] = value
        else:
            user = user_as_of(users.get(key, []), value["ts"])
            product = products.get(value["product_id"])
            if user is None or product is None:
                out[UNENRICHED].append((key, value))
                continue
            out[OUTPUTS.get(user["tier"], OTHER)].append((key, {
                "txn_id": value["txn_id"], "user_id": key, "user_name": user["name"],
                "tier": user["tier"], "product_id": value["product_id"],
                "product_name": product["name"], "category": product["category"],
                "amount": value["amount"], "ts": value["ts"]}))
    return out


def test_generated_input_has_reference_data_first_unknowns_and_tier_changes() -> None:
    items = events("enrichment", 1000, seed=3, start_ms=0)
    topics = [t for t, _, _ in items]
    first_txn = topics.index("transactions")
    assert set(topics[:first_txn]) == {"users", "products"}
    assert topics.count("transactions") == 1000
    later_users = [v for t, _, v in items[first_txn:] if t == "users"]
    assert len(later_users) == 12  # three users after each fifth
    known = {k for t, k, _ in items[:first_txn] if t == "users"}
    products = {k for t, k, _ in items[:first_txn] if t == "products"}
    txns = [(k, v) for t, k, v in items if t == "transactions"]
    unknown_users = sum(k not in known for k, _ in txns)
    unknown_products = sum(v["product_id"] not in products for _, v in txns)
    assert 10 <= unknown_users <= 80 and 10 <= unknown_products <= 80
    assert {v["tier"] for t, _, v in items if t == "users"} == {"PREMIUM", "REGULAR", "BASIC"}
    assert all(k == v["user_id"] for k, v in txns)


@pytest.mark.parametrize("commit_every", [1, 7, 1000])
def test_each_transaction_goes_to_its_tier_with_the_user_and_product_of_its_time(
        commit_every: int) -> None:
    items = events("enrichment", 600, seed=11, start_ms=0)
    # product changes in between: a price/name change, a deletion, a product added late
    txn_at = [i for i, (t, _, _) in enumerate(items) if t == "transactions"]
    changes = [("products", "p1", {"product_id": "p1", "name": "renamed", "category": "toys",
                                   "price": "1.00"}),
               ("products", "p2", None),
               ("products", "p-unknown-5", {"product_id": "p-unknown-5", "name": "late",
                                            "category": "books", "price": "2.00"})]
    for pos, change in zip((txn_at[100], txn_at[250], txn_at[400]), changes, strict=True):
        items.insert(pos, change)
    input_ = stamped(items)
    expected = oracle(input_)  # a None product is a tombstone: products.get gives None
    # the generated late transactions include some that happened before their user's change
    late_crossing = [
        v["txn_id"] for i, (t, k, v, _) in enumerate(input_) if t == "transactions" and
        user_as_of([(ts, u) for t2, k2, u, ts in input_[:i] if t2 == "users" and k2 == k],
                   v["ts"]) != next((u for t2, k2, u, _ in reversed(input_[:i])
                                     if t2 == "users" and k2 == k), None)]
    assert late_crossing, "no late transaction crosses a tier change: the input tests nothing"
    with TopologyTestDriver(topology, commit_every=commit_every) as d:
        for topic, key, value, ts in input_:
            d.pipe(topic, key, value, timestamp=ts)
        got = {t: d.read_output(t) for t in ALL_OUTPUTS}
        assert d.read_dead_letters() == []
    assert got == expected
    assert all(got[t] for t in ALL_OUTPUTS), {t: len(v) for t, v in got.items()}


BAD = [
    (b"u1", b"not json", "decode"),
    (b"u1", b"[1, 2]", "decode"),
    (b"u1", json.dumps({"txn_id": "t", "user_id": "u1", "product_id": "p1",
                        "amount": "12.50"}).encode(), "invalid"),  # no ts
    (b"u1", json.dumps({"txn_id": "t", "user_id": "u1", "amount": "12.50", "ts": 1}).encode(),
     "invalid"),
    (b"u1", json.dumps({"txn_id": "t", "user_id": "u1", "product_id": "p1", "amount": "12.5",
                        "ts": 1}).encode(), "invalid"),
    (b"u1", json.dumps({"txn_id": "t", "user_id": "u1", "product_id": "p1", "amount": "NaN",
                        "ts": 1}).encode(), "invalid"),
    (b"u1", json.dumps({"txn_id": "t", "user_id": "u1", "product_id": "p1", "amount": 12.5,
                        "ts": 1}).encode(), "invalid"),
    (b"u2", json.dumps({"txn_id": "t", "user_id": "u1", "product_id": "p1", "amount": "1.00",
                        "ts": 1}).encode(), "invalid"),
    (None, json.dumps({"txn_id": "t", "user_id": "u1", "product_id": "p1", "amount": "1.00",
                       "ts": 1}).encode(), "invalid"),
    (b"u1", json.dumps({"txn_id": 7, "user_id": "u1", "product_id": "p1", "amount": "1.00",
                        "ts": 1}).encode(), "invalid"),
]


def test_bad_transactions_go_to_the_dead_letters_and_the_good_ones_through() -> None:
    with TopologyTestDriver(topology) as d:
        d.pipe("users", "u1", {"user_id": "u1", "name": "Ada", "tier": "PREMIUM"})
        d.pipe("products", "p1", {"product_id": "p1", "name": "lamp", "category": "home",
                                  "price": "9.99"})
        for key, value, _ in BAD:
            d.pipe_raw("transactions", key, value, 1)
        good = {"txn_id": "ok", "user_id": "u1", "product_id": "p1", "amount": "1.00", "ts": 5}
        d.pipe("transactions", "u1", good)
        dls = d.read_dead_letters()
        assert [dl.reason for dl in dls] == [r for _, _, r in BAD]
        assert [dl.source_offset for dl in dls] == list(range(len(BAD)))
        assert [(dl.key, dl.value) for dl in dls] == [(k, v) for k, v, _ in BAD]
        [(key, value)] = d.read_output("premium-transactions")
        assert key == "u1" and value["txn_id"] == "ok" and value["product_name"] == "lamp"
        assert all(d.read_output(t) == [] for t in ALL_OUTPUTS)


def test_a_user_with_a_missing_tier_goes_to_other_transactions() -> None:
    with TopologyTestDriver(topology) as d:
        d.pipe("users", "u1", {"user_id": "u1", "name": "Ada"})
        d.pipe("products", "p1",
               {"product_id": "p1", "name": "x", "category": "y", "price": "1.00"})
        d.pipe("transactions", "u1", {"txn_id": "t", "user_id": "u1", "product_id": "p1",
                                      "amount": "1.00", "ts": 1})
        [(_, v)] = d.read_output(OTHER)
        assert v["tier"] is None and v["user_name"] == "Ada"
        assert Counter(len(d.read_output(t)) for t in ALL_OUTPUTS) == Counter({0: 4})
