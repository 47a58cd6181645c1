"""Fixtures shared by the runtime tests: what went to the dead letters, and why."""

from __future__ import annotations

from typing import Any

import pytest

from streams.runtime.task import Task


@pytest.fixture
def reasons(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The reason of every dead letter, in order."""
    seen: list[str] = []
    original = Task.dead_letter

    def record(self: Task, raw: Any, error: str, reason: str, node: str | None = None) -> None:
        seen.append(reason)
        original(self, raw, error, reason, node)

    monkeypatch.setattr(Task, "dead_letter", record)
    return seen

