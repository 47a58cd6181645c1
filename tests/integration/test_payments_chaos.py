"""payments under exactly-once, against the real broker with ``streams worker`` subprocesses:
workers killed with SIGKILL while input arrives (once during a takeover), a zombie worker
(SIGSTOP past its session timeout, then SIGCONT), and a duplicate payment after a restart.
Every check reads the outputs read_committed (see payments_support.check_invariants)."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streams.devtools import generate

from tests.conftest import ROOT, produce, read_topic
from tests.integration.payments_support import (RESULTS, check_invariants, feed, fresh_topics,
                                                worker_config)

pytestmark = pytest.mark.broker

NAME = "payments"


def test_workers_killed_mid_stream_keep_exactly_once(kafka: str, workers: Any,
                                                     tmp_path: Path) -> None:
    events = generate.events(NAME, 20000, seed=7, accounts=200)
    fresh_topics(kafka)
    args = worker_config(tmp_path)
    rng = random.Random(11)
    state = {w: tmp_path / f"state-{w}" for w in "ab"}
    running = {w: workers(NAME, kafka, state[w], args=args) for w in "ab"}
    for w in running.values():
        w.wait_assigned()
    feeder = feed(kafka, events, rate=250)  # ~85 s of input
    kills = 0

    def kill_and_restart(w: str) -> None:
        nonlocal kills
        running[w].kill()
        kills += 1
        running[w] = workers(NAME, kafka, state[w], args=args)

    time.sleep(rng.uniform(8, 15))
    kill_and_restart("a")
    # Again while the group is still moving a's partitions (its old member has not expired).
    time.sleep(rng.uniform(1, 4))
    kill_and_restart("a")
    time.sleep(rng.uniform(15, 25))
    kill_and_restart("b")
    time.sleep(rng.uniform(8, 15))
    assert feeder.is_alive(), "input stopped arriving before the last kill: feed slower"
    kill_and_restart("a")
    feeder.join(180)
    assert kills >= 4
    check_invariants(kafka, events, results_timeout=150)
    for w in running.values():
        assert w.running, w.log()[-3000:]
        assert w.terminate() == 0


def transactions(worker: Any, result: str) -> float:
    """streams_transactions_total{result} scraped from the worker's metrics endpoint."""
    url = re.search(r"metrics on (http://\S+)", worker.log())
    assert url, worker.log()[-2000:]
    text = urllib.request.urlopen(url.group(1), timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("streams_transactions_total{") and f'result="{result}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_zombie_worker_is_fenced(kafka: str, workers: Any, tmp_path: Path) -> None:
    events = generate.events(NAME, 6000, seed=8, accounts=100)
    fresh_topics(kafka)
    args = worker_config(tmp_path)
    zombie = workers(NAME, kafka, tmp_path / "state-z", args=args)
    zombie.wait_assigned()
    other = workers(NAME, kafka, tmp_path / "state-o", args=args)
    other.wait_assigned()
    feeder = feed(kafka, events, rate=150)  # ~40 s
    time.sleep(6)
    zombie.proc.send_signal(signal.SIGSTOP)  # past the session timeout: `other` takes over
    time.sleep(14)
    zombie.proc.send_signal(signal.SIGCONT)
    feeder.join(120)
    check_invariants(kafka, events)
    log = zombie.log()
    # A zombie that wakes inside its transaction is fenced at its next send or commit; one
    # that wakes between two transactions has nothing to commit and only loses its tasks in
    # the rebalance. Either way it wrote nothing twice (the invariants above).
    assert "fenced" in log or "revoked" in log, log[-3000:]
    if "fenced" in log:
        assert transactions(zombie, "fenced") >= 1
    assert transactions(other, "committed") >= 1
    for w in (zombie, other):
        assert w.running, w.log()[-3000:]
        assert w.terminate() == 0


def test_duplicate_after_restart_is_recognised(kafka: str, workers: Any, tmp_path: Path) -> None:
    fresh_topics(kafka)
    args = worker_config(tmp_path)
    state = tmp_path / "state"
    now = int(time.time() * 1000)
    dep = ("deposits", "alice", {"deposit_id": "d1", "account": "alice", "amount": "100.00",
                                  "ts": now})
    pay = ("payments", "alice", {"payment_id": "p1", "from_account": "alice",
                                  "to_account": "bob", "amount": "30.00", "currency": "EUR",
                                  "ts": now + 1})
    later = ("payments", "alice", {"payment_id": "p2", "from_account": "alice",
                                    "to_account": "bob", "amount": "5.00", "currency": "EUR",
                                    "ts": now + 2})
    w = workers(NAME, kafka, state, args=args)
    w.wait_assigned()
    produce(kafka, [dep, pay])
    assert len(read_topic(kafka, RESULTS, expect=1, timeout=60)) == 1
    w.kill()  # no final commit: the restart resumes from the last transaction
    w = workers(NAME, kafka, state, args=args)
    w.wait_assigned()
    produce(kafka, [pay, later])  # p1 again, then p2
    results = read_topic(kafka, RESULTS, expect=2, timeout=60)
    time.sleep(3)
    results = read_topic(kafka, RESULTS, timeout=30)
    assert sorted(r.key.decode() for r in results) == ["p1", "p2"]
    check_invariants(kafka, [dep, pay, pay, later])
    balances = {r.key.decode(): json.loads(r.value)["balance"]
                for r in read_topic(kafka, "account-balances", timeout=30)}
    assert balances == {"alice": "65.00", "bob": "35.00"}
    assert w.terminate() == 0
    listing = subprocess.run(
        [sys.executable, "-m", "streams.cli", "tables", "list", NAME, "--state-dir", str(state),
         "--broker", kafka], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert listing.returncode == 0, listing.stderr
    assert "guarantee=exactly_once" in listing.stdout
    assert "last committed transaction: " in listing.stdout and "payments:" in listing.stdout


PRIVATE_PORT = 19492  # a broker of this test alone: the shared one must never be stopped


def test_broker_stopped_for_10s_mid_stream(workers: Any, tmp_path: Path) -> None:
    from streams.devtools import broker

    kafka = broker.start(PRIVATE_PORT, verbose=False)
    try:
        events = generate.events(NAME, 8000, seed=9, accounts=100)
        fresh_topics(kafka)
        args = worker_config(tmp_path)
        w = workers(NAME, kafka, tmp_path / "state", args=args)
        w.wait_assigned()
        first, rest = events[:len(events) // 2], events[len(events) // 2:]
        feed(kafka, first, rate=None).join(60)
        time.sleep(1)  # the worker is still working through the input
        broker.stop(PRIVATE_PORT)
        time.sleep(10)
        broker.start(PRIVATE_PORT, verbose=False)
        feed(kafka, rest, rate=400).join(60)
        check_invariants(kafka, events, results_timeout=150)
        assert w.running, w.log()[-3000:]
        assert w.terminate() == 0
    finally:
        broker.stop(PRIVATE_PORT)
        broker.wipe(PRIVATE_PORT)
