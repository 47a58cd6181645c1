"""streams_consumer_lag is 0 for every assigned partition once the input is processed: under
exactly-once too (transaction markers at the end of a partition are not lag), for partitions
that got no new input, and after a restart."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streams import registry
from streams.devtools import generate

from tests.integration.payments_support import check_invariants, feed, fresh_topics, worker_config

pytestmark = pytest.mark.broker

NAME = "payments"


def lags(worker: Any) -> dict[tuple[str, str], float]:
    """(topic, partition) -> streams_consumer_lag, scraped from the worker's /metrics."""
    url = re.search(r"metrics on (http://\S+)", worker.log())
    assert url, worker.log()[-2000:]
    text = urllib.request.urlopen(url.group(1), timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("streams_consumer_lag{"):
            topic = re.search(r'topic="([^"]+)"', line).group(1)
            partition = re.search(r'partition="([^"]+)"', line).group(1)
            out[(topic, partition)] = float(line.rsplit(" ", 1)[1])
    return out


def wait_all_zero(worker: Any, partitions: set[tuple[str, str]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    seen: dict[tuple[str, str], float] = {}
    while time.monotonic() < deadline:
        seen = lags(worker)
        if set(seen) == partitions and not any(seen.values()):
            return
        time.sleep(0.5)
    raise AssertionError(f"lag not 0 on every assigned partition: {sorted(seen.items())}")


def test_lag_is_zero_when_caught_up_under_exactly_once_and_after_restart(
        kafka: str, workers: Any, tmp_path: Path) -> None:
    topology = registry.load(NAME)
    fresh_topics(kafka)
    args = worker_config(tmp_path)
    state = tmp_path / "state"
    inputs = topology.input_topics() + topology.repartition_topics()
    partitions = {(t, str(p)) for t in inputs for p in range(4)}
    events = generate.events(NAME, 1500, seed=21, accounts=40)
    w = workers(NAME, kafka, state, args=args)
    w.wait_assigned()
    feed(kafka, events, rate=None).join(60)
    check_invariants(kafka, events)          # everything processed and committed
    wait_all_zero(w, partitions)             # incl. the markers ending the internal topic
    assert w.terminate() == 0
    w = workers(NAME, kafka, state, args=args)  # restart: no new input on any partition
    w.wait_assigned()
    wait_all_zero(w, partitions)
    assert w.terminate() == 0
