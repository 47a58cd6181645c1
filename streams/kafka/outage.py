"""One log line when the broker becomes unreachable and one when it is back, instead of the
hundreds per second aiokafka logs while it reconnects (each client, each node, each retry)."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

# aiokafka's messages while a broker is down (its clients retry on their own)
_CONNECTION_ERRORS = ("Unable connect to", "Unable to update metadata",
                      "Unable to request metadata", "NodeNotReadyError", "KafkaConnectionError",
                      "Connection at", "Marking the coordinator dead", "Heartbeat failed",
                      "Group Coordinator Request failed", "Cannot send")


class BrokerOutageLog(logging.Filter):
    """A handler filter: the first aiokafka connection error becomes one "broker unreachable"
    line and the rest are dropped until :meth:`recovered` logs "reachable again"."""

    def __init__(self) -> None:
        super().__init__()
        self.down_since: float | None = None
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith("aiokafka"):
            return True
        message = record.getMessage()
        if not any(p in message for p in _CONNECTION_ERRORS):
            return True
        if self.down_since is None:
            self.down_since = time.monotonic()
            record.msg, record.args = ("broker unreachable (%s); retrying, further connection "
                                       "errors are not logged until it is back"), (message[:200],)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            return True
        self.suppressed += 1
        return False

    def recovered(self) -> None:
        """Called after something reached the broker (a commit)."""
        if self.down_since is not None:
            log.warning("broker reachable again after %.1fs (%d connection errors not logged)",
                        time.monotonic() - self.down_since, self.suppressed)
            self.down_since, self.suppressed = None, 0

    def install(self) -> BrokerOutageLog:
        for handler in logging.getLogger().handlers:
            handler.addFilter(self)
        return self

    def uninstall(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self)
