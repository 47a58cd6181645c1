"""fraud_alerts (a Faust-style agent) against an oracle, through the TopologyTestDriver."""

from __future__ import annotations

import json
import random
from collections import deque
from decimal import ROUND_HALF_EVEN, Decimal

import pytest

from streams.devtools import generate
from streams.testing import TopologyTestDriver
from topologies.fraud_alerts import topology


def oracle(events: list[tuple[str, str, dict]]) -> tuple[list[tuple[str, dict]], dict]:
    """The contract, restated: last 20 amounts per user; alert when amount > 5 x mean of at
    least 5 previous amounts; mean rounded half-even to cents."""
    recent: dict[str, deque[Decimal]] = {}
    alerts = []
    for _topic, user, txn in events:
        amounts = recent.setdefault(user, deque(maxlen=20))
        amount = Decimal(txn["amount"])
        if len(amounts) >= 5:
            mean = sum(amounts) / len(amounts)
            if amount > 5 * mean:
                alerts.append((user, {"txn_id": txn["txn_id"], "user_id": txn["user_id"],
                                      "amount": txn["amount"],
                                      "mean": str(mean.quantize(Decimal("0.01"), ROUND_HALF_EVEN)),
                                      "ts": txn["ts"]}))
        amounts.append(amount)
    table = {u: [str(a) for a in amounts] for u, amounts in recent.items()}
    return alerts, table


def _normalized(table: dict) -> dict:
    return {u: [str(Decimal(a)) for a in amounts] for u, amounts in table.items()}


@pytest.mark.parametrize("seed", [1, 2])
def test_alerts_and_table_match_the_oracle_with_batches_and_crashes(tmp_path, seed):
    events = generate.events("fraud_alerts", 6000, seed=seed, start_ms=0)
    # few users so that histories fill up and spikes are judged
    rng = random.Random(seed)
    users = [f"user{i}" for i in range(40)]
    events = [(t, u, {**v, "user_id": u}) for (t, _, v), u in
              zip(events, (rng.choice(users) for _ in events), strict=True)]
    expected_alerts, expected_table = oracle(events)
    assert len(expected_alerts) > 5  # the generator's spikes do trigger alerts
    alerts = []
    with TopologyTestDriver(topology, state_dir=tmp_path, commit_every=500) as driver:
        for start in range(0, len(events), 250):
            driver.pipe_batch("card-transactions",
                              [(u, v, None) for _, u, v in events[start:start + 250]])
            alerts += driver.read_output("fraud-alerts")
            if rng.random() < 0.3:
                driver.restart(commit=False, lose_state=rng.random() < 0.5)
                driver.replay()
        alerts += driver.read_output("fraud-alerts")
        assert _normalized(driver.table("recent-amounts")) == expected_table
    # outputs may repeat after a crash, never differ: exact duplicates only
    assert list(dict.fromkeys(json.dumps(a, sort_keys=True) for a in alerts)) == \
        [json.dumps(a, sort_keys=True) for a in expected_alerts]


def test_boundaries_exactly_five_times_the_mean_is_not_an_alert_and_four_amounts_are_too_few():
    with TopologyTestDriver(topology) as driver:
        txn = lambda i, amount: {"txn_id": f"t{i}", "user_id": "u", "amount": amount,  # noqa: E731
                                 "merchant": "m", "ts": i}
        for i in range(4):
            driver.pipe("card-transactions", "u", txn(i, "1.00"))
        driver.pipe("card-transactions", "u", txn(4, "100.00"))  # only 4 previous amounts
        assert driver.read_output("fraud-alerts") == []
        # previous: 1,1,1,1,100 -> mean 20.80; 5 x mean = 104.00
        driver.pipe("card-transactions", "u", txn(5, "104.00"))
        assert driver.read_output("fraud-alerts") == []
        # previous: 1,1,1,1,100,104 -> mean 34.666.. -> "34.67"; 5 x mean = 173.33..
        driver.pipe("card-transactions", "u", txn(6, "173.34"))
        assert driver.read_output("fraud-alerts") == [
            ("u", {"txn_id": "t6", "user_id": "u", "amount": "173.34", "mean": "34.67",
                   "ts": 6})]


def test_mean_rounds_half_even():
    with TopologyTestDriver(topology) as driver:
        amounts = ["0.01", "0.01", "0.01", "0.01", "0.01", "0.01", "0.02", "0.02"]  # mean 0.0125
        for i, a in enumerate(amounts):
            driver.pipe("card-transactions", "u", {"txn_id": f"t{i}", "user_id": "u",
                                                    "amount": a, "merchant": "m", "ts": i})
        driver.pipe("card-transactions", "u", {"txn_id": "x", "user_id": "u", "amount": "1.00",
                                                "merchant": "m", "ts": 9})
        [(_, alert)] = driver.read_output("fraud-alerts")
        assert alert["mean"] == "0.01"  # 0.0125 -> 0.01 (half-even), not 0.02


def test_bad_transactions_go_to_the_dead_letters_and_change_nothing():
    good = {"txn_id": "t", "user_id": "u", "amount": "1.00", "merchant": "m", "ts": 1}
    bad = [
        ("u", b"not json"),
        ("u", b"[1, 2]"),
        ("u", json.dumps({**good, "amount": "abc"}).encode()),
        ("u", b'{"txn_id": "t", "user_id": "u", "amount": NaN, "merchant": "m", "ts": 1}'),
        ("u", json.dumps({**good, "amount": "Infinity"}).encode()),
        ("u", json.dumps({k: v for k, v in good.items() if k != "merchant"}).encode()),
        ("u", json.dumps({**good, "amount": None}).encode()),
        ("u", json.dumps({**good, "amount": "9" * 400_000}).encode()),
        ("u", json.dumps({**good, "amount": "-1.00"}).encode()),
        ("u", json.dumps({**good, "amount": "1e15"}).encode()),
        (None, json.dumps(good).encode()),
        ("u", json.dumps({**good, "ts": "yesterday"}).encode()),
    ]
    with TopologyTestDriver(topology) as driver:
        for _ in range(5):
            driver.pipe("card-transactions", "u", good)
        for key, value in bad:
            driver.pipe_raw("card-transactions", None if key is None else key.encode(), value)
        dead = driver.read_dead_letters()
        assert len(dead) == len(bad)
        assert {d.reason for d in dead} == {"decode", "invalid", "timestamp"}
        assert driver.table("recent-amounts") == {"u": ["1.00"] * 5}
        assert driver.read_output("fraud-alerts") == []
        driver.pipe("card-transactions", "u", {**good, "amount": "999999999999999.99"})
        assert [a["mean"] for _, a in driver.read_output("fraud-alerts")] == ["1.00"]
