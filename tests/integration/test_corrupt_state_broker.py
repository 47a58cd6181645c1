"""Corrupt local state against the real broker: the worker recognises it when it opens the
task, logs one line naming the directory, wipes the state and restores it from the changelog,
and goes on counting from where the changelog says (Kafka Streams' TaskCorruptedException)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from streams.state.store import TaskStore

from .eos_support import (InProcessWorker, counting_topology, counts_by_key, create_topics,
                          delete_topics, eos_settings, produce, read_all, wait_for)


def _events(start: int, n: int) -> list[tuple[str, dict]]:
    return [(f"k{i % 4}", {"seq": i}) for i in range(start, start + n)]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_corrupt_state_is_wiped_and_restored_from_the_changelog(
        kafka: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, guarantee: str) -> None:
    """Formerly the open failed with "IO error: ... MANIFEST-999999" (or, for damaged table
    files, "... is locked by another process" after 30 s of retries), on every restart."""
    topology, source, sink = counting_topology()
    create_topics(kafka, topology, 2)
    settings = eos_settings(kafka, tmp_path / "state", processing_guarantee=guarantee)
    state = tmp_path / "state" / topology.name

    async def run(start: int, total: int) -> None:
        await produce(kafka, source, _events(start, 40))
        async with InProcessWorker(topology, settings) as worker:
            async def done() -> bool:
                return (worker._fatal is not None  # noqa: SLF001 - fail fast
                        or len(await read_all(kafka, sink)) >= total)
            await wait_for(done, 60, f"{total} outputs")
            assert worker._fatal is None, worker._fatal  # noqa: SLF001

    try:
        asyncio.run(run(0, 40))
        damaged = sorted(p for p in state.iterdir() if (p / "CURRENT").exists())
        assert len(damaged) == 2
        for task_dir in damaged:
            (task_dir / "CURRENT").write_text("MANIFEST-999999\n")
        with caplog.at_level(logging.WARNING, logger="streams.runtime.task_manager"):
            asyncio.run(run(40, 80))
        out = asyncio.run(read_all(kafka, sink))
    finally:
        delete_topics(kafka, topology)
    # restored, not started afresh: each key's count goes on 1..20 without a gap or repeat
    # (at-least-once may repeat outputs, never counts: the state holds its input offsets)
    assert {k: sorted(set(ns)) for k, ns in counts_by_key(out).items()} == {
        f"k{i}": list(range(1, 21)) for i in range(4)}
    lines = [r.getMessage() for r in caplog.records if "is corrupt" in r.getMessage()]
    assert len(lines) == 2, lines
    for task_dir in damaged:
        (line,) = [m for m in lines if f"state in {task_dir} is corrupt" in m]
        assert "MANIFEST-999999" in line and "wiped, restoring it from the changelog" in line
        assert "\n" not in line


def test_full_disk_at_the_final_commit_is_one_line(kafka: str, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Formerly a traceback (rocksdict's plain "IO error: No space left on device")."""
    topology, source, sink = counting_topology()
    create_topics(kafka, topology, 1)
    settings = eos_settings(kafka, tmp_path / "state", processing_guarantee="at_least_once",
                            partitions=1, commit_interval_ms=600_000)

    def disk_full(self: TaskStore, batch: object) -> None:
        raise self.failed(Exception(f"IO error: No space left on device: While appending to "
                                    f"file: {self.path}/000012.log: No space left on device"))

    async def run() -> None:
        await produce(kafka, source, _events(0, 8))
        async with InProcessWorker(topology, settings):
            async def done() -> bool:
                return len(await read_all(kafka, sink)) >= 8
            await wait_for(done, 60, "8 outputs")
            monkeypatch.setattr(TaskStore, "_write", disk_full)

    try:
        with caplog.at_level(logging.ERROR, logger="streams.runtime.worker"):
            asyncio.run(run())
    finally:
        monkeypatch.undo()
        delete_topics(kafka, topology)
    (record,) = [r for r in caplog.records if "final commit failed" in r.getMessage()]
    assert record.exc_info is None  # no traceback
    message = record.getMessage()
    assert f"state directory {tmp_path / 'state' / topology.name}" in message
    assert "no space left on device" in message and "\n" not in message
