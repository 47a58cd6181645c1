"""Two shapes of one topology never run in one consumer group: a worker whose topology differs
from the one its group runs refuses to start, with one line saying what differs."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest

from streams import Topology
from streams.config import Settings
from streams.runtime.worker import Worker, WorkerFailed

from tests.integration.eos_support import create_topics, delete_topics, wait_for

pytestmark = pytest.mark.broker


def shapes(name: str) -> tuple[Topology, Topology]:
    """The running version, and a clone that adds a table and counts differently."""
    v1 = Topology(name, version="1")
    v1.stream(f"{name}-rides").map(lambda r: {**r, "n": 1}).to(f"{name}-out")
    v2 = Topology(name, version="2")
    (v2.stream(f"{name}-rides").group_by(lambda r: r["driver_id"], name="by-driver")
       .aggregate(lambda: 0, lambda total, r: total + 100, name="bonus").to(f"{name}-out"))
    return v1, v2


def test_a_worker_with_another_shape_refuses_to_join_the_group(
        kafka: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    name = f"shape_{uuid.uuid4().hex[:8]}"
    v1, v2 = shapes(name)

    def settings(state: str) -> Settings:
        return Settings(broker=kafka, state_dir=str(tmp_path / state), partitions=2,
                        session_timeout_ms=6000, metrics_port=-1)

    create_topics(kafka, v2, 2)
    running, clone = Worker(v1, settings("a")), Worker(v2, settings("b"))

    async def scenario() -> None:
        first = asyncio.ensure_future(running.run())
        try:
            async def assigned() -> bool:
                return bool(running.tasks and len(running.tasks.running) == 2)
            await wait_for(assigned, 60, "the first worker's assignment")
            with pytest.raises(WorkerFailed) as refused:
                await asyncio.wait_for(clone.run(), 60)
            why = str(refused.value)
            assert f"topology {name!r} differs from the version its consumer group runs" in why
            assert "version '2' (group: '1')" in why and "tables +bonus (aggregate)" in why
            assert "README: rolling out a new version" in why
            # the running worker keeps every partition
            await wait_for(assigned, 60, "the first worker's assignment after the refusal")
            assert not first.done()
        finally:
            running.stop()
            await asyncio.wait_for(first, 60)

    try:
        with caplog.at_level(logging.ERROR, logger="streams.runtime.worker"):
            asyncio.run(scenario())
        lines = [r.getMessage() for r in caplog.records if "differs from the version" in
                 r.getMessage() and r.getMessage().startswith("fatal:")]
        assert len(lines) == 1 and "\n" not in lines[0], lines
    finally:
        delete_topics(kafka, v1)
        delete_topics(kafka, v2)
