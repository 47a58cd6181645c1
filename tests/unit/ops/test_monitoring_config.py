"""config/prometheus.yml, config/alerts.yml and the Grafana dashboard, checked with the real
promtool: valid config, valid rules, every alert's unit tests pass (config/alerts_test.yml),
and every alert has a test that needs it to fire. The dashboard's queries run against a live
Prometheus in tests/integration/test_prometheus.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "config"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed (scripts/install-prometheus.sh installs it)")


def promtool(*args: str, cwd: Path = CONFIG) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@needs_promtool
def test_prometheus_config_is_valid() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_alert_rules_are_valid() -> None:
    done = promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_alert_unit_tests_pass() -> None:
    done = promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def _alerts() -> dict[str, str]:
    doc = yaml.safe_load((CONFIG / "alerts.yml").read_text())
    return {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_every_alert_has_unit_tests() -> None:
    tests = yaml.safe_load((CONFIG / "alerts_test.yml").read_text())["tests"]
    tested = {t["alertname"] for case in tests for t in case.get("alert_rule_test", [])
              if t.get("exp_alerts")}
    assert set(_alerts()) <= tested, f"alerts without a firing test: {set(_alerts()) - tested}"


@needs_promtool
@pytest.mark.parametrize("alert", sorted(_alerts()))
def test_alert_tests_fail_when_the_alert_never_fires(alert: str, tmp_path: Path) -> None:
    """Mutation: the alert's expression replaced by one that never matches -> its unit tests
    must fail (so they really depend on this alert firing)."""
    doc = yaml.safe_load((CONFIG / "alerts.yml").read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = "vector(1) == 0"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(doc))
    shutil.copy(CONFIG / "alerts_test.yml", tmp_path / "alerts_test.yml")
    done = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert done.returncode != 0
    assert alert in done.stdout + done.stderr


def test_scrape_config_discovers_the_workers_files() -> None:
    """No static targets: one job reads the workers' discovery files from the default
    ``discovery_dir`` (relative to the config file, as Prometheus resolves it) and names each
    target's job ``streams-<topology>``."""
    from streams.config import Settings

    doc = yaml.safe_load((CONFIG / "prometheus.yml").read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    [job] = doc["scrape_configs"]
    assert "static_configs" not in job
    [sd] = job["file_sd_configs"]
    [pattern] = sd["files"]
    assert (CONFIG / pattern).resolve() == (ROOT / Settings().discovery_dir / "*.json").resolve()
    [relabel] = job["relabel_configs"]
    assert (relabel["source_labels"], relabel["target_label"], relabel["replacement"]) == \
        (["topology"], "job", "streams-$1")
    assert job["honor_labels"] is True  # no exported_topology next to topology


def test_dashboard_has_every_required_panel() -> None:
    dash = json.loads((CONFIG / "grafana" / "streams-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for metric in ("streams_events_consumed_total", "streams_events_produced_total",
                   "streams_consumer_lag", "streams_end_to_end_latency_seconds_bucket",
                   "streams_commit_seconds_bucket", "streams_transactions_total",
                   "streams_late_events_total", "streams_dead_letters_total",
                   "streams_recovery_records_remaining", "streams_table_keys"):
        assert metric in exprs, f"no panel shows {metric}"
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
