"""The payments topology under failure: generated input, worker set-up and the exactly-once
invariants, checked from what a read_committed consumer sees."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from streams import registry
from streams.devtools import generate

from tests.conftest import create_topology_topics, delete_topology_topics, read_topic

NAME = "payments"
RESULTS, BALANCES, DLQ = "payment-results", "account-balances", "payments-dlq"


def fresh_topics(kafka: str) -> Any:
    topology = registry.load(NAME)
    delete_topology_topics(kafka, topology)
    create_topology_topics(kafka, topology, partitions=4)
    return topology


def worker_config(tmp_path: Path, **settings: Any) -> list[str]:
    """``--config`` args: a short session timeout so a killed worker's partitions move soon."""
    values = {"session_timeout_ms": 6000, "commit_interval_ms": 500, **settings}
    path = tmp_path / "payments-test.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    return ["--config", str(path)]


def feed(kafka: str, events: list[Any], rate: float | None) -> threading.Thread:
    """Produce ``events`` at ``rate`` per second from a thread (input still arriving)."""
    thread = threading.Thread(target=lambda: asyncio.run(generate.produce(kafka, events, rate)),
                              name="feeder", daemon=True)
    thread.start()
    return thread


def well_formed(events: list[Any]) -> dict[str, dict[str, Any]]:
    """payment_id -> the payment (first send) of every payment that must get one result."""
    out: dict[str, dict[str, Any]] = {}
    for topic, _key, value in events:
        if topic == "payments" and isinstance(value, dict) and isinstance(
                value.get("payment_id"), str):
            out.setdefault(value["payment_id"], value)
    return out


def garbage(events: list[Any]) -> Counter:
    return Counter(v for t, _k, v in events if t == "payments" and isinstance(v, bytes))


def deposits(events: list[Any]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = defaultdict(Decimal)
    for topic, _key, value in events:
        if topic == "deposits":
            out[value["account"]] += Decimal(value["amount"])
    return dict(out)


def read_results(kafka: str, expect: int, timeout: float) -> list[Any]:
    return read_topic(kafka, RESULTS, expect=expect, timeout=timeout)


def check_invariants(kafka: str, events: list[Any], results_timeout: float = 120) -> None:
    """Exactly-once invariants of payments, from read_committed reads of its outputs."""
    payments = well_formed(events)
    results = read_results(kafka, len(payments), results_timeout)
    ids = Counter(r.key.decode() for r in results)
    missing = set(payments) - set(ids)
    assert not missing, f"{len(missing)} payments without a result, e.g. {sorted(missing)[:5]}"
    dup = {k: n for k, n in ids.items() if n > 1}
    assert not dup, f"{len(dup)} payment_ids with more than one result, e.g. {list(dup)[:5]}"
    assert set(ids) == set(payments), set(ids) - set(payments)
    # The balance oracle: deposits - completed debits + completed credits, from the results.
    expected = dict(deposits(events))
    for r in results:
        value = json.loads(r.value)
        assert value["payment_id"] == r.key.decode()
        if value["status"] == "COMPLETED":
            p = payments[value["payment_id"]]
            amount = Decimal(p["amount"])
            expected[p["from_account"]] = expected.get(p["from_account"], Decimal(0)) - amount
            expected[p["to_account"]] = expected.get(p["to_account"], Decimal(0)) + amount
    balances = read_topic(kafka, BALANCES, timeout=60, idle=3)
    latest: dict[str, Decimal] = {}
    for r in balances:
        value = json.loads(r.value)
        balance = Decimal(value["balance"])
        assert balance >= 0, f"negative balance record {value}"
        latest[r.key.decode()] = balance
    wrong = {a: (latest.get(a), b) for a, b in expected.items() if latest.get(a) != b}
    assert not wrong, (f"{len(wrong)} balances differ from the oracle, "
                       f"e.g. {list(wrong.items())[:5]}")
    assert sum(latest.values()) == sum(deposits(events).values())
    dlq = read_topic(kafka, DLQ, timeout=60, idle=3)
    assert Counter(r.value for r in dlq) == garbage(events)
    for r in dlq:
        assert any(k == "error" and v for k, v in r.headers), r.headers
