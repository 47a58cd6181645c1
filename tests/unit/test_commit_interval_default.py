"""The commit interval depends on the guarantee unless it is set: exactly-once outputs become
visible only at the commit, so exactly_once commits more often by default (as Kafka Streams
does); a value the user sets wins under either guarantee."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import ConfigError, Settings, load_settings
from streams.runtime.tuning import tuning


def _load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str) -> Settings:
    for var in ("STREAMS_BROKER", "STREAMS_STATE_DIR", "STREAMS_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "worker.toml"
    path.write_text(toml)
    return load_settings("trip_stats", path)


def test_exactly_once_commits_every_100_ms_unless_set(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _load(tmp_path, monkeypatch, 'processing_guarantee = "exactly_once"\n')
    assert settings.effective_commit_interval_ms == 100
    assert tuning(settings).commit_interval_ms == 100


def test_at_least_once_keeps_its_one_second_interval(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _load(tmp_path, monkeypatch, 'processing_guarantee = "at_least_once"\n')
    assert settings.effective_commit_interval_ms == 1000
    assert tuning(settings).commit_interval_ms == 1000


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_a_commit_interval_that_is_set_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            guarantee: str) -> None:
    settings = _load(tmp_path, monkeypatch, f'processing_guarantee = "{guarantee}"\n'
                                            "commit_interval_ms = 700\n")
    assert tuning(settings).commit_interval_ms == 700


def test_the_shipped_exactly_once_topology_gets_the_exactly_once_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("STREAMS_BROKER", "STREAMS_STATE_DIR", "STREAMS_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    settings = load_settings("payments")   # config/payments.toml: exactly_once
    assert settings.processing_guarantee == "exactly_once"
    assert settings.effective_commit_interval_ms == 100


def test_switching_the_guarantee_later_switches_the_default() -> None:
    alos = Settings()
    eos = alos.with_overrides(processing_guarantee="exactly_once")
    assert (alos.effective_commit_interval_ms, eos.effective_commit_interval_ms) == (1000, 100)


def test_the_transaction_timeout_is_checked_against_the_interval_in_force(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 4000 ms is enough for exactly_once's 100 ms, not for a 1000 ms interval that is set
    ok = _load(tmp_path, monkeypatch, 'processing_guarantee = "exactly_once"\n'
                                      "transaction_timeout_ms = 4000\n")
    assert ok.transaction_timeout_ms == 4000
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, monkeypatch, 'processing_guarantee = "exactly_once"\n'
                                     "transaction_timeout_ms = 4000\ncommit_interval_ms = 1000\n")
    assert "\n" not in str(err.value)
    assert "at least 5 x commit_interval_ms (1000)" in str(err.value)
