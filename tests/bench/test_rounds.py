"""The benchmarks' shared helpers (tests/bench/rounds.py), without a broker::

    python -m pytest -q tests/bench/test_rounds.py
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NotCoordinatorError,
    RequestTimedOutError,
)

from tests.bench.rounds import RunInfo, add_run_options, delete_groups_with, round_orders, spread
from tests.bench.saturation import BacklogTooSmall, Saturation, measure


def test_every_round_runs_every_variant_once_and_each_variant_leads_once() -> None:
    orders = round_orders(["a", "b", "c"], 3)
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert all(sorted(o) == ["a", "b", "c"] for o in orders)
    assert sorted(o[0] for o in orders) == ["a", "b", "c"]
    # every variant takes every position once
    assert all(sorted(o[i] for o in orders) == ["a", "b", "c"] for i in range(3))
    assert round_orders(["x", "y"], 3) == [["x", "y"], ["y", "x"], ["x", "y"]]


def test_spread_is_median_and_min_max() -> None:
    assert spread([3.0, 1.0, 10.0]) == {"median": 3.0, "min": 1.0, "max": 10.0}
    assert spread([2.0, 4.0]) == {"median": 3.0, "min": 2.0, "max": 4.0}


def test_run_options_default_to_three_rounds_and_a_fresh_dir_per_run(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_run_options(parser, tmp_path / "default.json")
    args = parser.parse_args(["--work-dir", str(tmp_path / "parent")])
    assert args.repeat == 3 and args.results == str(tmp_path / "default.json")
    one = RunInfo.start(args, "x-", log=lambda _m: None)
    two = RunInfo.start(args, "x-", log=lambda _m: None)
    assert one.work != two.work
    assert one.work.parent == two.work.parent == tmp_path / "parent"
    one.order(["a", "b"])
    doc = one.finish()
    assert doc["round_orders"] == ["a b", "b a", "a b"]
    assert set(doc["load_average_1_5_15_min"]) == {"start", "end"}
    assert doc["scratch_dir"] == str(one.work)


class FakeAdmin:
    """Answers find_coordinator / DeleteGroups from a script: an exception to raise or an
    error code to return, one entry per attempt."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.attempts = 0

    async def find_coordinator(self, group: str) -> int:
        self.attempts += 1
        step = self.script.pop(0) if self.script else 0
        if isinstance(step, BaseException):
            raise step
        self._code = step
        return 1

    async def _send_request(self, request: Any, node: int) -> Any:
        return SimpleNamespace(results=[("g", self._code)])


def _delete(client: FakeAdmin, timeout: float = 5.0) -> None:
    asyncio.run(delete_groups_with(client, ["g"], timeout=timeout, pause=0.001))


def test_group_deletion_waits_while_the_coordinator_is_not_available() -> None:
    client = FakeAdmin([CoordinatorNotAvailableError(), CoordinatorLoadInProgressError(),
                        NotCoordinatorError(), RequestTimedOutError(), 15, 16, 14, 68, 0])
    _delete(client)
    assert client.attempts == 9


def test_a_missing_group_counts_as_deleted() -> None:
    client = FakeAdmin([69])
    _delete(client)
    assert client.attempts == 1


def test_group_deletion_gives_up_at_its_deadline() -> None:
    client = FakeAdmin([CoordinatorNotAvailableError()] * 100_000)
    with pytest.raises(RuntimeError, match="cannot delete consumer group g"):
        _delete(client, timeout=0.05)
    assert client.attempts > 1


def test_group_deletion_does_not_retry_other_errors() -> None:
    client = FakeAdmin([30, 0])  # GROUP_AUTHORIZATION_FAILED
    with pytest.raises(RuntimeError, match="error code 30"):
        _delete(client)
    assert client.attempts == 1


# -- saturation ------------------------------------------------------------------------------------
def _sampler(samples: list[tuple[float, int]]) -> Any:
    it = iter(samples)

    async def sample() -> tuple[float, int]:
        return next(it)
    return sample


def test_saturation_counts_between_two_commit_events_after_the_warm_up() -> None:
    # first commit at t=2; warm-up over at t=9; the next commit event (t=10, 100) opens the
    # span; the first commit event 30 s later (t=43, 430; t=42 repeats 410) closes it
    samples = [(0.0, 0), (1.0, 0), (2.0, 10), (9.0, 80), (9.5, 80), (10.0, 100), (25.0, 250),
               (41.0, 410), (42.0, 410), (43.0, 430)]
    got = asyncio.run(measure(_sampler(samples), end_total=10_000, warmup_s=5, span_s=30,
                              pause=0))
    assert got == Saturation(records=330, seconds=33.0)
    assert got.rate == 10.0


def test_saturation_refuses_a_backlog_drained_within_the_span() -> None:
    samples = [(0.0, 0), (2.0, 10), (8.0, 60), (9.0, 70), (20.0, 100), (50.0, 100)]
    with pytest.raises(BacklogTooSmall, match="larger backlog"):
        asyncio.run(measure(_sampler(samples), end_total=100, warmup_s=5, span_s=30, pause=0))
