"""Exactly-once commits against the real broker: an injected failure between produce and commit
aborts the transaction without a trace, processing continues, the changelog positions taken
after a transactional commit match the changelog's end (so a restart resumes without a
restore), and a task's producer is fenced by the next owner of the task."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from streams.kafka import admin
from streams.runtime.task import Output
from streams.runtime.transactions import FAIL_COMMIT_ENV, TaskTransactions, classify
from streams.state.meta import TaskId, TaskMeta
from streams.state.recovery import decide_open
from streams.state.store import TaskStore

from tests.integration.eos_support import (InProcessWorker, counting_topology, counts_by_key,
                                           create_topics, delete_topics, eos_settings, produce,
                                           read_all, wait_for)

pytestmark = pytest.mark.broker

KEYS = [f"k{i}" for i in range(12)]


def events(start: int, n: int) -> list[tuple[str, dict[str, Any]]]:
    return [(KEYS[i % len(KEYS)], {"seq": i}) for i in range(start, start + n)]


def expected_counts(n: int) -> dict[str, list[int]]:
    """The oracle: key k's outputs are 1..(number of events with key k), once each."""
    per: dict[str, int] = {}
    for key, _ in events(0, n):
        per[key] = per.get(key, 0) + 1
    return {k: list(range(1, c + 1)) for k, c in per.items()}


def sorted_counts(records: list[Any]) -> dict[str, list[int]]:
    return {k: sorted(v) for k, v in counts_by_key(records).items()}


def local_positions_match_ends(kafka: str, state_root: Path, changelog: str) -> list[str]:
    """For each local task: decide_open's verdict with the group's offsets and the changelog
    ends as they are now (read_committed); all must be plain resumes."""
    verdicts = []
    ends = admin.run(admin.end_offsets(kafka, changelog))
    for path in sorted(p for p in state_root.iterdir() if p.is_dir()):
        store = TaskStore(path, ["counts"], read_only=True)
        try:
            meta = TaskMeta.decode(store.meta())
        finally:
            store.close()
        part = int(path.name.rsplit("_", 1)[1])
        decision = decide_open(meta, dict(meta.offsets), {changelog: ends[part]})
        verdicts.append(f"{decision.action}:{decision.reason}")
    return verdicts


def test_injected_abort_leaves_no_trace_and_processing_continues(
        kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    topology, source, sink = counting_topology()
    create_topics(kafka, topology, 2)
    settings = eos_settings(kafka, tmp_path / "state")
    changelog = topology.stores["counts"].changelog

    async def first_run() -> dict[str, float]:
        monkeypatch.setenv(FAIL_COMMIT_ENV, "*")
        await produce(kafka, source, events(0, 300))
        async with InProcessWorker(topology, settings) as worker:
            async def done() -> bool:
                return len(await read_all(kafka, sink)) >= 300
            await wait_for(done, 90, "300 committed outputs")
            monkeypatch.delenv(FAIL_COMMIT_ENV)
        results = worker.metrics.transactions
        return {r: results.labels(topology.name, r)._value.get()
                for r in ("committed", "aborted", "fenced")}

    async def second_run() -> None:
        await produce(kafka, source, events(300, 120))
        async with InProcessWorker(topology, settings):
            async def done() -> bool:
                return len(await read_all(kafka, sink)) >= 420
            await wait_for(done, 90, "420 committed outputs")

    try:
        counters = asyncio.run(first_run())
        committed = asyncio.run(read_all(kafka, sink))
        everything = asyncio.run(read_all(kafka, sink, committed=False))
        assert counters["aborted"] == 1 and counters["committed"] >= 1, counters
        # The aborted transaction's records reached the log but no read_committed reader
        # sees them: exactly one output per event.
        assert len(everything) > len(committed)
        assert sorted_counts(committed) == expected_counts(300)
        assert len(committed) == 300
        # After transactional commits, local positions == the changelog's end (markers
        # counted): a restart resumes without restoring.
        assert all(v.startswith("resume") for v in
                   local_positions_match_ends(kafka, tmp_path / "state" / topology.name,
                                              changelog)), "positions != changelog ends"
        asyncio.run(second_run())
        committed = asyncio.run(read_all(kafka, sink))
        assert sorted_counts(committed) == expected_counts(420)
        assert len(committed) == 420
    finally:
        delete_topics(kafka, topology)


class _FakeTask:
    """The commit interface of a stateless task, for driving TaskTransactions directly."""

    def __init__(self, task_id: TaskId, topic: str) -> None:
        self.id = task_id
        self.offsets: dict[tuple[str, int], int] = {}
        self.outputs: list[Output] = []
        self.topic = topic

    def take_outputs(self) -> list[Output]:
        out, self.outputs = self.outputs, []
        return out

    def prepare_commit(self) -> list[Output]:
        return []

    def write_commit(self, positions: Any = None) -> None:
        pass


def test_next_owner_fences_the_previous_producer(kafka: str) -> None:
    topology, source, sink = counting_topology()
    create_topics(kafka, topology, 2)
    task_id = TaskId("0", 0)

    def emit(task: _FakeTask, tag: str, offset: int) -> None:
        task.outputs = [Output(sink, 0, tag.encode(), json.dumps({"by": tag}).encode(), None, [])]
        task.offsets = {(source, 0): offset}

    async def scenario() -> tuple[Any, Any]:
        old = TaskTransactions(topology.name, topology.name, kafka, transaction_timeout_ms=60000,
                               commit_timeout_s=20)
        new = TaskTransactions(topology.name, topology.name, kafka, transaction_timeout_ms=60000,
                               commit_timeout_s=20)
        a, b = _FakeTask(task_id, source), _FakeTask(task_id, source)
        try:
            await old.open(task_id)
            emit(a, "old-1", 1)
            first = await old.commit([a])
            assert not first.failed, first.failed
            await new.open(task_id)          # the task moved: init_transactions fences `old`
            emit(a, "zombie", 2)
            zombie = await old.commit([a])
            emit(b, "new-1", 2)
            fresh = await new.commit([b])
            assert not fresh.failed, fresh.failed
            return zombie, fresh
        finally:
            await old.close_all()
            await new.close_all()

    try:
        zombie, _ = asyncio.run(scenario())
        assert list(zombie.failed) == [task_id]
        assert classify(zombie.failed[task_id]) == "fenced", zombie.failed[task_id]
        tags = [r.key.decode() for r in asyncio.run(read_all(kafka, sink))]
        assert tags == ["old-1", "new-1"]
        committed = admin.run(admin.committed_offsets(kafka, topology.name, [source]))
        assert committed.get((source, 0)) == 2
    finally:
        delete_topics(kafka, topology)


PRIVATE_PORT = 19392  # a broker of this test alone (the shared one must never stop)


def test_broker_stopped_mid_stream_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    from streams.devtools import broker

    kafka = broker.start(PRIVATE_PORT, verbose=False)
    topology, source, sink = counting_topology()
    settings = eos_settings(kafka, tmp_path / "state", commit_interval_ms=500)
    try:
        create_topics(kafka, topology, 2)

        async def scenario() -> None:
            await produce(kafka, source, events(0, 40000))
            async with InProcessWorker(topology, settings):
                async def started() -> bool:
                    return len(await read_all(kafka, sink)) >= 1000
                await wait_for(started, 90, "the first committed outputs")
                # Stop the broker while input is still being processed.
                await asyncio.to_thread(broker.stop, PRIVATE_PORT)
                await asyncio.sleep(10)
                await asyncio.to_thread(broker.start, PRIVATE_PORT, 90.0, False)
                await produce(kafka, source, events(40000, 2000))

                async def done() -> bool:
                    return len(await read_all(kafka, sink)) >= 42000
                await wait_for(done, 150, "42000 committed outputs", poll=2)

        asyncio.run(scenario())
        committed = asyncio.run(read_all(kafka, sink))
        assert sorted_counts(committed) == expected_counts(42000)
        assert len(committed) == 42000
    finally:
        broker.stop(PRIVATE_PORT)
        broker.wipe(PRIVATE_PORT)
