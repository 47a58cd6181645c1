"""fraud_alerts (a Faust-style agent) against the real broker: two workers, one killed with
SIGKILL while input is still arriving and restarted; the agent's table equals an oracle computed
from the input (never double-applied), alerts equal the oracle's up to exact duplicates."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from streams.devtools import generate
from streams.runtime.compile import subtopologies
from streams.state.meta import TaskId, TaskMeta
from streams.tables.inspect import open_read_only, task_dirs
from topologies.fraud_alerts import topology

from tests.conftest import (ROOT, create_topology_topics, delete_topology_topics,
                            produce_in_background, read_topic)
from tests.integration.tables_support import wait_drained
from tests.unit.test_fraud_alerts import oracle

pytestmark = pytest.mark.broker

TABLE = "recent-amounts"


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "fraud.toml"
    cfg.write_text("commit_interval_ms = 200\ncommit_every_records = 2000\n"
                   "max_batch_records = 500\nsession_timeout_ms = 6000\n")
    return cfg


def _newest_tables(state_dirs: list[Path]) -> dict[str, Any]:
    """The table from every task's most advanced copy among ``state_dirs`` (a killed worker's
    directory keeps stale copies of the tasks that moved away)."""
    subs = {s.id: s for s in subtopologies(topology)}
    best: dict[str, tuple[int, Path]] = {}
    for root in state_dirs:
        for path in task_dirs(root, topology, TABLE):
            store = open_read_only(path, subs[TaskId.parse(path.name).sub].stores)
            try:
                position = sum(TaskMeta.decode(store.meta()).offsets.values())
            finally:
                store.close()
            if path.name not in best or position > best[path.name][0]:
                best[path.name] = (position, path)
    table: dict[str, Any] = {}
    for name, (_position, path) in best.items():
        store = open_read_only(path, subs[TaskId.parse(name).sub].stores)
        try:
            for k, v in store.items(TABLE):
                assert k.decode() not in table, f"key {k!r} in two tasks"
                table[k.decode()] = json.loads(v)
        finally:
            store.close()
    assert len(best) == 4, f"expected the 4 tasks, found {sorted(best)}"
    return table


def _cli_get(state_dir: Path, key: str) -> Any:
    out = subprocess.run([sys.executable, "-m", "streams.cli", "tables", "get", "fraud_alerts",
                          TABLE, key, "--json", "--state-dir", str(state_dir)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_fraud_alerts_two_workers_kill_9_mid_stream(kafka: str, workers, tmp_path: Path) -> None:
    delete_topology_topics(kafka, topology)
    create_topology_topics(kafka, topology, partitions=4)
    events = generate.events("fraud_alerts", 30_000, seed=5)
    expected_alerts, expected_table = oracle(events)
    config = ["--config", str(_config(tmp_path))]
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a = workers("fraud_alerts", kafka, state_dir=a_dir, args=config)
    b = workers("fraud_alerts", kafka, state_dir=b_dir, args=config)
    a.wait_assigned()
    b.wait_assigned()
    feeder = produce_in_background(kafka, events, chunk=500, pause=0.5)  # ~30 s of input
    time.sleep(6)
    assert a.running and b.running, a.log()[-3000:] + b.log()[-3000:]
    assert feeder.is_alive(), "the kill must land while input is still arriving"
    a.kill()                                    # SIGKILL: no commit, no close
    time.sleep(9)                               # b takes a's tasks after the session timeout
    assert feeder.is_alive()
    a = workers("fraud_alerts", kafka, state_dir=a_dir, args=config)  # restart on its old dir
    a.wait_assigned()
    feeder.join(timeout=300)
    wait_drained(kafka, "fraud_alerts", ["card-transactions"], timeout=240)
    assert a.terminate() == 0, a.log()[-3000:]
    assert b.terminate() == 0, b.log()[-3000:]
    for w in (a, b):
        assert "Traceback" not in w.log() and " ERROR " not in w.log(), w.log()[-3000:]
    assert "restoring" in b.log(), "b must have restored the killed worker's tasks"

    def normalized(table: dict[str, Any]) -> dict[str, Any]:
        return {u: [str(x) for x in v] for u, v in table.items()}

    table = _newest_tables([a_dir, b_dir])
    wrong = {u: (table.get(u), v) for u, v in expected_table.items() if table.get(u) != v}
    assert not wrong, f"{len(wrong)} users differ from the oracle, e.g. {list(wrong.items())[:2]}"
    assert normalized(table) == expected_table

    # A worker on a fresh host restores the table from the changelog: the same state.
    c_dir = tmp_path / "c"
    c = workers("fraud_alerts", kafka, state_dir=c_dir, args=config)
    # The group's offsets are at the end already: drained says nothing about c's restore.
    c.wait_running()
    wait_drained(kafka, "fraud_alerts", ["card-transactions"])
    assert c.terminate() == 0, c.log()[-3000:]
    assert " ERROR " not in c.log(), c.log()[-3000:]
    assert _newest_tables([c_dir]) == table
    for user in sorted(expected_table)[:3]:
        assert _cli_get(c_dir, user) == expected_table[user]

    alerts = [(r.key.decode(), json.loads(r.value)) for r in read_topic(kafka, "fraud-alerts")]
    distinct = {json.dumps(x, sort_keys=True) for x in alerts}
    assert distinct == {json.dumps(x, sort_keys=True) for x in expected_alerts}
    assert read_topic(kafka, topology.dlq_topic) == []
    print(f"fraud-alerts: {len(alerts)} records, {len(expected_alerts)} distinct expected "
          f"({len(alerts) - len(expected_alerts)} repeated by the replay after the kill)")
