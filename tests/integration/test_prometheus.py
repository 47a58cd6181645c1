"""A real Prometheus scrapes real workers: the counters it stores match what was sent, the
dashboard's every query parses and returns data, the alert rules load and evaluate, and the
worker's JSON logs are one lifecycle object per line.

One scenario (module fixture) runs two workers against the shared broker, on topics nobody
else uses: ``profile_notifications`` (stateless, cwd = the repository) and ``ops_clicks`` (a
table and a windowed table, defined here in a temp project's ``topologies/`` package, which
the worker finds from its cwd). Prometheus (``scripts/install-prometheus.sh``) runs on a free
loopback port with its own storage and a config derived from ``config/prometheus.yml``: it
finds the workers through the discovery files they write (``STREAMS_DISCOVERY_DIR``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams import registry
from streams.devtools import generate

from tests.conftest import ROOT, create_topology_topics, delete_topology_topics, produce
from tests.integration.tables_support import wait_drained

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(shutil.which("prometheus") is None,
                       reason="prometheus not installed (scripts/install-prometheus.sh)"),
]

PROFILE = "profile_notifications"
CLICKS = "ops_clicks"
NOTABLE = ("Recruiter", "Hiring Manager", "CEO", "CTO")
BAD_RECORDS = [b"not json", b"{\"viewer_id\": ", b"\xff\xfe\x00"]
USERS = [f"user-{i}" for i in range(40)]
CLICK_COUNT = 600
LATE_CLICKS = 4
OPS_TOPOLOGY = '''\
from datetime import timedelta

from streams import Topology, TumblingWindows

topology = Topology("ops_clicks", late_topic="ops-clicks-late")
by_user = topology.stream("ops-clicks", timestamp="ts").group_by_key()
by_user.count(name="ops-clicks-per-user").to("ops-clicks-per-user")
(by_user.window(TumblingWindows(size=timedelta(seconds=10), grace=timedelta(0)))
        .count(name="ops-clicks-10s").to("ops-clicks-10s"))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until it logged its metrics port and a partition assignment."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", text)
            if m and "assigned" in text:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{text[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready in {timeout}s:\n{self.log()[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def start_worker(name: str, bootstrap: str, cwd: Path, state: Path, log_path: Path,
                 *args: str) -> Worker:
    env = {**os.environ, "STREAMS_BROKER": bootstrap, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(ROOT), "STREAMS_DISCOVERY_DIR": str(state.parent / "discovery")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", name, "--state-dir", str(state),
             "--metrics-port", "0", *args], stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
            env=env)
    return Worker(name, proc, log_path)


class Prometheus:
    """``prometheus`` on loopback with its own storage; queried through its HTTP API."""

    def __init__(self, config: dict[str, Any], work: Path) -> None:
        self.port = free_port()
        cfg = work / "prometheus.yml"
        cfg.write_text(json.dumps(config))  # JSON is YAML
        self.log_path = work / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={work / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1h"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready",
                                            timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not start:\n"
                                     f"{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # a bad query: the error is in the body
            doc = json.loads(exc.read())
        return doc

    def query(self, expr: str) -> list[dict[str, Any]]:
        doc = self.api("query", query=expr)
        assert doc["status"] == "success", f"{expr}: {doc.get('error')}"
        return doc["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return None if not result else float(result[0]["value"][1])

    def wait_for(self, expr: str, want: float, timeout: float = 60.0) -> float | None:
        """Poll ``expr`` (one series) until it equals ``want``; returns the last value."""
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = self.value(expr)
            if got == want:
                return got
            time.sleep(0.5)
        return got

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def prometheus_config(discovery: Path) -> dict[str, Any]:
    """config/prometheus.yml with a 1 s scrape, the real alert rules, and its file_sd job
    reading the discovery directory of this test's workers (not the repository's: someone
    else's workers)."""
    doc = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    doc["global"]["scrape_interval"] = "1s"
    doc["global"]["evaluation_interval"] = "1s"
    doc["rule_files"] = [str(ROOT / "config" / rule) for rule in doc["rule_files"]]
    [job] = doc["scrape_configs"]
    [sd] = job["file_sd_configs"]
    sd["files"] = [str(discovery / "*.json")]
    return doc


def load_topology(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("ops_clicks_topology", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.topology


@dataclass
class Scenario:
    work: Path
    prom: Prometheus
    workers: dict[str, Worker]
    views: int
    notifications: int
    dead_letters_before: float | None
    commits: tuple[float, float]
    users: int
    viewer_ids: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
def scenario(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    work = tmp_path_factory.mktemp("prometheus")
    project = work / "project"
    (project / "topologies").mkdir(parents=True)
    (project / "topologies" / "__init__.py").write_text("")
    (project / "topologies" / f"{CLICKS}.py").write_text(OPS_TOPOLOGY)
    clicks_topology = load_topology(project / "topologies" / f"{CLICKS}.py")
    profile_topology = registry.load(PROFILE)
    for t in (profile_topology, clicks_topology):
        delete_topology_topics(kafka, t)
        create_topology_topics(kafka, t, partitions=4)

    started: list[Worker] = []
    prom: Prometheus | None = None
    try:
        profile = start_worker(PROFILE, kafka, ROOT, work / "state", work / "profile.log",
                               "--log-format", "json")
        clicks = start_worker(CLICKS, kafka, project, work / "state", work / "clicks.log")
        started += [profile, clicks]
        for w in started:
            w.wait_ready()
        prom = Prometheus(prometheus_config(work / "discovery"), work)
        # Label values initialised at 0 are there before any input (and so is the target).
        assert prom.wait_for(f'up{{job="streams-{PROFILE}"}}', 1) == 1
        dead_before = prom.value(f'sum(streams_dead_letters_total{{topology="{PROFILE}"}})')

        views = generate.events(PROFILE, 3000, seed=11)
        notifications = sum(any(t in (v.get("viewer_title") or "") for t in NOTABLE)
                            for _, _, v in views)
        produce(kafka, views + [("profile-views", "bad", raw) for raw in BAD_RECORDS])
        now = int(time.time() * 1000)
        clicks_in = [("ops-clicks", USERS[i % len(USERS)], {"user": USERS[i % len(USERS)],
                                                            "ts": now + i * 50})
                     for i in range(CLICK_COUNT)]
        produce(kafka, clicks_in)
        # Stream time is now ~30 s ahead of these: their 10 s windows closed (grace 0).
        produce(kafka, [("ops-clicks", USERS[0], {"user": USERS[0], "ts": now - 60_000 + i})
                        for i in range(LATE_CLICKS)])
        wait_drained(kafka, PROFILE, ["profile-views"])
        wait_drained(kafka, CLICKS, ["ops-clicks"])
        # until Prometheus scraped the drained state, then a few more commit intervals
        prom.wait_for(f'sum(streams_events_consumed_total{{topology="{PROFILE}"}})',
                      len(views) + len(BAD_RECORDS))
        prom.wait_for(f'sum(streams_events_consumed_total{{topology="{CLICKS}"}})',
                      CLICK_COUNT + LATE_CLICKS)
        time.sleep(3)
        commits = (prom.value(f'sum(streams_commits_total{{topology="{PROFILE}"}} offset 2s)'),
                   prom.value(f'sum(streams_commits_total{{topology="{PROFILE}"}})'))
        yield Scenario(work, prom, {w.name: w for w in started}, len(views), notifications,
                       dead_before, (commits[0] or 0.0, commits[1] or 0.0), len(USERS),
                       {v["viewer_id"] for _, _, v in views})
    finally:
        for w in started:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait(30)
        if prom is not None:
            prom.stop()


def test_prometheus_sees_what_the_workers_did(scenario: Scenario) -> None:
    p, name = scenario.prom, PROFILE
    logs = {n: w.log()[-3000:] for n, w in scenario.workers.items()}
    assert p.value('sum(up{job=~"streams-.*"})') == 2, logs
    assert p.value(f'sum(streams_events_consumed_total{{topology="{name}"}})') == \
        scenario.views + len(BAD_RECORDS)
    assert p.value(f'sum(streams_events_produced_total{{topology="{name}", '
                   f'topic="profile-view-notifications"}})') == scenario.notifications
    # dead letters: the series existed at 0 before, and rose by exactly the bad records
    assert scenario.dead_letters_before == 0
    assert p.value(f'sum(streams_dead_letters_total{{topology="{name}"}})') == len(BAD_RECORDS)
    lag = p.query(f'streams_consumer_lag{{topology="{name}", topic="profile-views"}}')
    assert sorted(s["metric"]["partition"] for s in lag) == ["0", "1", "2", "3"]
    assert all(float(s["value"][1]) == 0 for s in lag), lag
    before, after = scenario.commits
    assert after > before > 0, "commits do not move"
    assert p.value(f'sum(streams_end_to_end_latency_seconds_count{{topology="{name}"}})') > 0
    # the stateful topology
    assert p.value(f'sum(streams_events_consumed_total{{topology="{CLICKS}"}})') == \
        CLICK_COUNT + LATE_CLICKS
    assert p.value(f'sum(streams_late_events_total{{topology="{CLICKS}"}})') == LATE_CLICKS
    keys = p.value(f'sum(streams_table_keys{{topology="{CLICKS}", '
                   f'table="ops-clicks-per-user"}})')
    assert keys == pytest.approx(scenario.users, abs=3)
    assert p.value(f'sum(streams_recovery_records_remaining{{topology="{CLICKS}"}})') == 0


def _targets(prom: Prometheus) -> list[dict[str, Any]]:
    return [t for t in prom.api("targets")["data"]["activeTargets"]
            if t["scrapePool"] == "streams"]


def _poll(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    got = check()
    while not got and time.monotonic() < deadline:
        time.sleep(0.5)
        got = check()
    assert got, f"not within {timeout}s: {what}"
    return got


def test_prometheus_scrapes_exactly_the_discovered_workers(scenario: Scenario) -> None:
    """Prometheus scrapes the workers it found in their discovery files, on the ports they got
    (``--metrics-port 0``), labelled with topology, worker id and guarantee; nothing else."""
    p, discovery = scenario.prom, scenario.work / "discovery"
    by_job = {t["labels"]["job"]: t for t in _targets(p)}
    assert set(by_job) == {f"streams-{PROFILE}", f"streams-{CLICKS}"}  # no other slot
    for w in scenario.workers.values():
        target = by_job[f"streams-{w.name}"]
        assert target["labels"]["instance"] == f"127.0.0.1:{w.port}"
        assert target["labels"]["topology"] == w.name
        assert target["labels"]["guarantee"] == "at_least_once"
        assert target["labels"]["worker_id"].endswith(f"-{w.proc.pid}")
        assert target["health"] == "up", target
    assert p.value(f'count(streams_commits_total{{job="streams-{CLICKS}"}})') == 1
    assert not p.query('{exported_topology!=""}')  # honor_labels: one topology label
    files = sorted(f.name for f in discovery.glob("*.json"))
    assert len(files) == 2, files


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads((ROOT / "config" / "grafana" / "streams-dashboard.json").read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def test_every_dashboard_query_returns_data(scenario: Scenario) -> None:
    """What Grafana would send: ``$topology`` = All, ``$__rate_interval`` = 1m; each query
    must parse and return at least one series with a number (a quantile of a histogram that
    saw nothing in the window is NaN: no data)."""
    empty = []
    for title, expr in dashboard_queries():
        q = expr.replace("$topology", ".*").replace("$__rate_interval", "1m")
        result = scenario.prom.query(q)  # raises on a parse error
        if not any(math.isfinite(float(s["value"][1])) for s in result):
            empty.append(f"{title}: {q} -> {result}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_alert_rules_evaluate_on_live_data(scenario: Scenario) -> None:
    doc = scenario.prom.api("rules")
    rules = [r for g in doc["data"]["groups"] for r in g["rules"]]
    assert len(rules) == 6
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError"))
                                                     for r in rules]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        alerts = scenario.prom.api("alerts")["data"]["alerts"]
        firing = {(a["labels"]["alertname"], a["labels"].get("topology")) for a in alerts
                  if a["state"] == "firing"}
        if ("StreamsDeadLetters", PROFILE) in firing:
            break
        time.sleep(1)
    assert ("StreamsDeadLetters", PROFILE) in firing, alerts
    # every worker answers and commits (others may fire legitimately on a loaded machine,
    # e.g. an offset commit lost to a rebalance)
    assert not {a for a, _ in firing} & {"StreamsWorkerDown", "StreamsCommitsStalled"}, firing


def test_json_logs_one_lifecycle_object_per_line(scenario: Scenario) -> None:
    w = scenario.workers[PROFILE]
    assert w.stop() == 0
    lines = [line for line in w.log().splitlines() if line.strip()]
    docs = [json.loads(line) for line in lines]  # every line is one JSON object
    for doc in docs:
        assert set(doc) >= {"ts", "level", "logger", "message", "topology"}, doc
        assert doc["topology"] == PROFILE
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts"])
    messages = [d["message"] for d in docs]
    assert any("assigned" in m for m in messages)
    assert any(m.startswith("final commit done") for m in messages)
    assert any("stopped" in m for m in messages)
    # lifecycle only: a few dozen lines for thousands of records, none naming a record
    info = [d for d in docs if d["level"] == "INFO"]
    assert len(info) < 60, messages
    text = "\n".join(messages)
    assert not [v for v in scenario.viewer_ids if re.search(rf"\b{v}\b", text)]


def test_stopped_worker_leaves_killed_worker_stays_down(scenario: Scenario) -> None:
    """A worker stopped cleanly takes its target with it; a killed worker's file stays, so
    its target stays, is reported down and StreamsWorkerDown becomes pending (it fires after
    its 1 m)."""
    p, discovery = scenario.prom, scenario.work / "discovery"
    profile, clicks = scenario.workers[PROFILE], scenario.workers[CLICKS]
    assert profile.stop() == 0  # SIGTERM (maybe already sent): its file goes, and its target
    assert not list(discovery.glob(f"{PROFILE}-*.json"))
    _poll("the stopped worker's target is gone",
          lambda: {t["labels"]["job"] for t in _targets(p)} == {f"streams-{CLICKS}"})
    _poll("its up series ended", lambda: not p.query(f'up{{job="streams-{PROFILE}"}}'))

    clicks.proc.kill()  # SIGKILL: nothing removes its file
    clicks.proc.wait(30)
    assert list(discovery.glob(f"{CLICKS}-*.json"))
    _poll("the killed worker's target is down",
          lambda: p.value(f'up{{job="streams-{CLICKS}"}}') == 0)

    def worker_down_alert() -> list[dict[str, Any]]:
        return [a for a in p.api("alerts")["data"]["alerts"]
                if a["labels"]["alertname"] == "StreamsWorkerDown"]

    [alert] = _poll("StreamsWorkerDown pending for the killed worker", worker_down_alert)
    assert alert["labels"]["job"] == f"streams-{CLICKS}"
    assert alert["labels"]["instance"] == f"127.0.0.1:{clicks.port}"
    assert alert["state"] in ("pending", "firing")
