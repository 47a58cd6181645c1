"""A backlog behind a repartition gives the results live input gives (real broker).

Rides are produced BEFORE the workers start, unevenly over 4 partitions (so the upstream tasks
drain them at different paces), re-keyed by driver (group_by) into tumbling windows whose grace
(5 s) is more than the input's disorder (at most 3 s per partition). Every window must come out
with the count a brute-force oracle gives, and no ride may be late — with 2 workers, one of
which is killed with SIGKILL in the middle of the backlog and restarted, and with 1 worker.
The topology is written to a project directory of its own (topics ``evt-backlog-*``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (ROOT, committed_offsets, create_topology_topics,
                            delete_topology_topics, produce, read_topic, stop_gracefully)

pytestmark = pytest.mark.broker

SIZE, GRACE, DISORDER = 10_000, 5_000, 3_000
SPAN = 300_000  # event time covered by the backlog: 30 windows
# rides per input partition: uneven, so that the upstream tasks' paces differ
PER_PARTITION = [2400, 900, 300, 1200]

TOPOLOGY = f'''
from streams import Topology, TumblingWindows

topology = Topology("evt_backlog", late_topic="evt-backlog-late")
(topology.stream("evt-backlog-rides", timestamp="ts")
    .group_by(lambda ride: ride["driver_id"], name="by-driver")
    .window(TumblingWindows(size={SIZE}, grace={GRACE}))
    .aggregate(lambda: 0, lambda n, ride: n + 1, name="per-driver", emit="final")
    .to("evt-backlog-per-driver"))
'''


class Project:
    """The topology in ``<tmp>/project/topologies/evt_backlog.py`` and its worker processes."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.dir = tmp_path / "project"
        (self.dir / "topologies").mkdir(parents=True)
        (self.dir / "topologies" / "__init__.py").write_text("")
        (self.dir / "topologies" / "evt_backlog.py").write_text(TOPOLOGY)
        self.config = tmp_path / "backlog.toml"
        self.config.write_text(textwrap.dedent("""
            commit_interval_ms = 200
            session_timeout_ms = 6000
            max_batch_records = 1000
            """))
        self.procs: list[subprocess.Popen[bytes]] = []

    def topology(self) -> Any:
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "_evt_backlog", self.dir / "topologies" / "evt_backlog.py")
        mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        return mod.topology

    def worker(self, kafka: str, name: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        p = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "evt_backlog", "--state-dir",
             str(self.tmp / f"state-{name}"), "--metrics-port", "0", "--config",
             str(self.config)],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=self.dir,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
                 "STREAMS_BROKER": kafka})
        self.procs.append(p)
        return p

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        stop_gracefully(self.procs)


@pytest.fixture
def project(tmp_path: Path):
    p = Project(tmp_path)
    yield p
    p.stop()


def backlog(seed: int, per_partition: list[int]
            ) -> tuple[list[list[dict[str, Any]]], dict[tuple[str, int], int], int]:
    """Rides per partition (each in event-time order up to DISORDER), the oracle's final
    windows {(driver, window start): rides}, and the closing time: every partition with rides
    ends with one far after the others, so every window of the backlog closes (an empty
    partition's upstream task must say it is idle)."""
    rng = random.Random(seed)
    base = (int(time.time() * 1000) - 3_600_000) // SIZE * SIZE
    parts: list[list[dict[str, Any]]] = []
    oracle: dict[tuple[str, int], int] = {}
    n = 0
    for count in per_partition:
        rides = []
        for i in range(count):
            ts = base + i * SPAN // count - rng.randrange(DISORDER)
            driver = f"d{rng.randrange(12)}"
            rides.append({"ride_id": f"r{n}", "driver_id": driver, "ts": ts})
            key = (driver, ts // SIZE * SIZE)
            oracle[key] = oracle.get(key, 0) + 1
            n += 1
        parts.append(rides)
    closing = base + SPAN + 60_000
    for p, rides in enumerate(parts):
        if rides:
            rides.append({"ride_id": f"close{p}", "driver_id": "closer", "ts": closing})
    return parts, oracle, closing


def start_backlog(kafka: str, project: Project, seed: int,
                  per_partition: list[int]) -> dict[tuple[str, int], int]:
    topo = project.topology()
    delete_topology_topics(kafka, topo)
    create_topology_topics(kafka, topo, partitions=4)
    parts, oracle, _ = backlog(seed, per_partition)
    for p, rides in enumerate(parts):
        if rides:
            produce(kafka, [("evt-backlog-rides", f"city{p}", r) for r in rides], partition=p)
    return oracle


def final_windows(kafka: str, expected: int, timeout: float) -> dict[tuple[str, int], int]:
    """The windows written so far (a repeated window after a crash must repeat its count)."""
    got: dict[tuple[str, int], int] = {}
    for r in read_topic(kafka, "evt-backlog-per-driver", expect=expected, timeout=timeout):
        v = json.loads(r.value)
        key = (r.key.decode(), v["window_start"])
        assert got.get(key, v["value"]) == v["value"], f"window {key} came out twice, differently"
        got[key] = v["value"]
    return got


def wait_for_progress(kafka: str, timeout: float = 60.0) -> int:
    """Wait until the group committed some of the input; returns how much."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sum(committed_offsets(kafka, "evt_backlog", ["evt-backlog-rides"]).values())
        if done:
            return done
        time.sleep(0.1)
    raise AssertionError("no input was committed")


def check(kafka: str, oracle: dict[tuple[str, int], int], logs: str) -> None:
    got = final_windows(kafka, len(oracle), timeout=90)
    assert got == oracle, (f"{len(set(got) ^ set(oracle))} windows differ, e.g. "
                           f"{sorted(set(got) ^ set(oracle))[:5]}\n{logs[-3000:]}")
    late = read_topic(kafka, "evt-backlog-late", idle=1.0)
    assert late == [], f"{len(late)} rides judged late"


def test_a_backlog_with_two_workers_and_a_kill_9_has_no_late_rides(kafka: str,
                                                                   project: Project) -> None:
    oracle = start_backlog(kafka, project, seed=7, per_partition=PER_PARTITION)
    project.worker(kafka, "a")
    b = project.worker(kafka, "b")
    done = wait_for_progress(kafka)
    assert done < sum(PER_PARTITION) + 4, "the backlog was processed before the kill"
    b.send_signal(signal.SIGKILL)
    b.wait(30)
    project.worker(kafka, "b2")                 # the same state directory name: "b2"'s own
    check(kafka, oracle, project.log("a") + project.log("b2"))


def test_a_backlog_with_one_worker_and_an_empty_partition_has_no_late_rides(
        kafka: str, project: Project) -> None:
    """Input partition 3 is empty: its upstream task is caught up at once and, quiet for
    repartition_idle_ms, tells the tasks behind the repartition it is idle; without that they
    would wait for it and no window would close."""
    oracle = start_backlog(kafka, project, seed=8, per_partition=PER_PARTITION[:3] + [0])
    project.worker(kafka, "solo")
    check(kafka, oracle, project.log("solo"))
