"""A broker outage while workers are busy: both processing guarantees ride it out.

One private broker (crashed and restarted here; the shared one must never stop) and two
topologies at once: payments (exactly-once) and trip_stats (at-least-once), both busy when the
broker is killed: input keeps arriving until just before, so outputs are in flight and
transactions open. The workers' client timeouts are made small (request 5 s, session 6 s,
transaction 10 s, commit 10 s; the consumer's request timeout is the session timeout + 5 s =
11 s) and the outage outlasts every one of them (12 s of sleep plus the broker's restart), so
what an outage of any length produces happens here: expired requests, failed commits and
transactions, an expired group session, leaders not yet elected when the broker is back.
Afterwards nothing is lost or doubled: payments' exactly-once invariants hold; trip_stats'
driver totals equal the oracle. Each worker logs the outage as one WARNING and its end as one
INFO line, and no ERROR.

``STREAMS_TEST_OUTAGE_S`` lengthens the outage (default 12 s: past every timeout above, longer
only adds waiting; a 60 s outage passes too).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from streams.devtools import generate
from streams.devtools import broker
from topologies.trip_stats import topology as trip_stats

from tests.conftest import create_topology_topics, delete_topology_topics, produce, read_topic
from tests.integration.payments_support import check_invariants, feed, fresh_topics
from tests.integration.tables_support import driver_totals_oracle, latest_by_key, wait_drained

pytestmark = pytest.mark.broker

PRIVATE_PORT = 19592  # (and its controller on +1)
OUTAGE_S = float(os.environ.get("STREAMS_TEST_OUTAGE_S", "12"))
TIMEOUTS = {"session_timeout_ms": 6000, "request_timeout_ms": 5000, "commit_interval_ms": 500}


def config(tmp_path: Path, name: str, **extra: Any) -> list[str]:
    path = tmp_path / f"{name}.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in {**TIMEOUTS, **extra}.items()))
    return ["--config", str(path)]


def log_lines(worker: Any, pattern: str) -> list[str]:
    return [line for line in worker.log().splitlines() if re.search(pattern, line)]


def test_busy_workers_ride_out_a_broker_outage(workers: Any, tmp_path: Path) -> None:
    if broker.port_open(PRIVATE_PORT) or broker.port_open(PRIVATE_PORT + 1):
        pytest.skip(f"port {PRIVATE_PORT} is taken")  # (connections in TIME_WAIT are fine)
    kafka = broker.start(PRIVATE_PORT, verbose=False)
    try:
        fresh_topics(kafka)
        delete_topology_topics(kafka, trip_stats)
        create_topology_topics(kafka, trip_stats, partitions=4)
        payments = generate.events("payments", 5000, seed=31, accounts=100)
        rides = generate.events("trip_stats", 16000, seed=32)
        pay = workers("payments", kafka, tmp_path / "state-p",
                      args=config(tmp_path, "payments", transaction_timeout_ms=10000))
        trips = workers("trip_stats", kafka, tmp_path / "state-t", args=config(tmp_path, "trips"))
        pay.wait_assigned()
        trips.wait_assigned()
        produce(kafka, rides[:6000])  # a backlog for trip_stats
        feed(kafka, payments[:1000], rate=None).join(60)
        sent = {"payments": 1000, "rides": 6000}
        deadline = time.monotonic() + 60
        while not (read_topic(kafka, "payment-results", expect=1, timeout=5)
                   and read_topic(kafka, "driver-totals", expect=1, timeout=5)):
            assert time.monotonic() < deadline, "no outputs before the outage"
        stop_feeding = threading.Event()

        def feeder() -> None:  # input keeps arriving until just before the crash
            while not stop_feeding.is_set():
                for events, name in ((payments, "payments"), (rides, "rides")):
                    chunk = events[sent[name]:sent[name] + 100]
                    produce(kafka, chunk)
                    sent[name] += len(chunk)
                time.sleep(0.1)

        feeding = threading.Thread(target=feeder, daemon=True)
        feeding.start()
        time.sleep(3)
        stop_feeding.set()
        feeding.join(30)
        assert sent["payments"] < len(payments) and sent["rides"] < len(rides), sent
        # Crash the broker right after the last input: both workers are mid-interval, with
        # outputs in flight and (payments) transactions open.
        t0 = time.monotonic()
        broker.kill(PRIVATE_PORT)
        time.sleep(OUTAGE_S)
        broker.start(PRIVATE_PORT, verbose=False)
        print(f"outage: down {time.monotonic() - t0:.1f} s; fed before it {sent}")
        feed(kafka, payments[sent["payments"]:], rate=None).join(60)
        produce(kafka, rides[sent["rides"]:])

        check_invariants(kafka, payments, results_timeout=180)
        print(f"payments checked {time.monotonic() - t0:.1f} s after the stop")
        wait_drained(kafka, "trip_stats", ["rides", *trip_stats.repartition_topics()])
        totals = latest_by_key(read_topic(kafka, "driver-totals", idle=3.0))
        oracle = driver_totals_oracle(rides)
        wrong = {k: (totals.get(k), v) for k, v in oracle.items() if totals.get(k) != v}
        assert not wrong, f"{len(wrong)} driver totals differ, e.g. {list(wrong.items())[:3]}"

        print(f"trip_stats checked {time.monotonic() - t0:.1f} s after the stop")
        for w in (pay, trips):
            assert w.running, w.log()[-4000:]
            assert len(log_lines(w, r" WARNING .*broker unreachable")) == 1, w.log()[-4000:]
            assert len(log_lines(w, r" INFO .*broker reachable again")) == 1, w.log()[-4000:]
            assert not log_lines(w, r" (ERROR|CRITICAL) "), log_lines(w, r" (ERROR|CRITICAL) ")
            assert w.terminate() == 0
    finally:
        broker.stop(PRIVATE_PORT)
        broker.wipe(PRIVATE_PORT)
