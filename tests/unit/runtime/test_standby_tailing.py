"""A standby task applies only the changelog records of finished commits (their input offsets
committed by the active), stops at the first unfinished one, and keeps its progress in the
store's meta so that a promotion restores only the rest."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from streams.state.meta import OFFSETS_HEADER, TaskId, TaskMeta, decode_upstream, encode_offsets
from streams.state.recovery import decide_open
from streams.state.store import TaskStore
from streams.runtime.standby import StandbyTask

INPUT = ("in", 0)
CHANGELOG = "app-t-changelog"


def record(offset: int, key: str, value: str, committed_at: int) -> SimpleNamespace:
    """A changelog record of the commit that reached input offset ``committed_at``."""
    headers = [(OFFSETS_HEADER, encode_offsets({INPUT: committed_at}))]
    return SimpleNamespace(offset=offset, key=key.encode(), value=value.encode(), headers=headers)


def test_a_standby_applies_finished_commits_only(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "s_0", ["t"])
    task = StandbyTask(TaskId("s", 0), store, {CHANGELOG: "t"}, [INPUT], "shape", TaskMeta())
    records = [record(0, "a", "1", 10), record(1, "b", "1", 10), record(2, "a", "2", 20)]
    task.add(CHANGELOG, records, 3)
    assert task.apply({}) == 0                       # nothing committed yet
    assert task.apply({INPUT: 10}) == 2              # the first commit finished
    assert store.get("t", b"a") == b"1" and store.get("t", b"b") == b"1"
    assert task.positions == {CHANGELOG: 2} and task.waiting
    meta = TaskMeta.decode(store.meta())
    assert meta.changelog == {CHANGELOG: 2} and meta.offsets == {}
    # promotion now (the active died before committing 20): restore only the tail
    decision = decide_open(meta, {INPUT: 10}, {CHANGELOG: 3})
    assert decision.action == "restore" and decision.restore_from == {CHANGELOG: 2}
    assert task.apply({INPUT: 20}) == 1
    assert store.get("t", b"a") == b"2" and not task.waiting
    assert task.positions == {CHANGELOG: 3}
    decision = decide_open(TaskMeta.decode(store.meta()), {INPUT: 20}, {CHANGELOG: 3})
    assert decision.action == "resume" and decision.resume_offsets == {INPUT: 20}
    assert not decision.finish_commit
    store.close()


def test_fetched_records_below_the_position_are_not_applied_twice(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "s_0", ["t"])
    local = TaskMeta(changelog={CHANGELOG: 2}, upstream=decode_upstream(b"{}"))
    task = StandbyTask(TaskId("s", 0), store, {CHANGELOG: "t"}, [INPUT], "shape", local)
    task.add(CHANGELOG, [record(1, "a", "old", 5), record(2, "a", "new", 5)], 3)
    assert task.apply({INPUT: 5}) == 1 and store.get("t", b"a") == b"new"
    store.close()
