"""Standby replicas on a real broker: two trip_stats workers with ``num_standby_replicas = 1``.

Each worker's standby copies of the other's driver-totals tasks catch up with the active
state; standbys write no outputs (every ride's update appears exactly once while both run);
after a kill -9 of one worker the survivor takes its tasks over from the standby copies,
without restoring the changelog from the beginning, and the driver totals come out exact
(at-least-once: an update may be emitted again, none is missing, state never double-counts).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streams.devtools import generate
from streams.runtime.compile import subtopologies
from streams.tables.inspect import open_read_only, task_dirs
from topologies.trip_stats import topology as trip_stats

from tests.conftest import create_topology_topics, delete_topology_topics, produce, read_topic
from tests.integration.tables_support import driver_totals_oracle, latest_by_key

pytestmark = pytest.mark.broker

TABLE = "driver-totals"
PARTITIONS = 2  # (few tasks: a short test)
SETTINGS = {"num_standby_replicas": 1, "session_timeout_ms": 6000, "commit_interval_ms": 200}


def config(tmp_path: Path) -> list[str]:
    path = tmp_path / "standby.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in SETTINGS.items()))
    return ["--config", str(path)]


def table_by_task(state_dir: Path) -> dict[str, dict[bytes, bytes]]:
    """Task id -> the driver-totals entries of its local store (read-only, while running)."""
    out = {}
    for path in task_dirs(state_dir, trip_stats, TABLE):
        store = open_read_only(path, [TABLE])
        try:
            out[path.name] = dict(store.items(TABLE))
        finally:
            store.close()
    return out


def wait_until(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def settled_with_standbys(worker: Any) -> bool:
    """The worker's latest assignment came with standby tasks and its tasks run."""
    lines = worker.log().splitlines()
    assigned = [i for i, line in enumerate(lines) if "-> tasks" in line]
    if not assigned or assigned[-1] == 0:
        return False
    last = assigned[-1]
    return ("standby tasks: ['" in lines[last - 1]
            and any("tasks running" in line for line in lines[last:]))


def updates_per_driver(records: list[Any]) -> dict[str, Counter[int]]:
    """Per driver, how often each running count (``rides``) was emitted."""
    out: dict[str, Counter[int]] = {}
    for rec in records:
        out.setdefault(rec.key.decode(), Counter())[json.loads(rec.value)["rides"]] += 1
    return out


def test_standby_takes_over_without_a_full_restore(kafka: str, workers: Any,
                                                   tmp_path: Path) -> None:
    delete_topology_topics(kafka, trip_stats)
    create_topology_topics(kafka, trip_stats, partitions=PARTITIONS)
    rides = generate.events("trip_stats", 3000, seed=41)
    first, second = rides[:2000], rides[2000:]
    a = workers("trip_stats", kafka, tmp_path / "a", args=config(tmp_path))
    b = workers("trip_stats", kafka, tmp_path / "b", args=config(tmp_path))
    wait_until("both workers to run their share with standbys",
               lambda: settled_with_standbys(a) and settled_with_standbys(b))
    produce(kafka, first)
    out = read_topic(kafka, TABLE, expect=len(first), timeout=60)
    # Standbys process no input and write nothing: each update exactly once.
    assert len(out) == len(first)
    assert all(set(c.values()) == {1} for c in updates_per_driver(out).values())

    # Each worker holds every driver-totals task: its actives and the other's as standbys,
    # and both copies agree.
    def copies_agree() -> bool:
        ta, tb = table_by_task(tmp_path / "a"), table_by_task(tmp_path / "b")
        return (len(ta) == len(tb) == PARTITIONS and ta == tb
                and sum(len(t) for t in ta.values()) == len(driver_totals_oracle(first)))

    wait_until("the standby copies to catch up", copies_agree)
    # kill -9 the worker running task 0 of driver-totals; the other one takes everything
    (sub,) = [s.id for s in subtopologies(trip_stats) if TABLE in s.stores]
    owner_a = f"'{sub}_0'" in a.log().rsplit("assigned ", 1)[-1].splitlines()[0]
    victim, survivor = (a, b) if owner_a else (b, a)
    mark = len(survivor.log())
    victim.kill()
    produce(kafka, second)
    wait_until("the survivor to take over", lambda: "tasks running" in survivor.log()[mark:],
               timeout=60)
    takeover = survivor.log()[mark:]
    assert "wipe: no local state" not in takeover, takeover[-3000:]
    # the victim's driver-totals task opened over the standby's state: current, or a tail
    assert (f"task {sub}_0: resume: local state is current" in takeover
            or f"task {sub}_0: restore: the changelog moved past local state" in takeover), \
        takeover[-3000:]
    restored = [int(n) for n in re.findall(r"restored \d+ of (\d+) changelog", takeover)]
    assert sum(restored) < len(first) // 10, takeover[-3000:]

    expected = driver_totals_oracle(rides)
    out = wait_until("every update", lambda: (
        recs := read_topic(kafka, TABLE, timeout=10, idle=1.0))
        and latest_by_key(recs) == expected and recs, timeout=60)
    seen = updates_per_driver(out)
    for driver, totals in expected.items():  # every running count emitted at least once
        assert set(seen[driver]) == set(range(1, totals["rides"] + 1)), driver
    assert survivor.terminate() == 0, survivor.log()[-3000:]
