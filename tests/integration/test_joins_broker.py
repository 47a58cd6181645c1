"""Stream-stream joins against the real broker: the order_shipments reference topology over 4
partitions, (a) with its worker killed (-9) while input arrives and started again, (b) catching
up on a backlog of both inputs produced while no worker ran.

Input: ``streams generate``'s orders and shipments with orders every 5 min of event time, so the
input spans ~19 days while the join's grace is 1 h: a task that took one input's backlog before
the other's would run days ahead and drop the other side's records as late, losing their pairs.
At the end one "closer" order per partition, 8 days after the last event, moves each task's
stream time past every window + grace, so every unshipped order must have come out.

The oracle is computed from the generated events alone: every (order, shipment) with the same
order_id and ``order.ts <= shipment.ts <= order.ts + 7 d`` is a pair; every order without one is
unshipped. At-least-once: after the kill, outputs of the uncommitted interval are written again,
so duplicates are allowed (and counted) — missing or extra results are not.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streams.devtools import generate
from topologies.order_shipments import topology as order_shipments

from tests.conftest import (create_topology_topics, delete_topology_topics, produce,
                            produce_in_background, read_topic)
from tests.integration.tables_support import wait_drained

pytestmark = pytest.mark.broker

DAY = 86_400_000
# Event time starts now: the outputs carry event time, and records older than the broker's
# 7-day time retention could be deleted while the test reads them.
START = int(time.time()) * 1000
PARTITIONS = 4


def _events(count: int, seed: int) -> list[tuple[str, str, dict[str, Any]]]:
    return generate.events("order_shipments", count, seed=seed, start_ms=START,
                           step_ms=5 * 60_000)


def _oracle(events: list[tuple[str, str, dict[str, Any]]]) -> tuple[set, set]:
    orders = [v for t, _k, v in events if t == "orders"]
    shipments: dict[str, list[dict]] = {}
    for t, _k, v in events:
        if t == "shipments":
            shipments.setdefault(v["order_id"], []).append(v)
    pairs, unshipped = set(), set()
    for o in orders:
        matched = [s for s in shipments.get(o["order_id"], [])
                   if o["ts"] <= s["ts"] <= o["ts"] + 7 * DAY]
        pairs.update((o["order_id"], s["shipment_id"]) for s in matched)
        if not matched:
            unshipped.add(o["order_id"])
    return pairs, unshipped


def _close_all_windows(kafka: str, events: list[tuple[str, str, dict[str, Any]]]) -> None:
    last = max(v["ts"] for _t, _k, v in events)
    for p in range(PARTITIONS):
        produce(kafka, [("orders", f"closer-{p}", {"order_id": f"closer-{p}", "customer_id": "c",
                                                   "amount": "1.00", "ts": last + 8 * DAY})],
                partition=p)


def _results(kafka: str) -> tuple[Counter, Counter]:
    pairs = Counter()
    for r in read_topic(kafka, "order-shipments"):
        v = json.loads(r.value)
        pairs[(v["order_id"], v["shipment_id"])] += 1
    unshipped = Counter(json.loads(r.value)["order_id"]
                        for r in read_topic(kafka, "unshipped-orders"))
    return pairs, unshipped


def _config(tmp_path: Path, extra: str = "") -> list[str]:
    path = tmp_path / "joins.toml"
    path.write_text(textwrap.dedent("""
        commit_interval_ms = 300
        commit_every_records = 2000
        session_timeout_ms = 6000
        max_batch_records = 2000
        max_future_ms = -1  # the generated event time runs weeks past the wall clock
    """) + extra)
    return ["--config", str(path)]


def _wait_output(kafka: str, topic: str, minimum: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(read_topic(kafka, topic, idle=0.5)) >= minimum:
            return
        time.sleep(0.5)
    raise AssertionError(f"fewer than {minimum} records in {topic} after {timeout}s")


def _check(kafka: str, events: list, *, allow_duplicates: bool) -> dict[str, int]:
    pairs, unshipped = _oracle(events)
    got_pairs, got_unshipped = _results(kafka)
    assert set(got_pairs) == pairs, (
        f"{len(pairs - set(got_pairs))} pairs missing, {len(set(got_pairs) - pairs)} extra")
    assert set(got_unshipped) == unshipped, (
        f"{len(unshipped - set(got_unshipped))} unshipped missing, "
        f"{len(set(got_unshipped) - unshipped)} extra")
    dups = (sum(got_pairs.values()) - len(got_pairs)
            + sum(got_unshipped.values()) - len(got_unshipped))
    if not allow_duplicates:
        assert dups == 0
    assert not read_topic(kafka, order_shipments.dlq_topic, idle=0.5)
    return {"pairs": len(pairs), "unshipped": len(unshipped), "duplicates": dups}


def test_order_shipments_survive_a_worker_kill_mid_stream(kafka: str, workers,
                                                          tmp_path: Path) -> None:
    delete_topology_topics(kafka, order_shipments)
    create_topology_topics(kafka, order_shipments, partitions=PARTITIONS)
    events = _events(3000, seed=7)
    # The feeder writes ~8 h of event time per chunk, a few ms apart per topic: a task that saw
    # a chunk's orders before its shipments existed on the broker would run hours ahead of
    # them. max_task_idle_ms lets it wait for the other input that long (of wall time).
    config = _config(tmp_path, "max_task_idle_ms = 1000\n")
    first = workers("order_shipments", kafka, args=config)
    first.wait_assigned()
    feeder = produce_in_background(kafka, [(t, k, v) for t, k, v in events], chunk=200,
                                   pause=0.3)
    _wait_output(kafka, "order-shipments", 100)
    assert feeder.is_alive()
    first.kill()                                   # kill -9 while input keeps arriving
    second = workers("order_shipments", kafka, args=config)
    feeder.join(120)
    second.wait_assigned()
    _close_all_windows(kafka, events)
    wait_drained(kafka, "order_shipments", ["orders", "shipments"], timeout=120)
    stats = _check(kafka, events, allow_duplicates=True)
    assert second.terminate() == 0
    print("order_shipments after kill -9:", stats)


def _backlog(kafka: str, workers, tmp_path: Path, extra_config: str = "") -> list:
    """Everything produced before the worker starts (a catch-up): ~3000 records per partition
    and input, more than one poll hands out, so the consumer gives the worker thousands of
    records of one partition before the other's."""
    delete_topology_topics(kafka, order_shipments)
    create_topology_topics(kafka, order_shipments, partitions=PARTITIONS)
    events = _events(12_000, seed=11)
    produce(kafka, [(t, k, v) for t, k, v in events])
    _close_all_windows(kafka, events)
    worker = workers("order_shipments", kafka, args=_config(tmp_path, extra_config))
    worker.wait_assigned()
    wait_drained(kafka, "order_shipments", ["orders", "shipments"], timeout=120)
    assert worker.terminate() == 0
    return events


def test_a_backlog_of_both_inputs_is_joined_in_timestamp_order(kafka: str, workers,
                                                               tmp_path: Path) -> None:
    events = _backlog(kafka, workers, tmp_path)
    stats = _check(kafka, events, allow_duplicates=False)
    print("order_shipments from a backlog:", stats)


def test_without_timestamp_order_the_same_backlog_loses_pairs(kafka: str, workers,
                                                              tmp_path: Path) -> None:
    """The control for the test above: with ``max_task_idle_ms = -1`` (records processed as
    fetched, no waiting for the other input) one input runs days of event time ahead and the
    other's records come too late for the 1 h grace."""
    events = _backlog(kafka, workers, tmp_path, "max_task_idle_ms = -1\n")
    pairs, _unshipped = _oracle(events)
    got_pairs, _ = _results(kafka)
    missing = pairs - set(got_pairs)
    print(f"without ordering: {len(missing)} of {len(pairs)} pairs lost")
    assert missing
