"""Settings and command-line numbers are validated when a command loads them, before Kafka is
touched: one line naming the key and where it was set (file, variable, option), non-zero exit,
never a traceback. Through the CLI, no broker."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streams import registry
from streams.cli import main
from streams.config import config_dir, load_settings


@pytest.fixture
def no_kafka(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every way the CLI reaches Kafka records the call and fails: validation must come first."""
    from streams.cli import admin

    touched: list[str] = []

    def refuse(name: str) -> Any:
        def call(*_args: Any, **_kwargs: Any) -> Any:
            touched.append(name)
            raise AssertionError(f"{name} called before the settings were validated")
        return call

    for name in ("broker_answers", "ensure_topics", "end_offsets", "topic_partitions"):
        monkeypatch.setattr(admin, name, refuse(name))
    for var in ("STREAMS_BROKER", "STREAMS_STATE_DIR", "STREAMS_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    return touched


def _run(args: list[str]) -> Any:
    result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _one_line_error(result: Any, *fragments: str) -> str:
    text = result.output.strip()
    assert result.exit_code != 0, text
    assert "Traceback" not in text and "\n" not in text, text
    assert text.startswith("error: ")
    for fragment in fragments:
        assert fragment in text, text
    return text


@pytest.mark.parametrize("toml,key", [
    ("commit_interval_ms = -5", "commit_interval_ms"),
    ("commit_interval_ms = 0", "commit_interval_ms"),
    ('commit_interval_ms = "abc"', "commit_interval_ms"),
    ("commit_interval_ms = 1.5", "commit_interval_ms"),
    ("transaction_timeout_ms = 0", "transaction_timeout_ms"),
    ("transaction_timeout_ms = 86400000", "transaction_timeout_ms"),
    ("commit_interval_ms = 20000", "transaction_timeout_ms"),   # 60000 < 5 x 20000
    ("max_batch_records = 0", "max_batch_records"),
    ("commit_every_records = -1", "commit_every_records"),
    ("session_timeout_ms = 1", "session_timeout_ms"),
    ("metrics_port = 99999", "metrics_port"),
    ("partitions = 0", "partitions"),
    ("partitions = true", "partitions"),
    ("idle_close_ms = -1", "idle_close_ms"),
    ("max_task_idle_ms = -2", "max_task_idle_ms"),
    ("num_standby_replicas = -1", "num_standby_replicas"),
    ('num_standby_replicas = "one"', "num_standby_replicas"),
    ('broker = "localhost"', "broker"),
    ('broker = "127.0.0.1:99999"', "broker"),
    ('state_dir = ""', "state_dir"),
    ("metrics_host = 5", "metrics_host"),
    ('processing_guarantee = "exactly-once"', "processing_guarantee"),
    ('processing.mode = "fast"', "processing.mode"),
    ("[security]\nssl_check_hostname = \"no\"", "security.ssl_check_hostname"),
    ("[security]\nsasl_username = 7", "security.sasl_username"),
])
def test_a_bad_setting_is_one_line_naming_key_and_file(tmp_path: Path, no_kafka: list[str],
                                                       toml: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml + "\n")
    result = _run(["worker", "trip_stats", "--config", str(path)])
    _one_line_error(result, key, str(path))
    assert no_kafka == []


def test_a_bad_value_in_a_topology_file_names_that_file(tmp_path: Path, no_kafka: list[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(config_dir() / "defaults.toml", tmp_path / "defaults.toml")
    (tmp_path / "trip_stats.toml").write_text("session_timeout_ms = 1\n")
    monkeypatch.setenv("STREAMS_CONFIG_DIR", str(tmp_path))
    for args in (["worker", "trip_stats"], ["generate", "trip_stats", "--count", "1"],
                 ["tables", "list", "trip_stats"]):
        _one_line_error(_run(args), "session_timeout_ms", str(tmp_path / "trip_stats.toml"))
    assert no_kafka == []


@pytest.mark.parametrize("data,what", [
    (b'commit_interval_ms = 1000\n# caf\xe9\n', "not UTF-8"),
    ("commit_interval_ms = 1000\n".encode("utf-16"), "not UTF-8"),
    (b"commit_interval_ms = \n", "Invalid value"),
])
def test_an_unreadable_config_file_is_one_line_naming_it(tmp_path: Path, no_kafka: list[str],
                                                         data: bytes, what: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(data)
    _one_line_error(_run(["worker", "trip_stats", "--config", str(path)]), str(path), what)


def test_a_bad_environment_variable_is_named(no_kafka: list[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMS_BROKER", "kafka-without-port")
    _one_line_error(_run(["worker", "trip_stats"]), "environment variable STREAMS_BROKER",
                    "broker")
    assert no_kafka == []


@pytest.mark.parametrize("args,option", [
    (["generate", "trip_stats", "--count", "-5"], "--count"),
    (["generate", "trip_stats", "--count", "0"], "--count"),
    (["generate", "trip_stats", "--rate", "-1"], "--rate"),
    (["generate", "trip_stats", "--rate", "nan"], "--rate"),
    (["generate", "trip_stats", "--rate", "inf"], "--rate"),
    (["generate", "payments", "--accounts", "1"], "--accounts"),
    (["consume", "rides", "--limit", "-1"], "--limit"),
    (["consume", "rides", "--limit", "0"], "--limit"),
    (["consume", "rides", "--timeout", "-1"], "--timeout"),
    (["consume", "rides", "--timeout", "nan"], "--timeout"),
    (["worker", "trip_stats", "--metrics-port", "99999"], "--metrics-port"),
    (["worker", "trip_stats", "--metrics-port", "-2"], "--metrics-port"),
    (["worker", "trip_stats", "--metrics-port", "abc"], "--metrics-port"),
    (["kafka", "start", "--port", "0"], "--port"),
    (["kafka", "start", "--port", "70000"], "--port"),
    (["kafka", "start", "--heap", "lots"], "--heap"),
    (["kafka", "stop", "--port", "-1"], "--port"),
    (["kafka", "status", "--port", "65536"], "--port"),
])
def test_a_bad_number_on_the_command_line_is_one_line_naming_the_option(
        no_kafka: list[str], args: list[str], option: str) -> None:
    result = _run(args)
    _one_line_error(result, f"'{option}'")
    assert result.exit_code == 2
    assert no_kafka == []


def test_the_shipped_settings_are_valid() -> None:
    for name in registry.names():
        settings = load_settings(name)
        assert settings.effective_commit_interval_ms >= 1 and settings.session_timeout_ms >= 6000


def test_valid_settings_from_every_layer_still_load(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ok.toml"
    path.write_text("commit_interval_ms = 200\nmetrics_port = -1\nmax_task_idle_ms = -1\n"
                    "broker = \"a:9092,b:9093\"\n[security]\nssl_check_hostname = false\n")
    monkeypatch.setenv("STREAMS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("STREAMS_BROKER", raising=False)  # (set where a broker runs: CI)
    settings = load_settings("trip_stats", path, metrics_port=0)
    assert (settings.commit_interval_ms, settings.metrics_port, settings.broker,
            settings.state_dir) == (200, 0, "a:9092,b:9093", str(tmp_path / "state"))
