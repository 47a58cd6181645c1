"""The command line against the real broker: `consume` counts records (not offsets) on a
transactional topic, shows headers/timestamps, reads one partition from an offset, follows;
`tables reset --dry-run` asks the broker; `tables list` with no topics yet."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from click.testing import CliRunner

from streams.cli import main
from streams.kafka import admin
from streams.kafka.admin import TopicSpec

from tests.conftest import ROOT

pytestmark = pytest.mark.broker


def _cli(kafka: str, *args: str) -> Any:
    return CliRunner().invoke(main, [*args, "--broker", kafka])


def _topic(kafka: str, prefix: str, partitions: int = 2) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin.run(admin.ensure_topics(kafka, [TopicSpec(name, partitions)]))
    return name


def test_count_skips_transaction_markers_and_aborted_records(kafka: str) -> None:
    topic = _topic(kafka, "cli-count-txn")

    async def produce() -> None:
        p = AIOKafkaProducer(bootstrap_servers=kafka, transactional_id=f"{topic}-tx")
        await p.start()
        try:
            for batch in range(3):  # 3 committed transactions of 5 records: 15 records
                async with p.transaction():
                    for i in range(5):
                        await p.send(topic, b"v", key=f"k{batch}-{i}".encode())
            await p.begin_transaction()  # one aborted transaction of 4 records
            for i in range(4):
                await p.send(topic, b"gone", key=f"a{i}".encode())
            await p.abort_transaction()
        finally:
            await p.stop()

    asyncio.run(produce())
    offsets = sum(admin.run(admin.end_offsets(kafka, topic)).values())
    assert offsets > 15 + 4  # the markers take offsets of their own
    result = _cli(kafka, "consume", topic, "--count")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{topic}: 15 records in 2 partitions")
    shown = _cli(kafka, "consume", topic, "--limit", "100")
    assert len(shown.output.splitlines()) == 15
    assert "gone" not in shown.output


def test_headers_timestamps_and_one_partition_from_an_offset(kafka: str) -> None:
    topic = _topic(kafka, "cli-consume-headers")

    async def produce() -> None:
        p = AIOKafkaProducer(bootstrap_servers=kafka)
        await p.start()
        try:
            for i in range(6):
                await p.send_and_wait(topic, f"v{i}".encode(), key=b"k", partition=i % 2,
                                      timestamp_ms=1_000 + i,
                                      headers=[("reason", b"decode"), ("error", f"e{i}".encode())])
        finally:
            await p.stop()

    asyncio.run(produce())
    result = _cli(kafka, "consume", topic, "--headers", "--partition", "1", "--offset", "1")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert rows == [{"partition": 1, "offset": off, "timestamp": 1_000 + i, "key": "k",
                     "value": f"v{i}", "headers": {"reason": "decode", "error": f"e{i}"}}
                    for off, i in ((1, 3), (2, 5))]
    assert "headers" not in json.loads(_cli(kafka, "consume", topic, "--limit", "1").output)
    bad = _cli(kafka, "consume", topic, "--partition", "7")
    assert bad.exit_code == 1 and bad.output.strip().startswith("error: topic")


def test_follow_prints_records_as_they_arrive(kafka: str) -> None:
    topic = _topic(kafka, "cli-follow", partitions=1)

    def produce(value: bytes) -> None:
        async def go() -> None:
            p = AIOKafkaProducer(bootstrap_servers=kafka)
            await p.start()
            try:
                await p.send_and_wait(topic, value, key=b"k")
            finally:
                await p.stop()
        asyncio.run(go())

    def next_value(proc: subprocess.Popen[str]) -> Any:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "no record printed within 120 s"
        return json.loads(proc.stdout.readline())["value"]  # type: ignore[union-attr]

    produce(b"early")
    # As from a terminal: Ctrl-C delivered. (A test run started in the background, as CI may
    # start it, ignores SIGINT, and a child inherits that: Python then never raises
    # KeyboardInterrupt, as with nohup.)
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "consume", topic, "--follow",
                             "--broker", kafka], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert next_value(proc) == "early"   # it reads: the interrupt below finds it following
        produce(b"late")
        assert next_value(proc) == "late"    # a record produced after it reached the end
        assert proc.poll() is None           # still following
    finally:
        proc.send_signal(2)  # Ctrl-C: a quiet stop
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("consume --follow did not stop within 120 s of Ctrl-C") from None
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert proc.returncode == 130


def test_list_and_count_before_any_topic_exists(kafka: str, tmp_path: Path) -> None:
    for _ in range(3):  # (the failure depended on the scheduling of aiokafka's start-up)
        result = _cli(kafka, "tables", "list", "--state-dir", str(tmp_path))
        assert result.exit_code == 0, result.output
        missing = _cli(kafka, "consume", f"cli-missing-{uuid.uuid4().hex[:8]}", "--count")
        assert missing.exit_code == 1
        assert missing.output.strip().startswith("error: topic ") and \
            missing.output.strip().endswith("does not exist")


def test_reset_dry_run_says_live_members_would_refuse_it(kafka: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"cli_reset_{uuid.uuid4().hex[:8]}"
    (tmp_path / "cli_reset_pkg.py").write_text(textwrap.dedent(f"""\
        from streams import Topology
        topology = Topology("{name}")
        topology.stream("{name}-in").group_by(lambda v: v).count(name="counts").to("{name}-out")
        """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    ref = "cli_reset_pkg:topology"
    args = ["tables", "reset", ref, "--dry-run", "--state-dir", str(tmp_path / "state")]
    idle = _cli(kafka, *args)
    assert idle.exit_code == 0, idle.output
    assert idle.output.strip().endswith("dry run: nothing changed")
    topic = _topic(kafka, f"{name}-in", partitions=1)

    async def with_member() -> Any:
        c = AIOKafkaConsumer(topic, bootstrap_servers=kafka, group_id=name)
        await c.start()
        try:
            deadline = time.monotonic() + 60
            while not c.assignment() and time.monotonic() < deadline:
                await c.getmany(timeout_ms=200)
            return await asyncio.to_thread(_cli, kafka, *args)
        finally:
            await c.stop()

    busy = asyncio.run(with_member())
    assert busy.exit_code == 1
    assert "reset plan for topology" in busy.output  # the plan, then why it would fail
    assert busy.output.strip().splitlines()[-1] == (
        f"error: consumer group '{name}' has 1 live member(s); stop its workers first (or use "
        "--force) (dry run: nothing changed)")
    down = CliRunner().invoke(main, [*args, "--broker", "127.0.0.1:1"])
    assert down.exit_code == 1
    assert down.output.strip() == ("error: no Kafka broker answers at 127.0.0.1:1 (start one "
                                   "with `streams kafka start` or set STREAMS_BROKER)")


def test_a_worker_says_when_it_has_caught_up_a_backlog(kafka: str, workers,
                                                        tmp_path: Path) -> None:
    from tests.conftest import produce

    name = f"cli_backlog_{uuid.uuid4().hex[:8]}"
    (tmp_path / "cli_backlog_mod.py").write_text(textwrap.dedent(f"""\
        from streams import Topology
        topology = Topology("{name}")
        topology.stream("{name}-in").filter(lambda v: True).to("{name}-out")
        """))
    config = tmp_path / "small-commits.toml"  # several commits while the backlog lasts
    config.write_text("commit_every_records = 500\nmax_batch_records = 500\n")
    _topic(kafka, f"{name}-in", partitions=2)
    produce(kafka, [(f"{name}-in", f"k{i}", {"i": i}) for i in range(10_000)])
    w = workers("cli_backlog_mod:topology", kafka, args=["--config", str(config)],
                extra_env={"PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])})
    deadline = time.monotonic() + 120
    while "caught up:" not in w.log() and time.monotonic() < deadline:
        assert w.running, w.log()[-3000:]
        time.sleep(0.5)
    line = next((x for x in w.log().splitlines() if "caught up:" in x), None)
    assert line is not None, w.log()[-3000:]
    assert "records/s" in line
    assert w.terminate() == 0
