"""Lifecycle events the worker reports as single log lines: here, losing and regaining the
broker. aiokafka itself logs every failed reconnect attempt; operators need one line when the
cluster becomes unreachable and one when it is back, with how long it was gone (both written by
:class:`~streams.kafka.outage.BrokerOutageLog`, whichever notices first)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..kafka.outage import BrokerOutageLog

log = logging.getLogger(__name__)


def _client_connected(consumer: Any) -> bool:
    """Whether the consumer's client holds at least one live broker connection. (aiokafka
    has no public "connected" view; its client keeps the connections in ``_conns``.)"""
    conns = getattr(getattr(consumer, "_client", None), "_conns", None) or {}
    return any(conn.connected() for conn in list(conns.values()))


class BrokerWatch:
    """Tells ``outage`` (the worker's :class:`~streams.kafka.outage.BrokerOutageLog`, which
    logs the one line of each) that the broker is lost once the client had no live connection
    for ``grace_s`` seconds, and that it is back when it has one again.

    A live consumer always holds connections (fetch long-polls, group heartbeats), so "none for
    a few seconds" means the cluster is unreachable, not that the worker is idle. The outage
    log may also have learnt of the loss earlier, from aiokafka's first connection error.
    """

    def __init__(self, consumer: Any, bootstrap: str, outage: BrokerOutageLog,
                 grace_s: float = 3.0,
                 connected: Callable[[Any], bool] = _client_connected,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.consumer = consumer
        self.outage = outage
        self.bootstrap = bootstrap
        self.grace_s = grace_s
        self._connected = connected
        self._clock = clock
        self._down_since: float | None = None
        self.lost = False

    def check(self) -> None:
        now = self._clock()
        if self._connected(self.consumer):
            # Also ends an outage the log learnt of from aiokafka (an idle worker may not
            # commit, the log's other "back" signal, for a long time) once it is older than the
            # grace: a connection not yet seen closed right after the first error is no return.
            since = self.outage.down_since
            if self.lost or (since is not None and now - since >= self.grace_s):
                self.outage.recovered()
            self._down_since, self.lost = None, False
            return
        if self._down_since is None:
            self._down_since = now
        if not self.lost and now - self._down_since >= self.grace_s:
            self.lost = True
            self.outage.lost(f"no connection to {self.bootstrap} for "
                             f"{now - self._down_since:.1f} s")

    async def run(self, interval_s: float = 1.0) -> None:
        """Check every ``interval_s`` until cancelled (a task of its own, so a main loop
        blocked on the unreachable broker does not silence it)."""
        while True:
            await asyncio.sleep(interval_s)
            self.check()


__all__ = ["BrokerWatch"]
