"""``streams generate fraud_alerts``: card transactions with rare spikes."""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal

from streams.devtools import generate

from tests.unit.test_fraud_alerts import oracle


def test_transactions_are_deterministic_well_formed_and_keyed_by_user():
    events = generate.events("fraud_alerts", 20_000, seed=3, start_ms=1_000)
    assert events == generate.events("fraud_alerts", 20_000, seed=3, start_ms=1_000)
    for topic, key, txn in events:
        assert topic == "card-transactions"
        assert key == txn["user_id"]
        assert set(txn) == {"txn_id", "user_id", "amount", "merchant", "ts"}
        assert re.fullmatch(r"\d+\.\d\d", txn["amount"]) and Decimal(txn["amount"]) > 0
    assert len({t["txn_id"] for _, _, t in events}) == len(events)
    users = Counter(k for _, k, _ in events)
    assert 2_500 <= len(users) <= generate.FRAUD_USERS  # a few thousand users


def test_spikes_are_rare_but_trigger_alerts():
    events = generate.events("fraud_alerts", 60_000, seed=4, start_ms=0)
    alerts, _table = oracle(events)
    # ~0.5 % spikes, and only users with 5 earlier transactions can be flagged
    assert 0.0005 * len(events) < len(alerts) < 0.005 * len(events)
