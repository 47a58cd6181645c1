"""Stream-stream join under kill -9 with two workers: order_shipments over 4 partitions, input
produced in event-time order while it flows, one worker killed (-9) and started again twice.

Pairs and unshipped orders are compared EXACTLY with a brute-force oracle computed from the
generated events (at-least-once: exact repeats of a result are allowed, a missing or an extra
one is not). A lost pair shows up twice: missing from `order-shipments` and its order wrongly
in `unshipped-orders`. The catch-up after each kill is where pairs were lost: the survivor
fetched the two inputs of a task at different moments, took an input whose last (older) fetch
said "caught up" for empty, and ran the other input hours of event time ahead of it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

import pytest

from topologies.order_shipments import topology as order_shipments

from tests.conftest import committed_offsets, create_topology_topics, delete_topology_topics
from tests.integration.tables_support import wait_drained
from tests.integration.test_joins_broker import (PARTITIONS, _check, _close_all_windows,
                                                 _events)

pytestmark = pytest.mark.broker


def _chaos_config(tmp_path: Path) -> list[str]:
    """Small polls (200 records): after a kill the survivor catches up on a backlog of both
    inputs in many polls, so one input's records reach the task fetches ahead of the
    other's. Default ordering (max_task_idle_ms = 0): a task waits only for records the
    broker is known to hold."""
    path = tmp_path / "joins-chaos.toml"
    path.write_text("commit_interval_ms = 300\ncommit_every_records = 2000\n"
                    "session_timeout_ms = 6000\nmax_batch_records = 200\n"
                    # the generated event time runs weeks past the wall clock
                    "max_future_ms = -1\n")
    return ["--config", str(path)]


def _feed(kafka: str, events: list[tuple[str, str, dict[str, Any]]], chunk: int = 10,
          pause: float = 0.01) -> threading.Thread:
    """Produce ``events`` in order from one producer, ``chunk`` at a time (each flushed, then a
    pause): input that keeps flowing. A chunk spans ~25 min of event time, less than the join's
    1 h grace, so a task that sees a chunk's orders before its shipments reach the broker never
    runs ahead far enough to make them late: any loss comes from the kills."""
    from streams.serdes import json_dumps

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=2)
        await producer.start()
        try:
            for i in range(0, len(events), chunk):
                for topic, key, value in events[i:i + chunk]:
                    await producer.send(topic, json_dumps(value), key=key.encode())
                await producer.flush()
                await asyncio.sleep(pause)
        finally:
            await producer.stop()

    thread = threading.Thread(target=lambda: asyncio.run(run()), name="feeder", daemon=True)
    thread.start()
    return thread


def _wait_committed(kafka: str, minimum: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(committed_offsets(kafka, "order_shipments", ["orders"]).values()) >= minimum:
            return
        time.sleep(0.2)
    raise AssertionError(f"the group committed fewer than {minimum} orders in {timeout}s")


def test_two_workers_with_two_kills_give_every_pair_exactly(kafka: str, workers,
                                                           tmp_path: Path) -> None:
    delete_topology_topics(kafka, order_shipments)
    create_topology_topics(kafka, order_shipments, partitions=PARTITIONS)
    events = _events(6000, seed=23)
    config = _chaos_config(tmp_path)
    state = [tmp_path / "state-a", tmp_path / "state-b"]
    a = workers("order_shipments", kafka, state_dir=state[0], args=config)
    b = workers("order_shipments", kafka, state_dir=state[1], args=config)
    a.wait_assigned()
    b.wait_assigned()
    feeder = _feed(kafka, events)
    _wait_committed(kafka, 500)                            # the workers are processing
    # Each kill leaves the victim down until the survivor has taken over its tasks (restoring
    # them from the changelogs into its own state), then starts it again on its old state,
    # which the group hands its tasks back to (restoring what it missed).
    for victim in (0, 1):
        assert feeder.is_alive(), "the input ended before the kill: make it longer"
        (a if victim == 0 else b).kill()                   # kill -9 while input flows
        time.sleep(9.0)                                    # > session timeout: tasks move
        restarted = workers("order_shipments", kafka, state_dir=state[victim], args=config)
        if victim == 0:
            a = restarted
        else:
            b = restarted
        restarted.wait_assigned()
        time.sleep(3.0)
    feeder.join(120)
    _close_all_windows(kafka, events)
    wait_drained(kafka, "order_shipments", ["orders", "shipments"], timeout=120)
    stats = _check(kafka, events, allow_duplicates=True)
    assert a.terminate() == 0 and b.terminate() == 0
    print("order_shipments, two workers, two kills:", stats)
