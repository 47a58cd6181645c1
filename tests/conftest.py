"""Shared fixtures: the real local broker, worker subprocesses, topic helpers.

Integration tests talk to a real Kafka broker: ``STREAMS_BROKER`` if set (CI starts one with
``streams kafka start``), otherwise one started here on ``STREAMS_TEST_PORT`` (default 9092).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from hypothesis import settings

from streams.devtools import broker as local_broker
from streams.kafka import admin

ROOT = Path(__file__).resolve().parent.parent

# The workers tests start announce themselves for Prometheus (streams.runtime.discovery); the
# killed ones leave their file. Not in the repository's .streams/discovery, where
# config/prometheus.yml would find them and report them down.
if not os.environ.get("STREAMS_DISCOVERY_DIR"):
    _DISCOVERY = tempfile.mkdtemp(prefix="streams-test-discovery-")
    os.environ["STREAMS_DISCOVERY_DIR"] = _DISCOVERY
    atexit.register(shutil.rmtree, _DISCOVERY, True)

# Hypothesis profiles. "ci" (selected where CI is set) runs every property test with its full
# number of examples: Hypothesis' default of 100, or the test's own ``examples(n)``. "dev", the
# default elsewhere, runs a fifth of them for a quick local loop. HYPOTHESIS_PROFILE picks one
# explicitly. No deadline in either: a loaded 2-core machine makes single examples slow.
_FULL_EXAMPLES = 100
settings.register_profile("ci", max_examples=_FULL_EXAMPLES, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=_FULL_EXAMPLES // 5, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                      or ("ci" if os.environ.get("CI") else "dev"))


def examples(n: int) -> int:
    """A property test's number of examples: ``n`` under the "ci" profile, scaled like the
    loaded profile's default otherwise (at least 5)."""
    return max(5, n * settings.default.max_examples // _FULL_EXAMPLES)


def _bootstrap() -> str:
    if os.environ.get("STREAMS_BROKER"):
        return os.environ["STREAMS_BROKER"]
    return f"127.0.0.1:{int(os.environ.get('STREAMS_TEST_PORT', '9092'))}"


def stop_gracefully(procs: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    """SIGTERM each process still running; kill it if it has not exited after ``timeout``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of the shared broker (those using the ``kafka`` fixture): scripts/test.sh
    runs them one after another in one pytest process (they share topology topics), and
    everything else (broker-free tests, tests with brokers of their own) in a second process
    alongside."""
    for item in items:
        if "kafka" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_broker)


@pytest.fixture(scope="session")
def kafka() -> str:
    """Bootstrap address of a running real broker (started if needed)."""
    bootstrap = _bootstrap()
    if not admin.broker_answers(bootstrap):
        port = int(bootstrap.rsplit(":", 1)[1])
        local_broker.start(port, verbose=False)
    return bootstrap


def delete_topology_topics(bootstrap: str, topology: Any) -> None:
    """Delete every topic the topology touches, so a test starts from empty topics (the
    group's committed offsets of deleted topics go with them)."""
    topics = (topology.input_topics() + topology.output_topics() + topology.internal_topics()
              + [topology.dlq_topic] + ([topology.late_topic] if topology.late_topic else []))
    admin.run(admin.delete_topics(bootstrap, topics))


def create_topology_topics(bootstrap: str, topology: Any, partitions: int = 4) -> None:
    """Create the topology's topics; the group's committed offsets on its source topics are
    reset to the (new) beginning: the broker keeps a group's offsets of a deleted topic, and
    stale offsets would make "drained" checks pass before the new input is processed."""
    from streams.runtime.topics import topic_specs

    admin.run(admin.ensure_topics(bootstrap, topic_specs(topology, partitions)))
    try:
        admin.run(admin.reset_group_to_earliest(
            bootstrap, topology.name, topology.input_topics() + topology.repartition_topics()))
    except Exception:  # noqa: BLE001 - a group with live members: leave its offsets alone
        pass


def produce(bootstrap: str, events: list[tuple[str, Any, Any]],
            partition: int | None = None) -> None:
    """Send (topic, key, value) triples; str keys and dict values are encoded as JSON/UTF-8,
    bytes are sent as they are."""
    from streams.serdes import json_dumps

    async def send() -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, acks="all")
        await p.start()
        try:
            futs = []
            for topic, key, value in events:
                kb = key.encode() if isinstance(key, str) else key
                vb = value if isinstance(value, (bytes, type(None))) else json_dumps(value)
                futs.append(await p.send(topic, vb, key=kb, partition=partition))
            await asyncio.gather(*futs)
        finally:
            await p.stop()

    asyncio.run(send())


def produce_in_background(bootstrap: str, events: list[tuple[str, Any, Any]], chunk: int = 500,
                          pause: float = 0.25) -> threading.Thread:
    """Produce ``events`` in chunks with pauses from a thread (input that keeps arriving)."""

    def run() -> None:
        for i in range(0, len(events), chunk):
            produce(bootstrap, events[i:i + chunk])
            time.sleep(pause)

    thread = threading.Thread(target=run, name="feeder", daemon=True)
    thread.start()
    return thread


def read_topic(bootstrap: str, topic: str, *, expect: int | None = None, timeout: float = 60.0,
               idle: float = 3.0) -> list[Any]:
    """All records of ``topic`` from the beginning. With ``expect``: wait until that many
    arrived (or ``timeout``); otherwise read up to the end offsets taken at the start, then keep
    reading until nothing new arrived for ``idle`` seconds."""

    async def read() -> list[Any]:
        parts = (await admin.topic_partitions(bootstrap, [topic])).get(topic, [])
        if not parts:
            return []
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             isolation_level="read_committed")
        await c.start()
        try:
            tps = [TopicPartition(topic, p) for p in parts]
            c.assign(tps)
            await c.seek_to_beginning()
            ends = await c.end_offsets(tps)
            out: list[Any] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            last_new = loop.time()
            while loop.time() < deadline:
                batch = await c.getmany(timeout_ms=300)
                for recs in batch.values():
                    out.extend(recs)
                    if recs:
                        last_new = loop.time()
                if expect is not None:
                    if len(out) >= expect:
                        break
                    continue
                reached = all([await c.position(tp) >= ends[tp] for tp in tps])
                if reached and loop.time() - last_new > idle:
                    break
            return out
        finally:
            await c.stop()

    return asyncio.run(read())


def committed_offsets(bootstrap: str, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    return admin.run(admin.committed_offsets(bootstrap, group, topics))


class WorkerProcess:
    """``streams worker NAME`` as a subprocess (the real CLI entry point)."""

    def __init__(self, name: str, bootstrap: str, state_dir: Path, log_path: Path,
                 extra_env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        env = {**os.environ, "STREAMS_BROKER": bootstrap, "PYTHONUNBUFFERED": "1",
               **(extra_env or {})}
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", name, "--state-dir", str(state_dir),
             "--metrics-port", "0", *(args or [])],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_assigned(self, timeout: float = 60.0) -> None:
        """Wait until the worker logged a partition assignment."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "assigned" in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"worker got no assignment in {timeout}s:\n{self.log()[-3000:]}")

    def wait_running(self, timeout: float = 180.0) -> None:
        """Wait until every task of the worker's latest assignment runs (opened and restored:
        its tables are current), as the worker logs once per assignment."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            assigned = log.rfind("assigned ")
            if assigned >= 0 and log.find("tasks running", assigned) >= 0:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{log[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"worker tasks not running in {timeout}s:\n{self.log()[-3000:]}")

    def terminate(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    @property
    def running(self) -> bool:
        return self.proc.poll() is None


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Any]:
    """Factory for worker subprocesses; all are killed at the end of the test."""
    started: list[WorkerProcess] = []

    def start(name: str, bootstrap: str, state_dir: Path | None = None,
              **kwargs: Any) -> WorkerProcess:
        state = state_dir or tmp_path / "state"
        w = WorkerProcess(name, bootstrap, state, tmp_path / f"worker-{len(started)}.log", **kwargs)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.running:
            w.kill()
