"""A worker serves the contract's Prometheus metrics, with real values."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

from streams.devtools import generate
from topologies.trip_stats import topology as trip_stats

from tests.conftest import create_topology_topics, delete_topology_topics, produce
from tests.integration.tables_support import wait_drained

pytestmark = pytest.mark.broker

CONTRACT = ["streams_events_consumed_total", "streams_events_produced_total",
            "streams_consumer_lag", "streams_processing_seconds",
            "streams_end_to_end_latency_seconds", "streams_commits_total",
            "streams_commit_seconds", "streams_transactions_total", "streams_table_keys",
            "streams_late_events_total", "streams_dead_letters_total", "streams_rebalances_total",
            "streams_recovery_records_remaining"]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def _value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_worker_serves_contract_metrics(kafka: str, workers) -> None:
    delete_topology_topics(kafka, trip_stats)
    create_topology_topics(kafka, trip_stats, partitions=4)
    events = generate.events("trip_stats", 3_000, seed=5)
    produce(kafka, events + [("rides", "berlin", b"not json")])
    w = workers("trip_stats", kafka)
    w.wait_assigned()
    wait_drained(kafka, "trip_stats", ["rides", *trip_stats.repartition_topics()])
    port = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", w.log()).group(1))
    # Gauges are set at commits: scrape until the drained state shows (or the deadline).
    deadline = time.monotonic() + 60
    while True:
        text = _scrape(port)
        settled = (_value(text, "streams_table_keys", table="driver-totals") > 0 and
                   _value(text, "streams_consumer_lag", topology="trip_stats", topic="rides") == 0)
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    declared = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    for name in CONTRACT:
        base = name.removesuffix("_total")
        assert base in declared or name in declared, f"{name} not exported"
    assert _value(text, "streams_events_consumed_total", topology="trip_stats", topic="rides") \
        == len(events) + 1
    assert _value(text, "streams_events_produced_total", topology="trip_stats",
                  topic="driver-totals") == len(events)
    assert _value(text, "streams_dead_letters_total", topology="trip_stats", reason="decode") == 1
    # RocksDB's key estimate (it counts overwrites still in the memtable): set after a
    # commit, and never more than the table's writes (one per ride).
    keys = _value(text, "streams_table_keys", table="driver-totals")
    assert 0 < keys <= len(events)
    assert _value(text, "streams_commits_total", topology="trip_stats") >= 1
    assert _value(text, "streams_rebalances_total", topology="trip_stats") >= 1
    assert _value(text, "streams_consumer_lag", topology="trip_stats", topic="rides") == 0
    assert w.terminate() == 0
