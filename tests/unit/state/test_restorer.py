"""All restoring tasks are read together by one consumer; progress is logged per table and the
remaining-records gauge is the sum over the tasks."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, NamedTuple

from aiokafka import TopicPartition

from streams.state.meta import OFFSETS_HEADER, TaskMeta, encode_offsets
from streams.state.recovery import OpenDecision, Restoration
from streams.state.restorer import ChangelogRestorer, RestoreProgress
from streams.state.store import TaskStore

CHANGELOG = "app-counts-changelog"


class Rec(NamedTuple):
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


class FakeConsumer:
    """Changelog partitions in memory; hands out at most ``per_partition`` records of each
    assigned partition per getmany, and remembers what each call asked for."""

    def __init__(self, logs: dict[TopicPartition, list[Rec]], per_partition: int) -> None:
        self.logs = logs
        self.per_partition = per_partition
        self.pos: dict[TopicPartition, int] = {}
        self.calls: list[set[TopicPartition]] = []
        self.assigns = 0

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigns += 1
        self.pos = {tp: 0 for tp in tps}

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self.pos[tp] = 0

    def pause(self, *tps: TopicPartition) -> None:
        pass

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.pos[tp] = offset

    async def getmany(self, *tps: TopicPartition, timeout_ms: int = 0,
                      max_records: int = 0) -> dict[TopicPartition, list[Rec]]:
        self.calls.append(set(tps))
        out = {}
        for tp in tps:
            start = self.pos[tp]
            recs = self.logs[tp][start:start + self.per_partition]
            self.pos[tp] = start + len(recs)
            if recs:
                out[tp] = recs
        return out

    async def position(self, tp: TopicPartition) -> int:
        return self.pos[tp]


def changelog(partition: int, n: int) -> list[Rec]:
    header = ((OFFSETS_HEADER, encode_offsets({("in", partition): 1})),)
    return [Rec(i, b"k%d-%d" % (partition, i), b"%d" % i, header) for i in range(n)]


def restoration(store: TaskStore, partition: int, end: int) -> Restoration:
    decision = OpenDecision("wipe", "test", restore_from={CHANGELOG: 0})
    return Restoration(f"0_{partition}", store, {CHANGELOG: "counts"}, partition, decision,
                       TaskMeta(), {("in", partition): 1}, {CHANGELOG: end}, [("in", partition)],
                       "")


def test_tasks_restore_together_with_one_assignment(tmp_path: Path) -> None:
    sizes = {0: 50, 1: 30}
    logs = {TopicPartition(CHANGELOG, p): changelog(p, n) for p, n in sizes.items()}
    consumer = FakeConsumer(logs, per_partition=10)
    stores = {p: TaskStore(tmp_path / str(p), ["counts"]) for p in sizes}
    try:
        restoring = {p: restoration(stores[p], p, n) for p, n in sizes.items()}
        restorer = ChangelogRestorer(consumer)
        polls = 0
        while restoring:
            asyncio.run(restorer.poll(restoring))
            polls += 1
            restoring = {p: r for p, r in restoring.items() if not r.done}
        both = {TopicPartition(CHANGELOG, 0), TopicPartition(CHANGELOG, 1)}
        # every fetch covered every unfinished task (not one task after the other) ...
        assert consumer.calls[:3] == [both, both, both]
        assert polls == 5
        # ... and the assignment changed only when a task finished (the consumer keeps its
        # prefetched data between polls)
        assert consumer.assigns == 2
        for p, n in sizes.items():
            assert dict(stores[p].items("counts")) == {b"k%d-%d" % (p, i): b"%d" % i
                                                       for i in range(n)}
            assert TaskMeta.decode(stores[p].meta()).changelog == {CHANGELOG: n}
    finally:
        for store in stores.values():
            store.close()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_and_remaining_gauge(tmp_path: Path, caplog: Any) -> None:
    sizes = {0: 40, 1: 20}
    logs = {TopicPartition(CHANGELOG, p): changelog(p, n) for p, n in sizes.items()}
    consumer = FakeConsumer(logs, per_partition=10)
    clock = Clock()
    gauge: dict[str, list[int]] = {}
    progress = RestoreProgress(lambda table, n: gauge.setdefault(table, []).append(n),
                               every_s=5.0, clock=clock)
    stores = {p: TaskStore(tmp_path / str(p), ["counts"]) for p in sizes}
    caplog.set_level(logging.INFO, logger="streams.state.restorer")
    try:
        restoring = {p: restoration(stores[p], p, n) for p, n in sizes.items()}
        restorer = ChangelogRestorer(consumer, progress)
        while restoring:
            clock.now += 3.0
            asyncio.run(restorer.poll(restoring))
            restoring = {p: r for p, r in restoring.items() if not r.done}
        progress.update(())
    finally:
        for store in stores.values():
            store.close()
    # The gauge is the sum over both tasks after each fetch: 60 at first, 0 at the end.
    assert gauge["counts"][0] == 60
    assert 40 in gauge["counts"]  # (after the first fetch of both: 30 + 10)
    assert gauge["counts"][-1] == 0
    lines = [r.getMessage() for r in caplog.records]
    progress_lines = [m for m in lines if "restoring:" in m]
    assert progress_lines, lines
    assert progress_lines[0].startswith("table counts: restoring: 33% (20 records restored, "
                                        "40 remaining")
    assert "remaining" in progress_lines[0] and "records/s" in progress_lines[0]
    assert "left" in progress_lines[0]
    done = [m for m in lines if m.startswith("table counts: restoring: 100% done, 60 ")]
    assert len(done) == 1, lines
