"""Helpers for the table tests: the driver-totals oracle and reading tables back."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from streams.kafka import admin
from streams.runtime.compile import subtopologies
from streams.state.meta import TaskId
from streams.tables.inspect import open_read_only, task_dirs
from topologies.trip_stats import topology as trip_stats


def driver_totals_oracle(events: list[tuple[str, str, dict[str, Any]]]
                         ) -> dict[str, dict[str, Any]]:
    """Rides and fare total per driver, computed independently of the topology's code."""
    totals: dict[str, list[Any]] = {}
    for _topic, _key, ride in events:
        t = totals.setdefault(ride["driver_id"], [0, Decimal(0)])
        t[0] += 1
        t[1] += Decimal(ride["fare"])
    return {d: {"driver_id": d, "rides": n, "fare_total": f"{s:.2f}"}
            for d, (n, s) in totals.items()}


def local_table(state_dir: Path, table: str = "driver-totals") -> dict[str, Any]:
    """The table as stored in every local task directory (opened read-only)."""
    subs = {s.id: s for s in subtopologies(trip_stats)}
    out: dict[str, Any] = {}
    for path in task_dirs(state_dir, trip_stats, table):
        store = open_read_only(path, subs[TaskId.parse(path.name).sub].stores)
        try:
            for k, v in store.items(table):
                assert k.decode() not in out, f"key {k!r} in two tasks"
                out[k.decode()] = json.loads(v)
        finally:
            store.close()
    return out


def latest_by_key(records: list[Any]) -> dict[str, Any]:
    """Per key, the last value in partition order (the compacted view of a topic)."""
    out: dict[str, Any] = {}
    for rec in sorted(records, key=lambda r: (r.partition, r.offset)):
        out[rec.key.decode()] = None if rec.value is None else json.loads(rec.value)
    return out


def wait_drained(bootstrap: str, group: str, topics: list[str], timeout: float = 180.0) -> None:
    """Wait until the group's committed offsets reach the end of every partition of ``topics``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        ends = {(t, p): o for t in topics
                for p, o in admin.run(admin.end_offsets(bootstrap, t)).items()}
        committed = admin.run(admin.committed_offsets(bootstrap, group, topics))
        last = (ends, committed)
        if ends and all(committed.get(tp, 0) >= off for tp, off in ends.items()):
            # The repartition topic may still be growing from the first sub-topology.
            time.sleep(1.0)
            ends2 = {(t, p): o for t in topics
                     for p, o in admin.run(admin.end_offsets(bootstrap, t)).items()}
            if ends2 == ends:
                return
        time.sleep(0.5)
    raise AssertionError(f"group {group} not drained in {timeout}s: ends/committed = {last}")
