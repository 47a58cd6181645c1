"""`streams tables list|get|reset` against the real broker and a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.devtools import generate
from streams.kafka import admin
from topologies.trip_stats import topology as trip_stats

from tests.conftest import (ROOT, committed_offsets, create_topology_topics, read_topic,
                            delete_topology_topics, produce)
from streams.tables.inspect import task_dirs
from tests.integration.tables_support import (driver_totals_oracle, latest_by_key, local_table,
                                               wait_drained)

pytestmark = pytest.mark.broker

REPARTITION = trip_stats.repartition_topics()
ALL_TOPICS = ["rides", *trip_stats.internal_topics(), "driver-totals"]


def streams_cli(kafka: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMS_BROKER": kafka}
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)


def _snapshot(kafka: str, state: Path) -> dict:
    """Everything a reset may change: group offsets, topic end offsets, local files."""
    ends = {t: admin.run(admin.end_offsets(kafka, t)) for t in ALL_TOPICS}
    files = sorted(str(p.relative_to(state)) for p in state.rglob("*") if p.is_file()
                   and not p.name.startswith("LOG"))
    return {"committed": committed_offsets(kafka, "trip_stats", ["rides", *REPARTITION]),
            "ends": ends, "files": files}


@pytest.fixture
def processed(kafka: str, workers, tmp_path: Path):
    """trip_stats after a worker processed 8k rides and stopped."""
    delete_topology_topics(kafka, trip_stats)
    create_topology_topics(kafka, trip_stats, partitions=4)
    events = generate.events("trip_stats", 8_000, seed=21)
    produce(kafka, events)
    state = tmp_path / "state"
    w = workers("trip_stats", kafka, state_dir=state)
    w.wait_assigned()
    wait_drained(kafka, "trip_stats", ["rides", *REPARTITION])
    assert w.terminate() == 0
    return events, state


def test_list_and_get_against_a_running_worker(kafka: str, workers, processed, tmp_path) -> None:
    events, state = processed
    oracle = driver_totals_oracle(events)
    # Running while we read. No idle progress markers during the test: the worker would
    # consume them and move its repartition offsets between the CLI's read and ours.
    quiet = tmp_path / "quiet.toml"
    quiet.write_text("repartition_idle_ms = 600000\n")
    w = workers("trip_stats", kafka, state_dir=state, args=["--config", str(quiet)])
    w.wait_running()
    some = sorted(oracle)[:5]
    for driver in some:
        got = streams_cli(kafka, "tables", "get", "trip_stats", "driver-totals", driver,
                          "--json", "--state-dir", str(state))
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout) == oracle[driver]
    listed = streams_cli(kafka, "tables", "list", "trip_stats", "--json", "--state-dir", str(state))
    assert listed.returncode == 0, listed.stderr
    infos = {i["table"]: i for i in json.loads(listed.stdout)}
    assert sorted(infos) == ["busy-drivers", "busy-drivers-records", "driver-totals",
                             "rider-sessions", "rides-per-city-1m", "rides-per-city-5m"]
    assert infos["busy-drivers"]["window"] == "sliding 600000 ms, grace 30000 ms"
    info = infos["driver-totals"]
    assert info["kind"] == "aggregate" and info["window"] is None
    assert info["partitions"] == 4
    assert info["changelog"] == "trip_stats-driver-totals-changelog"
    # Small tables are counted exactly (RocksDB's estimate only beyond 200k keys).
    assert info["keys_exact"] and info["keys"] == len(oracle)
    committed = committed_offsets(kafka, "trip_stats", ["trip_stats-rides-by-driver-repartition"])
    assert info["committed_input_offsets"] == {f"{t}:{p}": o
                                               for (t, p), o in sorted(committed.items())}
    assert info["local_input_offsets"] == info["committed_input_offsets"]
    ends = admin.run(admin.end_offsets(kafka, "trip_stats-driver-totals-changelog"))
    assert {int(k): v for k, v in info["changelog_end_offsets"].items()} == ends
    assert info["bytes_on_disk"] > 0
    # Windowed tables: the spec, and the windows still open (closed ones are deleted).
    one_min = infos["rides-per-city-1m"]
    assert one_min["kind"] == "window" and one_min["window"] == "tumbling 60000 ms, grace 30000 ms"
    assert 0 < one_min["windows"] <= 8 * 3 and one_min["keys"] <= 8  # 8 cities, <= 90 s open
    assert infos["rider-sessions"]["window"] == "session gap 1800000 ms, grace 30000 ms"
    text = streams_cli(kafka, "tables", "list", "--state-dir", str(state))
    assert text.returncode == 0 and "trip_stats/driver-totals" in text.stdout
    assert "windows: hopping 300000 ms every 60000 ms, grace 30000 ms;" in text.stdout
    city = events[-1][1]
    got = streams_cli(kafka, "tables", "get", "trip_stats", "rides-per-city-5m", city, "--json",
                      "--state-dir", str(state))
    assert got.returncode == 0, got.stderr
    windows = [json.loads(line) for line in got.stdout.splitlines()]
    assert windows and all(w["window_end"] - w["window_start"] == 300_000 and
                           w["value"]["city"] == city for w in windows)
    assert [w["window_start"] for w in windows] == sorted(w["window_start"] for w in windows)
    assert w.running
    assert w.terminate() == 0


@pytest.mark.parametrize("args, message", [
    (["tables", "get", "nope", "t", "k"], "unknown topology"),
    (["tables", "get", "trip_stats", "nope", "k"], "has no table"),
    (["tables", "get", "trip_stats", "driver-totals", "no-such-driver"], "not found"),
    (["tables", "reset", "trip_stats", "nope", "--dry-run"], "has no table"),
])
def test_cli_errors_are_one_line(kafka: str, processed, args: list[str], message: str) -> None:
    _, state = processed
    res = streams_cli(kafka, *args, "--state-dir", str(state))
    assert res.returncode != 0
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_no_broker_is_one_line(tmp_path: Path) -> None:
    res = streams_cli("127.0.0.1:1", "tables", "list", "trip_stats", "--state-dir", str(tmp_path))
    assert res.returncode != 0
    assert "broker" in res.stderr.lower() and len(res.stderr.strip().splitlines()) == 1


def test_reset_dry_run_changes_nothing(kafka: str, processed) -> None:
    _, state = processed
    before = _snapshot(kafka, state)
    res = streams_cli(kafka, "tables", "reset", "trip_stats", "--dry-run",
                      "--state-dir", str(state))
    assert res.returncode == 0, res.stderr
    assert "trip_stats-driver-totals-changelog" in res.stdout and "rides" in res.stdout
    assert "dry run" in res.stdout
    assert _snapshot(kafka, state) == before


def test_reset_refuses_with_a_live_worker(kafka: str, workers, processed) -> None:
    _, state = processed
    w = workers("trip_stats", kafka, state_dir=state)
    w.wait_assigned()
    before = _snapshot(kafka, state)
    res = streams_cli(kafka, "tables", "reset", "trip_stats", "--state-dir", str(state))
    assert res.returncode != 0
    assert "live member" in res.stderr
    # The live worker itself may still move its offsets on (upstream progress markers on the
    # repartition topics); a reset would have moved them back to the beginning.
    after = _snapshot(kafka, state)["committed"]
    assert set(after) == set(before["committed"])
    assert all(after[tp] >= off for tp, off in before["committed"].items()), (before, after)
    assert w.terminate() == 0


def test_reset_then_rerun_gives_the_same_tables(kafka: str, workers, processed) -> None:
    events, state = processed
    first = local_table(state)
    assert first == driver_totals_oracle(events)
    res = streams_cli(kafka, "tables", "reset", "trip_stats", "--state-dir", str(state))
    assert res.returncode == 0, res.stderr
    assert not task_dirs(state, trip_stats, "driver-totals"), "local state must be deleted"
    assert admin.run(admin.end_offsets(kafka, "trip_stats-driver-totals-changelog")) == \
        {p: 0 for p in range(4)}, "changelog must be recreated empty"
    assert all(o == 0 for o in committed_offsets(kafka, "trip_stats", ["rides"]).values())
    w = workers("trip_stats", kafka, state_dir=state)
    w.wait_assigned()
    wait_drained(kafka, "trip_stats", ["rides", *REPARTITION])
    assert w.terminate() == 0
    assert local_table(state) == first


def test_reset_on_another_host_wipes_this_hosts_state_on_open(kafka: str, workers, processed,
                                                               tmp_path: Path) -> None:
    """`tables reset` deletes local state only where it runs. A worker on another host finds its
    changelog positions beyond the recreated (empty) changelog, wipes its state and rebuilds it,
    so the changelog again holds every key (a later restore is complete)."""
    events, state = processed           # this host's state, from before the reset
    elsewhere = tmp_path / "other-host"
    res = streams_cli(kafka, "tables", "reset", "trip_stats", "--state-dir", str(elsewhere))
    assert res.returncode == 0, res.stderr
    assert task_dirs(state, trip_stats, "driver-totals"), "this host still has its old state"
    w = workers("trip_stats", kafka, state_dir=state)
    w.wait_assigned()
    wait_drained(kafka, "trip_stats", ["rides", *REPARTITION])
    assert w.terminate() == 0
    assert "wipe: changelog is behind local state" in w.log()
    oracle = driver_totals_oracle(events)
    assert local_table(state) == oracle
    changelog = read_topic(kafka, "trip_stats-driver-totals-changelog", idle=0.5)
    assert latest_by_key(changelog) == oracle


def test_repartition_topics_never_expire_by_time(kafka: str, processed) -> None:
    """Repartition records carry event time: time retention would delete old events before the
    downstream task reads them, so the topic must have no time retention."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    async def config() -> dict:
        client = AIOKafkaAdminClient(bootstrap_servers=kafka)
        await client.start()
        try:
            (resp,) = await client.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, REPARTITION[0])])
            return {entry[0]: entry[1] for entry in resp.resources[0][4]}
        finally:
            await client.close()

    assert admin.run(config())["retention.ms"] == "-1"
