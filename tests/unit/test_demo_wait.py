"""The demo waits through a fresh broker's first moments: its group coordinator is not available
until ``__consumer_offsets`` exists, and that is a reason to wait, not to fail."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import CoordinatorNotAvailableError

from streams.devtools import demo


def test_waiting_for_a_group_outlasts_an_unavailable_coordinator(
        monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[Any] = [CoordinatorNotAvailableError("Unable to get coordinator id"),
                          {("rides", 0): 5}, {}, {}]

    async def behind(*_: Any) -> dict[tuple[str, int], int]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def no_sleep(_: float) -> None:
        return None

    monkeypatch.setattr(demo, "behind", behind)
    monkeypatch.setattr(demo.asyncio, "sleep", no_sleep)
    said: list[str] = []
    assert asyncio.run(demo.wait_caught_up(None, "trip_stats", ["rides"], 60, said.append))
    assert answers == [] and said and "caught up" in said[0]
