"""``streams generate payments``: deposits first, then payments with duplicates, invalid ones,
garbage and overdrafts."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from click.testing import CliRunner

from streams.devtools import generate
from streams.cli import main

from tests.unit.test_payments import Ledger


def test_deposits_come_first_for_every_account_then_payments_keyed_by_from_account():
    events = generate.events("payments", 20_000, seed=5, start_ms=1_000, accounts=40)
    assert events == generate.events("payments", 20_000, seed=5, start_ms=1_000, accounts=40)
    topics = [t for t, _, _ in events]
    first_payment = topics.index("payments")
    assert set(topics[:first_payment]) == {"deposits"} and "deposits" not in topics[first_payment:]
    deposits = [(k, v) for t, k, v in events if t == "deposits"]
    assert {k for k, _ in deposits} == {f"acc{i}" for i in range(40)}
    for key, d in deposits:
        assert key == d["account"] and re.fullmatch(r"\d+\.\d\d", d["amount"])
    assert len({d["deposit_id"] for _, d in deposits}) == len(deposits)
    payments = [(k, v) for t, k, v in events if t == "payments"]
    assert len(payments) == 20_000
    for key, p in payments:
        if isinstance(p, dict):
            assert key == p["from_account"]
            assert p["from_account"] in {f"acc{i}" for i in range(40)}


def test_the_mix_has_about_the_promised_shares():
    events = generate.events("payments", 40_000, seed=6, start_ms=0, accounts=50)
    payments = [(k, v) for t, k, v in events if t == "payments"]
    garbage = [v for _, v in payments if isinstance(v, bytes)]
    for g in garbage:
        with pytest.raises(ValueError):
            parsed = json.loads(g.decode("utf-8"))  # a topic's JSON is UTF-8
            if not isinstance(parsed, dict):
                raise ValueError("not an object")
    ids = Counter(v["payment_id"] for _, v in payments if isinstance(v, dict))
    duplicates = sum(n - 1 for n in ids.values())
    ledger = Ledger()
    for t, k, v in events:
        if t == "deposits":
            ledger.deposit(k, v)
    for k, v in payments:  # one by one: each credit lands before the next payment
        ledger.batch([(k, v, 0)])
    outcomes = Counter(r[1] for r in ledger.results.values())
    n = len(payments)
    assert 0.003 * n < len(garbage) < 0.008 * n
    assert 0.006 * n < duplicates < 0.014 * n
    assert 0.006 * n < outcomes["INVALID"] < 0.014 * n
    assert outcomes["INSUFFICIENT_FUNDS"] > 0.02 * n   # overdrafts, and drained accounts
    assert outcomes[None] > 0.5 * n                    # most payments complete


def test_cli_accounts_option_is_checked_in_one_line():
    runner = CliRunner()
    result = runner.invoke(main, ["generate", "payments", "--accounts", "1", "--count", "5",
                                  "--broker", "127.0.0.1:1"])
    assert result.exit_code != 0 and "Invalid value for '--accounts': 1" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(main, ["generate", "trip_stats", "--accounts", "5", "--broker",
                                  "127.0.0.1:1"])
    assert result.exit_code != 0 and "applies to the payments generator" in result.output
