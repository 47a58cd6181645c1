"""What /health reports for each state of the worker, and the server's port fallback."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from types import SimpleNamespace
from typing import Any

from streams.config import Settings
from streams.metrics import Metrics
from streams.serving.server import Health, QueryServer
from streams.serving.worker_http import advertised_endpoint, worker_health
from topologies.payments import topology as payments


class Restoration:
    changelogs = {"payments-balances-changelog": "balances"}

    def remaining(self, topic: str) -> int:
        return 1234


def worker(**state: Any) -> Any:
    tasks = SimpleNamespace(running={"t0": 1, "t1": 1}, restoring={}, busy=False,
                            opening=lambda: set())
    base: dict[str, Any] = {"tasks": tasks, "stopping": False, "joined": True,
                            "rebalancing": False, "settings": Settings(broker="h:1"),
                            "outage_log": SimpleNamespace(down_since=None)}
    return SimpleNamespace(**{**base, **state})


def test_health_is_running_only_when_every_assigned_task_runs() -> None:
    assert worker_health(worker()) == Health("running", None, 2, 0)
    assert worker_health(worker(tasks=None)).status == "starting"
    assert worker_health(worker(joined=False)).status == "starting"
    assert worker_health(worker(rebalancing=True)).status == "rebalancing"
    restoring = SimpleNamespace(running={}, restoring={"t0": Restoration()}, busy=True,
                                opening=lambda: {"t0"})
    h = worker_health(worker(tasks=restoring))
    assert (h.status, h.restoring_tasks) == ("restoring", 1)
    assert h.reason == "1 tasks opening or restoring state (1234 changelog records left)"
    lost = worker_health(worker(outage_log=SimpleNamespace(down_since=12.0)))
    assert (lost.status, lost.reason) == ("broker-lost", "no connection to the broker h:1")
    assert worker_health(worker(stopping=True, rebalancing=True)).status == "stopping"


def test_the_advertised_endpoint() -> None:
    assert advertised_endpoint(Settings(), 9410) == "127.0.0.1:9410"
    assert advertised_endpoint(Settings(metrics_host="0.0.0.0"), 1) == f"{socket.gethostname()}:1"
    assert advertised_endpoint(Settings(advertised_host="w1.example"), 2) == "w1.example:2"
    assert advertised_endpoint(Settings(metrics_host="::1"), 3) == "[::1]:3"


def test_a_taken_port_falls_back_to_a_free_one() -> None:
    async def run() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            srv = QueryServer(payments, Metrics("payments"), None, None,  # type: ignore[arg-type]
                              lambda: Health("running"))
            got = await srv.start("127.0.0.1", port)
            try:
                assert got != port
                text = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(f"http://127.0.0.1:{got}/metrics",
                                                   timeout=10).read().decode())
                assert "streams_commits_total" in text
            finally:
                await srv.stop()

    asyncio.run(run())
