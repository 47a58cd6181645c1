"""Tables under crashes, against the real broker: state never double-counts an input.

The oracle is computed from the generated input; the tables are read back from the workers'
RocksDB stores (read-only) and from the compacted output topic.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import pytest

from streams.devtools import generate
from topologies.trip_stats import topology as trip_stats

from tests.conftest import (create_topology_topics, delete_topology_topics, produce,
                            produce_in_background, read_topic)
from tests.integration.tables_support import (driver_totals_oracle, latest_by_key, local_table,
                                              wait_drained)

pytestmark = pytest.mark.broker

REPARTITION = trip_stats.repartition_topics()
SOURCES = ["rides", *REPARTITION]  # 4 partitions each


def _fresh(kafka: str) -> None:
    delete_topology_topics(kafka, trip_stats)
    create_topology_topics(kafka, trip_stats, partitions=4)


def _drain_and_stop(kafka: str, worker, state_dir: Path | None = None) -> None:
    # Drained offsets alone say nothing about a worker that restarted on old state: the
    # group's offsets are already at the end while its tasks still restore.
    worker.wait_running()
    wait_drained(kafka, "trip_stats", ["rides", *REPARTITION])
    assert worker.terminate() == 0, worker.log()[-3000:]


def _assert_exact(kafka: str, state_dirs: list[Path], oracle: dict) -> None:
    table: dict = {}
    for d in state_dirs:
        for k, v in local_table(d).items():
            table.setdefault(k, v)
    wrong = {k: (table.get(k), v) for k, v in oracle.items() if table.get(k) != v}
    assert not wrong, f"{len(wrong)} keys differ from the oracle, e.g. {list(wrong.items())[:3]}"
    assert set(table) == set(oracle)
    out = latest_by_key(read_topic(kafka, "driver-totals", idle=3.0))
    assert out == oracle, "the last driver-totals update per key must equal the oracle"


def test_kill_9_three_times_never_double_counts(kafka: str, workers, tmp_path: Path) -> None:
    _fresh(kafka)
    events = generate.events("trip_stats", 50_000, seed=7)
    oracle = driver_totals_oracle(events)
    # Input keeps arriving for the whole test, so every kill lands mid-stream.
    feeder = produce_in_background(kafka, events, chunk=500, pause=0.4)  # ~40 s of input
    state = tmp_path / "state"
    rng = random.Random(11)
    config = ["--config", str(_small_commits(tmp_path))]
    for round_ in range(3):
        w = workers("trip_stats", kafka, state_dir=state, args=config)
        w.wait_assigned()
        time.sleep(rng.uniform(1.0, 4.0))
        assert w.running, w.log()[-3000:]
        assert feeder.is_alive(), "the input must still be arriving at each kill"
        assert "restoring" in w.log() or round_ != 2, "after the state dir was deleted"
        w.kill()
        if round_ == 1:
            # Lose the local state: the next worker must restore from the changelog.
            shutil.rmtree(state)
    final = workers("trip_stats", kafka, state_dir=state, args=config)
    final.wait_assigned()
    feeder.join(timeout=300)
    _drain_and_stop(kafka, final)
    _assert_exact(kafka, [state], oracle)
    # At-least-once outputs: every update (driver, n-th ride) is emitted at least once; the
    # replays after each kill may repeat some. Count them.
    updates = [json.loads(r.value) for r in read_topic(kafka, "driver-totals")]
    emitted = {(u["driver_id"], u["rides"]) for u in updates}
    expected = {(d, n) for d, v in oracle.items() for n in range(1, v["rides"] + 1)}
    assert emitted == expected
    print(f"driver-totals: {len(updates)} updates for {len(expected)} distinct ones: "
          f"{len(updates) - len(expected)} repeated by replays after 3 kills")


def _small_commits(tmp_path: Path) -> Path:
    """Frequent commits so that kills land between commits with state on both sides."""
    cfg = tmp_path / "small-commits.toml"
    cfg.write_text("commit_interval_ms = 200\ncommit_every_records = 2000\n"
                   "max_batch_records = 500\nsession_timeout_ms = 6000\n")
    return cfg


def test_two_workers_kill_one_partitions_move_and_state_is_restored(kafka: str, workers,
                                                                   tmp_path: Path) -> None:
    _fresh(kafka)
    events = generate.events("trip_stats", 20_000, seed=8)
    first, second = events[:10_000], events[10_000:]
    a = workers("trip_stats", kafka, state_dir=tmp_path / "a")
    b = workers("trip_stats", kafka, state_dir=tmp_path / "b")
    _wait_split(a, b)
    produce(kafka, first)
    wait_drained(kafka, "trip_stats", ["rides", *REPARTITION])
    a.kill()  # its tasks move to b after the session timeout; b restores them from changelogs
    produce(kafka, second)
    wait_drained(kafka, "trip_stats", ["rides", *REPARTITION], timeout=240)
    assert b.terminate() == 0, b.log()[-3000:]
    assert "restoring" in b.log(), "b must have restored a's tables from the changelog"
    oracle = driver_totals_oracle(events)
    # b holds every task now; a's directory is stale and ignored.
    _assert_exact(kafka, [tmp_path / "b"], oracle)


def _wait_split(a, b, timeout: float = 90.0) -> None:
    """Wait until the two workers' latest assignments are disjoint halves."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = [[ln for ln in w.log().splitlines() if "assigned" in ln][-1:] for w in (a, b)]
        if all(x and f"assigned {len(SOURCES) * 4 // 2} partitions" in x[0] for x in last):
            return
        time.sleep(0.3)
    raise AssertionError("workers did not split the partitions:\n"
                         f"{a.log()[-2000:]}\n{b.log()[-2000:]}")


def test_old_local_state_is_detected_and_corrected_from_changelog(kafka: str, workers,
                                                                  tmp_path: Path) -> None:
    _fresh(kafka)
    events = generate.events("trip_stats", 12_000, seed=9)
    state, backup = tmp_path / "state", tmp_path / "backup"
    produce(kafka, events[:6_000])
    w = workers("trip_stats", kafka, state_dir=state)
    w.wait_assigned()
    _drain_and_stop(kafka, w)
    shutil.copytree(state, backup)
    produce(kafka, events[6_000:])
    w = workers("trip_stats", kafka, state_dir=state)
    w.wait_assigned()
    _drain_and_stop(kafka, w)
    shutil.rmtree(state)
    shutil.copytree(backup, state)  # state older than the group's committed offsets
    w = workers("trip_stats", kafka, state_dir=state)
    w.wait_assigned()
    _drain_and_stop(kafka, w)
    assert "restore: the changelog moved past local state" in w.log()  # incremental restore
    _assert_exact(kafka, [state], driver_totals_oracle(events))


def test_workers_sharing_a_state_dir_hand_tasks_over_without_lock_errors(
        kafka: str, workers, tmp_path: Path) -> None:
    """Two workers on one host, one state dir: on each rebalance the old owner closes the
    task's RocksDB before the new owner opens it, and the new owner finds the state on disk."""
    _fresh(kafka)
    events = generate.events("trip_stats", 12_000, seed=10)
    state = tmp_path / "shared"
    a = workers("trip_stats", kafka, state_dir=state)
    a.wait_assigned()
    produce(kafka, events[:4_000])
    wait_drained(kafka, "trip_stats", ["rides", *REPARTITION])
    b = workers("trip_stats", kafka, state_dir=state)      # takes half of a's tasks
    _wait_split(a, b)
    produce(kafka, events[4_000:8_000])
    wait_drained(kafka, "trip_stats", ["rides", *REPARTITION])
    assert b.terminate() == 0                               # a takes them back
    produce(kafka, events[8_000:])
    wait_drained(kafka, "trip_stats", ["rides", *REPARTITION])
    assert a.terminate() == 0
    for w in (a, b):
        assert "locked" not in w.log() and "Traceback" not in w.log(), w.log()[-3000:]
        assert "restoring" not in w.log(), "state on the shared disk must be reused, not restored"
    _assert_exact(kafka, [state], driver_totals_oracle(events))
