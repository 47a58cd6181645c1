"""Idle close: the timing logic (an injected clock) and how the worker applies it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams import Topology
from streams.config import Settings, load_settings
from streams.runtime.idle import IdleTracker
from streams.metrics import Metrics
from streams.runtime.processing import Processing


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def tick(self, ms: float) -> None:
        self.t += ms / 1000


def tracker(idle_ms: int = 5000, check_every_ms: int = 100) -> tuple[IdleTracker, Clock]:
    clock = Clock()
    return IdleTracker(idle_ms, clock=clock, check_every_ms=check_every_ms), clock


def test_disabled_by_default_and_never_due() -> None:
    assert Settings().idle_close_ms == 0
    assert load_settings().idle_close_ms == 0  # config/defaults.toml has the entry
    t, clock = tracker(idle_ms=0)
    assert not t.enabled
    t.seen("a")
    clock.tick(10**9)
    assert t.due(["a"]) == []


def test_negative_idle_is_refused() -> None:
    with pytest.raises(ValueError):
        IdleTracker(-1)


def test_quiet_task_advances_by_the_whole_quiet_period_then_by_the_time_since() -> None:
    t, clock = tracker(idle_ms=5000, check_every_ms=0)
    t.seen("a")
    clock.tick(4999)
    assert t.due(["a"]) == []              # not idle yet
    clock.tick(1)
    assert t.due(["a"]) == [("a", 5000)]   # the wall time since its last record
    clock.tick(250)
    assert t.due(["a"]) == [("a", 250)]    # then what passed since the previous advance
    clock.tick(1000)
    assert t.due(["a"]) == [("a", 1000)]


def test_input_resets_the_quiet_period() -> None:
    t, clock = tracker(idle_ms=5000)
    t.seen("a")
    clock.tick(6000)
    assert t.due(["a"]) == [("a", 6000)]
    clock.tick(500)
    t.seen("a")                            # a record: busy again
    clock.tick(4000)
    assert t.due(["a"]) == []
    clock.tick(1000)
    assert t.due(["a"]) == [("a", 5000)]   # counted from the record, not from the last advance


def test_each_task_has_its_own_clock() -> None:
    t, clock = tracker(idle_ms=1000)
    t.seen("a")
    clock.tick(600)
    t.seen("b")
    clock.tick(400)
    assert t.due(["a", "b"]) == [("a", 1000)]
    clock.tick(600)
    assert sorted(t.due(["a", "b"])) == [("a", 600), ("b", 1000)]


def test_checks_at_most_every_check_interval() -> None:
    t, clock = tracker(idle_ms=1000, check_every_ms=100)
    t.seen("a")
    clock.tick(1000)
    assert t.due(["a"]) == [("a", 1000)]
    clock.tick(50)
    assert t.due(["a"]) == []              # too soon after the last check: nothing computed
    clock.tick(50)
    assert t.due(["a"]) == [("a", 100)]    # and no wall time is lost by the skipped check


def test_fractions_of_a_millisecond_are_not_lost() -> None:
    t, clock = tracker(idle_ms=1000, check_every_ms=0)
    t.seen("a")
    clock.tick(1000)
    assert t.due(["a"]) == [("a", 1000)]
    total = 0
    for _ in range(1000):
        clock.tick(0.4)
        total += sum(ms for _, ms in t.due(["a"]))
    assert total in (399, 400)             # not 0: the 0.4 ms steps add up


def test_a_task_first_seen_in_due_starts_its_quiet_period_then() -> None:
    """A task that started without input (e.g. restored after a restart) is idle after
    idle_ms from when it was first seen running."""
    t, clock = tracker(idle_ms=1000, check_every_ms=0)
    assert t.due(["r"]) == []
    clock.tick(999)
    assert t.due(["r"]) == []
    clock.tick(1)
    assert t.due(["r"]) == [("r", 1000)]


def test_tasks_no_longer_running_are_forgotten() -> None:
    t, clock = tracker(idle_ms=1000)
    t.seen("a")
    clock.tick(500)
    assert t.due([]) == []                 # "a" was revoked
    clock.tick(500)
    assert t.due(["a"]) == []              # back again: a fresh quiet period from now
    clock.tick(1000)
    assert t.due(["a"]) == [("a", 1000)]


# -- the worker applies it ------------------------------------------------------------------------
class FakeTask:
    def __init__(self, stream_time: int) -> None:
        self.stream_time = stream_time
        self.advanced: list[int] = []
        self.outputs: list[Any] = []
        self.dead_letters: dict = {}
        self.dropped: dict = {}
        self.late: dict = {}

    def advance_stream_time(self, ts: int) -> bool:
        if ts <= self.stream_time:
            return False
        self.advanced.append(ts)
        self.stream_time = ts
        self.outputs.append(("closed-window", ts))
        return True

    def take_outputs(self) -> list[Any]:
        out, self.outputs = self.outputs, []
        return out


class FakeTasks:
    def __init__(self, running: dict[str, FakeTask]) -> None:
        self.running = running
        self.sent: list[Any] = []

    async def send(self, task: FakeTask) -> None:
        self.sent.extend(task.take_outputs())


def test_worker_advances_idle_tasks_that_have_a_stream_time_and_sends_their_outputs() -> None:
    t = Topology("idle-unit")
    t.stream("idle-in").to("idle-out")
    clock = Clock()
    busy, quiet, empty = FakeTask(10_000), FakeTask(50_000), FakeTask(-1)
    tasks = FakeTasks({"busy": busy, "quiet": quiet, "empty": empty})
    worker = Processing(Metrics(t.name), None, tasks, IdleTracker(2000, clock=clock),  # type: ignore
                        repartition_idle_ms=2000)
    for name in ("busy", "quiet", "empty"):
        worker.idle.seen(name)
    clock.tick(1500)
    worker.idle.seen("busy")
    clock.tick(500)
    asyncio.run(worker.idle_close())
    assert quiet.advanced == [52_000]      # stream time + the 2 s of quiet
    assert busy.advanced == [] and empty.advanced == [] and empty.stream_time == -1
    assert tasks.sent == [("closed-window", 52_000)]
    clock.tick(300)
    asyncio.run(worker.idle_close())
    assert quiet.advanced == [52_000, 52_300]
