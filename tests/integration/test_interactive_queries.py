"""Interactive queries against real workers: any worker answers any key (it forwards to the
owner), before and after the group rebalances; /health is 503 while the worker restores, 200
once its tasks run; the payments balances and trip_stats windows are readable over HTTP and
through ``streams tables get --worker``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from streams import registry
from streams.serving.routing import key_partition
from streams.state.meta import OFFSETS_HEADER, encode_offsets
from topologies.trip_stats import topology as trip_stats

from tests.conftest import ROOT, create_topology_topics, delete_topology_topics, produce

pytestmark = pytest.mark.broker


def http(port: int, path: str) -> tuple[int, Any]:
    """(status, JSON body) of GET ``path``; (0, error) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0,
             workers: tuple[Any, ...] = ()) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        for w in workers:
            assert w.running, f"worker exited:\n{w.log()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def port_of(worker: Any) -> int:
    found = wait_for("the metrics line", lambda: re.search(
        r"metrics on http://127\.0\.0\.1:(\d+)/metrics", worker.log()), 60, (worker,))
    return int(found.group(1))


def healthy(port: int) -> bool:
    return http(port, "/health")[0] == 200


# -- payments: two workers, a rebalance, any worker answers any key -----------------------------
ACCOUNTS = [f"iq-acc-{i}" for i in range(16)]


def balance_of(i: int) -> str:
    return f"{Decimal(i + 1) + Decimal('0.25'):.2f}"


def all_balances_right(port: int) -> dict[str, str]:
    """account -> the worker that read it, when every account's balance is right via
    ``port`` (else {})."""
    served: dict[str, str] = {}
    for i, account in enumerate(ACCOUNTS):
        status, doc = http(port, f"/tables/balances/keys/{account}")
        if status != 200 or doc["value"] != balance_of(i):
            return {}
        served[account] = doc["served_by"]
    return served


def split(ports: list[int]) -> bool:
    """Both workers hold partitions of balances and know where the others are."""
    owners = [http(p, "/tables/balances") for p in ports]
    return all(status == 200 and len(set(doc["owners"].values())) == 2
               and None not in doc["owners"].values() and doc["running_here"]
               for status, doc in owners)


def test_any_worker_answers_any_key_before_and_after_a_rebalance(kafka: str, workers,
                                                                 tmp_path: Path) -> None:
    started = time.monotonic()
    topology = registry.load("payments")
    delete_topology_topics(kafka, topology)
    create_topology_topics(kafka, topology, partitions=4)
    config = tmp_path / "iq.toml"
    config.write_text("session_timeout_ms = 6000\ncommit_interval_ms = 200\n")
    args = ["--config", str(config)]
    deposits = [("deposits", a, {"deposit_id": f"{a}-{n}", "account": a, "amount": amount,
                                 "ts": 1_700_000_000_000 + i})
                for i, a in enumerate(ACCOUNTS)
                for n, amount in enumerate((f"{i + 1}.00", "0.25"))]
    produce(kafka, deposits)

    a = workers("payments", kafka, state_dir=tmp_path / "a", args=args)
    port_a = port_of(a)
    wait_for("worker a healthy", lambda: healthy(port_a), 90, (a,))
    alone = wait_for("balances via a", lambda: all_balances_right(port_a), 60, (a,))
    assert set(alone.values()) == {f"127.0.0.1:{port_a}"}
    with urllib.request.urlopen(f"http://127.0.0.1:{port_a}/metrics", timeout=15) as resp:
        text = resp.read().decode()
    assert "streams_commits_total{" in text and 'guarantee="exactly_once"' in text
    for path in ("/", "/metricz", "/metrics/x"):  # metrics on /metrics only
        status, doc = http(port_a, path)
        assert status == 404 and doc["reason"] == "no-such-path", (path, doc)

    b = workers("payments", kafka, state_dir=tmp_path / "b", args=args)
    port_b = port_of(b)
    wait_for("the partitions split over a and b", lambda: split([port_a, port_b]), 90, (a, b))
    wait_for("both healthy", lambda: healthy(port_a) and healthy(port_b), 90, (a, b))
    via_a = wait_for("balances via a", lambda: all_balances_right(port_a), 60, (a, b))
    via_b = wait_for("balances via b", lambda: all_balances_right(port_b), 60, (a, b))
    # each key is read by its owner, whichever worker was asked
    assert via_a == via_b and set(via_a.values()) == {f"127.0.0.1:{port_a}",
                                                      f"127.0.0.1:{port_b}"}
    owners = http(port_a, "/tables/balances")[1]["owners"]
    for account, served_by in via_a.items():
        assert served_by == owners[str(key_partition(account.encode(), 4))]
    # the CLI finds a worker through the consumer group
    env = {**os.environ, "STREAMS_BROKER": kafka}
    out = subprocess.run([sys.executable, "-m", "streams.cli", "tables", "get", "payments",
                          "balances", ACCOUNTS[3], "--worker", "auto"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout == f'{ACCOUNTS[3]}: "{balance_of(3)}"\n', out.stderr
    status, doc = http(port_b, "/tables/balances/keys/iq-nobody")
    assert status == 404 and doc["error"] == "key 'iq-nobody' not found in table 'balances'"

    assert a.terminate() == 0, a.log()[-3000:]
    wait_for("b holds every partition", lambda: http(port_b, "/tables/balances")[1].get(
        "running_here") == [0, 1, 2, 3], 90, (b,))
    wait_for("b healthy", lambda: healthy(port_b), 60, (b,))
    after = wait_for("balances via b", lambda: all_balances_right(port_b), 60, (b,))
    assert set(after.values()) == {f"127.0.0.1:{port_b}"}
    print(f"two workers and a rebalance: {time.monotonic() - started:.1f} s")


# -- trip_stats: /health while restoring; windows over HTTP ----------------------------------------
CHANGELOG = trip_stats.stores["driver-totals"].changelog
BY_DRIVER = "trip_stats-rides-by-driver-repartition"
RESTORED = 100_000
PROBE = next(f"iq-driver-{i}" for i in range(1000)
             if key_partition(f"iq-driver-{i}".encode(), 4) == 0)


async def _fill_changelog(kafka: str) -> None:
    """A finished commit's worth of driver totals in partition 0 (header offsets <= committed),
    the probe key last: a fresh worker restores them before it runs."""
    headers = [(OFFSETS_HEADER, encode_offsets({(BY_DRIVER, 0): 0}))]
    producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=20, acks=1,
                                max_batch_size=1024 * 1024)
    await producer.start()
    try:
        records = [(f"filler-{i}".encode(), b'{"driver_id":"x","rides":1,"fare_total":"1.00"}')
                   for i in range(RESTORED)]
        records.append((PROBE.encode(), b'{"driver_id":"p","rides":7,"fare_total":"70.00"}'))
        futures = []
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                futures.append(await producer.send_batch(batch, CHANGELOG, partition=0))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers)
        futures.append(await producer.send_batch(batch, CHANGELOG, partition=0))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def test_health_is_503_while_restoring_and_windows_are_served(kafka: str, workers,
                                                                tmp_path: Path) -> None:
    started = time.monotonic()
    delete_topology_topics(kafka, trip_stats)
    create_topology_topics(kafka, trip_stats, partitions=4)
    asyncio.run(_fill_changelog(kafka))
    t0 = 1_700_000_040_000  # a minute boundary (epoch ms divisible by 60 000)
    rides = [("rides", "iq-city", {"ride_id": f"r{i}", "rider_id": "iq-rider",
                                   "driver_id": f"d{i % 3}", "city": "iq-city",
                                   "fare": "2.50", "ts": t0 + 1_000 * i}) for i in range(12)]
    produce(kafka, rides)

    w = workers("trip_stats", kafka, state_dir=tmp_path / "state")
    port = port_of(w)
    seen: list[tuple[int, str]] = []
    probe_answers: set[int] = set()
    while not seen or seen[-1][0] != 200:
        assert w.running, w.log()[-3000:]
        status, doc = http(port, "/health")
        if status in (200, 503):
            seen.append((status, doc["status"]))
            probe, _ = http(port, f"/tables/driver-totals/keys/{PROBE}")
            probe_answers.add(probe)
        assert time.monotonic() - started < 120, seen[-5:]
        time.sleep(0.05)
    assert (503, "restoring") in seen, seen
    assert all(s == 503 for s, _ in seen[:-1]), seen
    # while restoring the key was never answered wrongly ("not found"): 503 until restored
    assert 404 not in probe_answers
    status, doc = http(port, f"/tables/driver-totals/keys/{PROBE}")
    assert status == 200 and doc["value"]["rides"] == 7 and doc["partition"] == 0

    def windows(table: str, query: str = "") -> list[dict[str, Any]]:
        status, doc = http(port, f"/tables/{table}/keys/iq-city{query}")
        return doc["windows"] if status == 200 else []

    one = wait_for("the 1-minute window", lambda: [
        x for x in windows("rides-per-city-1m") if x["value"]["rides"] == 12], 60, (w,))
    assert one == [{"window_start": t0, "window_end": t0 + 60_000,
                    "value": {"city": "iq-city", "rides": 12, "fare_total": "30.00"}}]
    hopping = windows("rides-per-city-5m")
    assert [x["window_start"] for x in hopping] == [t0 - 60_000 * k for k in range(4, -1, -1)]
    assert {x["value"]["rides"] for x in hopping} == {12}
    ranged = windows("rides-per-city-5m", f"?from={t0 - 120_000}&to={t0 - 60_000}")
    assert [x["window_start"] for x in ranged] == [t0 - 120_000, t0 - 60_000]
    # sessions sit behind a repartition (rides re-keyed by rider): committed a little later
    # than the city windows
    def sessions() -> dict[str, Any] | None:
        status, doc = http(port, f"/tables/rider-sessions/windows?from={t0}")
        return doc if status == 200 and doc["windows"] else None

    doc = wait_for("the rider session", sessions, 60, (w,))
    assert doc["complete"] is True
    assert doc["windows"] == [{"key": "iq-rider", "window_start": t0, "window_end": t0 + 11_000,
                               "value": {"rider_id": "iq-rider", "rides": 12}}]
    env = {**os.environ, "STREAMS_BROKER": kafka}
    out = subprocess.run([sys.executable, "-m", "streams.cli", "tables", "get", "trip_stats",
                          "rides-per-city-1m", "iq-city", "--worker", f"127.0.0.1:{port}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout == (f'iq-city [{t0}, {t0 + 60_000}): '
                          '{"city":"iq-city","rides":12,"fare_total":"30.00"}\n'), out.stderr
    assert w.terminate() == 0, w.log()[-3000:]
    print(f"restore + windows: {time.monotonic() - started:.1f} s")
