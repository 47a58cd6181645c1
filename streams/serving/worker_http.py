"""The worker's side of its HTTP server: what ``/health`` reports, where others reach it, and
the server built for it (:class:`~streams.serving.server.QueryServer`)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..config import Settings
from .reads import LocalTables
from .routing import TableRouter
from .server import Health, QueryServer

if TYPE_CHECKING:
    from ..runtime.worker import Worker

_WILDCARDS = ("0.0.0.0", "::", "")


def advertised_endpoint(settings: Settings, port: int) -> str:
    """``host:port`` other workers and clients reach this worker's server at: the
    ``advertised_host`` setting, else ``metrics_host`` unless that listens on every interface
    (then this machine's name)."""
    host = settings.advertised_host or (
        socket.gethostname() if settings.metrics_host in _WILDCARDS else settings.metrics_host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def worker_health(worker: Worker) -> Health:
    """Running (200) only when the worker is in its group and every assigned task runs."""
    tasks = worker.tasks
    running = len(tasks.running) if tasks is not None else 0
    opening = len(tasks.opening()) if tasks is not None else 0

    def health(status: str, reason: str | None = None) -> Health:
        return Health(status, reason, running, opening)

    if worker.stopping:
        return health("stopping", "the worker is shutting down")
    if worker.outage_log.down_since is not None:
        return health("broker-lost", f"no connection to the broker {worker.settings.broker}")
    if tasks is None or not worker.joined:
        return health("starting", "joining the consumer group"
                      if tasks is not None else "starting")
    if worker.rebalancing:
        return health("rebalancing", "the consumer group is rebalancing")
    if tasks.busy:
        left = sum(r.remaining(t) for r in tasks.restoring.values() for t in r.changelogs)
        return health("restoring", f"{opening} tasks opening or restoring state "
                      f"({left} changelog records left)")
    return health("running")


def query_server(worker: Worker, partitions: Mapping[str, int],
                 health: Callable[[], Health] | None = None) -> QueryServer:
    """The HTTP server of ``worker`` (tables read from its running tasks)."""
    tables = LocalTables(worker.topology, lambda: worker.tasks, worker.global_tables)
    return QueryServer(worker.topology, worker.metrics, tables,
                       TableRouter(worker.topology, partitions),
                       health or (lambda: worker_health(worker)))


__all__ = ["advertised_endpoint", "query_server", "worker_health"]
