"""``streams generate`` run after run: where event time starts (``--start``, else after what
the topics hold) and ids that a later run does not repeat. No broker: the Kafka calls are
replaced; the continuation itself against a broker: tests/integration/test_generate_continues.py."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.devtools import generate


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the CLI would send (the topics exist; the newest event time in them is 5000)."""
    from streams.cli import admin

    out: dict[str, Any] = {"asked": 0}

    async def ensure_topics(*_: Any, **__: Any) -> None:
        return None

    async def produce(_bootstrap: Any, items: list[generate.Event], _rate: Any,
                      **_: Any) -> int:
        out["items"] = items
        return len(items)

    async def latest(_bootstrap: Any, topics: list[str], tail: int = 0) -> int:
        out["asked"] += 1
        out["topics"] = topics
        return 5_000

    monkeypatch.setattr(admin, "ensure_topics", ensure_topics)
    monkeypatch.setattr(generate, "produce", produce)
    monkeypatch.setattr(generate, "latest_event_time", latest)
    return out


def _first_ts(items: list[generate.Event]) -> int:
    return min(v["ts"] for _, _, v in items if isinstance(v, dict) and "ts" in v)


def test_start_option_sets_the_first_event_time(sent: dict[str, Any]) -> None:
    result = CliRunner().invoke(main, ["generate", "profile_notifications", "--count", "3",
                                       "--start", "1000", "--broker", "127.0.0.1:1"])
    assert result.exit_code == 0, result.output
    assert _first_ts(sent["items"]) == 1000 and sent["asked"] == 0
    assert "event time from 1970-01-01 00:00:01 UTC, 1000" in result.output


def test_without_start_event_time_continues_after_the_topics(sent: dict[str, Any],
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.setattr(generate.time, "time", lambda: 2.0)  # the wall clock: 2000 ms
    result = CliRunner().invoke(main, ["generate", "order_shipments", "--count", "20",
                                       "--broker", "127.0.0.1:1"])
    assert result.exit_code == 0, result.output
    assert sent["topics"] == ["orders", "shipments"]
    assert _first_ts(sent["items"]) == 5_001


def test_a_later_run_repeats_no_payment_id() -> None:
    """payments drops a payment_id it has seen as a duplicate: a second run with the same seed
    would otherwise yield no results at all."""
    def ids(start: int) -> set[str]:
        return {v["payment_id"] for t, _, v in generate.events("payments", 500, seed=1,
                                                              start_ms=start)
                if t == "payments" and isinstance(v, dict)}

    first, second = ids(1_000), ids(1_000 + 500 * 10 + 1)
    assert len(first) > 400 and not first & second
    assert ids(1_000) == first  # still the same for the same arguments
