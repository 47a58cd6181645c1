"""Lifecycle events the worker reports as single log lines: here, losing and regaining the
broker. aiokafka itself logs every failed reconnect attempt; operators need one line when the
cluster becomes unreachable and one when it is back, with how long it was gone."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def _client_connected(consumer: Any) -> bool:
    """Whether the consumer's client holds at least one live broker connection. (aiokafka
    has no public "connected" view; its client keeps the connections in ``_conns``.)"""
    conns = getattr(getattr(consumer, "_client", None), "_conns", None) or {}
    return any(conn.connected() for conn in list(conns.values()))


class BrokerWatch:
    """Logs ``broker connection lost`` once the client had no live connection for ``grace_s``
    seconds, and ``broker connection regained`` when it has one again.

    A live consumer always holds connections (fetch long-polls, group heartbeats), so "none for
    a few seconds" means the cluster is unreachable, not that the worker is idle.
    """

    def __init__(self, consumer: Any, bootstrap: str, grace_s: float = 3.0,
                 connected: Callable[[Any], bool] = _client_connected,
                 clock: Callable[[], float] = time.monotonic,
                 on_regained: Callable[[], None] | None = None) -> None:
        self.consumer = consumer
        self.on_regained = on_regained  # e.g. lets the outage log filter show errors again
        self.bootstrap = bootstrap
        self.grace_s = grace_s
        self._connected = connected
        self._clock = clock
        self._down_since: float | None = None
        self.lost = False

    def check(self) -> None:
        now = self._clock()
        if self._connected(self.consumer):
            if self.lost:
                assert self._down_since is not None
                log.info("broker connection regained (%s) after %.1f s", self.bootstrap,
                         now - self._down_since)
                if self.on_regained is not None:
                    self.on_regained()
            self._down_since, self.lost = None, False
            return
        if self._down_since is None:
            self._down_since = now
        if not self.lost and now - self._down_since >= self.grace_s:
            self.lost = True
            log.warning("broker connection lost: no connection to %s for %.1f s", self.bootstrap,
                        now - self._down_since)

    async def run(self, interval_s: float = 1.0) -> None:
        """Check every ``interval_s`` until cancelled (a task of its own, so a main loop
        blocked on the unreachable broker does not silence it)."""
        while True:
            await asyncio.sleep(interval_s)
            self.check()


__all__ = ["BrokerWatch"]
