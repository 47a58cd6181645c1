"""Broker failure on a local 3-node KRaft cluster: trip_stats (at-least-once) with two workers
keeps exact driver totals when the broker leading the most partitions is killed with SIGKILL
while input is arriving, and comes back later.

The cluster is private to this module: its own ports, its own data directories under a
temporary STREAMS_HOME (the shared development broker is not touched). Topics are created by
the framework with the "auto" replication settings, which must give them 3 replicas with
min.insync.replicas=2 here.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.devtools import broker, generate
from streams.kafka import admin
from streams.serdes import json_dumps
from topologies.trip_stats import topology as trip_stats

from tests.conftest import ROOT, create_topology_topics, read_topic
from tests.integration.tables_support import driver_totals_oracle, latest_by_key, wait_drained

pytestmark = pytest.mark.broker

NODES = 3
EVENTS = 20_000
SOURCES = ["rides", *trip_stats.repartition_topics()]


def _free_base() -> int:
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(25000, 25800, 10)  # below the ephemeral port range
        ports = [base + i for i in range(NODES)]
        ports += [base + broker.CONTROLLER_OFFSET + i for i in range(NODES)]
        if all(broker.port_free(p) for p in ports):
            return base
    raise AssertionError("no free ports for the cluster")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """(first port, bootstrap list) of a private 3-node cluster."""
    if shutil.which("java") is None:
        pytest.skip("java is not installed")
    saved = {k: os.environ.get(k) for k in ("STREAMS_HOME", "KAFKA_HOME")}
    cache = broker.streams_home() / f"kafka-{broker.KAFKA_VERSION}"
    if not os.environ.get("KAFKA_HOME") and (cache / "complete").exists():
        os.environ["KAFKA_HOME"] = str(cache)  # reuse the fetched jars
    os.environ["STREAMS_HOME"] = str(tmp_path_factory.mktemp("cluster-home"))
    port = _free_base()
    try:
        yield port, broker.start_cluster(port, NODES, verbose=False, heap="512m")
    finally:
        broker.stop_cluster(port)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Feeder(threading.Thread):
    """Sends the events in chunks with pauses through one idempotent acks=all producer (a
    failover must neither lose nor duplicate input); ``error`` holds what stopped it."""

    def __init__(self, bootstrap: str, events: list[tuple[str, str, dict]], chunk: int,
                 pause: float) -> None:
        super().__init__(name="feeder", daemon=True)
        self.bootstrap, self.events, self.chunk, self.pause = bootstrap, events, chunk, pause
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._send())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    async def _send(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                    enable_idempotence=True, linger_ms=10,
                                    request_timeout_ms=60000)
        await producer.start()
        try:
            for i in range(0, len(self.events), self.chunk):
                futures = [await producer.send(t, json_dumps(v), key=k.encode())
                           for t, k, v in self.events[i:i + self.chunk]]
                await asyncio.gather(*futures)
                self.sent = i + len(futures)
                await asyncio.sleep(self.pause)
        finally:
            await producer.stop()


async def _describe(bootstrap: str, topics: list[str]) -> tuple[list[dict], dict[str, str]]:
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await client.start()
    try:
        described = await client.describe_topics(topics)
        configs = await client.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    finally:
        await client.close()
    min_isr = {}
    for response in configs:
        for resource in response.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            for entry in resource[4]:
                if entry[0] == "min.insync.replicas":
                    min_isr[resource[3]] = entry[1]
    return described, min_isr


def _busiest_leader(bootstrap: str, topics: list[str]) -> tuple[int, Counter]:
    described, _ = asyncio.run(_describe(bootstrap, topics))
    leaders = Counter(p["leader"] for t in described for p in t["partitions"])
    return leaders.most_common(1)[0][0], leaders


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


def test_killing_the_busiest_broker_loses_nothing(cluster: tuple[int, str], workers,
                                                  tmp_path: Path) -> None:
    port, bootstrap = cluster
    create_topology_topics(bootstrap, trip_stats, partitions=4)
    topics = trip_stats.input_topics() + trip_stats.internal_topics()
    # Brokers learn new topics' metadata asynchronously from the controller: ask until every
    # topic's config is known to the broker that answers.
    described, min_isr = asyncio.run(_describe(bootstrap, topics))
    deadline = time.monotonic() + 60
    while set(min_isr) != set(topics) and time.monotonic() < deadline:
        time.sleep(0.5)
        described, min_isr = asyncio.run(_describe(bootstrap, topics))
    assert {t["topic"]: {len(p["replicas"]) for p in t["partitions"]} for t in described} == \
        {t: {NODES} for t in topics}, "auto replication on 3 brokers is 3 replicas"
    assert min_isr == {t: "2" for t in topics}

    events = generate.events("trip_stats", EVENTS, seed=21)
    oracle = driver_totals_oracle(events)
    config = tmp_path / "worker.toml"
    config.write_text("commit_interval_ms = 300\ncommit_every_records = 2000\n"
                      "max_batch_records = 500\nsession_timeout_ms = 10000\n")
    a = workers("trip_stats", bootstrap, state_dir=tmp_path / "a", args=["--config", str(config)])
    b = workers("trip_stats", bootstrap, state_dir=tmp_path / "b", args=["--config", str(config)])
    a.wait_assigned(timeout=120)
    b.wait_assigned(timeout=120)

    feeder = Feeder(bootstrap, events, chunk=250, pause=0.3)  # ~80 chunks, tens of seconds
    feeder.start()
    _wait(lambda: feeder.sent >= EVENTS // 4 or not feeder.is_alive(), 120,
          "a quarter of the input")
    victim, leaders = _busiest_leader(bootstrap, topics)
    assert broker.kill_node(port, victim), f"node {victim} was not running"
    assert feeder.is_alive(), "the input must still be arriving when the broker dies"
    status = cli("kafka", "status", "--port", str(port))
    assert status.returncode == 1, status
    stopped = f"node {victim} at 127.0.0.1:{port + victim - 1}: stopped"
    assert stopped in status.stdout, status.stdout
    sent_at_kill = feeder.sent
    # Keep the broker down while a good part of the input arrives, then bring it back.
    _wait(lambda: feeder.sent >= sent_at_kill + EVENTS // 4 or not feeder.is_alive(), 180,
          "input while the broker is down")
    assert feeder.error is None, f"producing failed while node {victim} was down: {feeder.error!r}"
    broker.start_node(port, victim, timeout=180)
    feeder.join(timeout=300)
    assert feeder.error is None, repr(feeder.error)
    assert feeder.sent == EVENTS

    survivors = f"127.0.0.1:{port + (victim % NODES)}"  # any node that stayed up
    wait_drained(survivors, "trip_stats", SOURCES, timeout=300)
    for w in (a, b):
        assert w.running, f"a worker died during the broker failure:\n{w.log()[-3000:]}"
    assert a.terminate() == 0, a.log()[-3000:]
    assert b.terminate() == 0, b.log()[-3000:]
    # Nothing lost in the input either: exactly the generated events are in `rides`.
    assert sum(admin.run(admin.end_offsets(bootstrap, "rides")).values()) == EVENTS
    out = latest_by_key(read_topic(bootstrap, "driver-totals", idle=3.0))
    wrong = {k: (out.get(k), v) for k, v in oracle.items() if out.get(k) != v}
    assert not wrong, f"{len(wrong)} drivers differ from the oracle, e.g. {list(wrong.items())[:3]}"
    assert set(out) == set(oracle)
    print(f"killed node {victim} (leader of {leaders[victim]} of {sum(leaders.values())} "
          f"partitions) after {sent_at_kill} of {EVENTS} events")


def cli(*args: str) -> subprocess.CompletedProcess:
    """The `streams` CLI with this module's STREAMS_HOME (the cluster's directories)."""
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=dict(os.environ),
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_cli_start_status_stop_the_cluster(cluster: tuple[int, str]) -> None:
    port, bootstrap = cluster
    again = cli("kafka", "start", "--port", str(port), "--nodes", str(NODES))
    assert again.returncode == 0 and bootstrap in again.stdout, again
    other = cli("kafka", "start", "--port", str(port), "--nodes", "2")
    assert other.returncode != 0 and "created with 3 nodes" in other.stderr, other
    status = cli("kafka", "status", "--port", str(port))
    assert status.returncode == 0, status
    assert status.stdout.count(": running (pid") == NODES, status.stdout
    stop = cli("kafka", "stop", "--port", str(port))
    assert stop.returncode == 0 and f"{NODES} nodes were running" in stop.stdout, stop
    assert not any(broker.port_open(port + i) for i in range(NODES))
    after = cli("kafka", "status", "--port", str(port))
    assert after.returncode == 1 and after.stdout.count(": stopped") == NODES, after
