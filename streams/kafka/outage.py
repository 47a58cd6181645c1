"""What aiokafka logs while the cluster misbehaves, turned into the lines an operator needs, each
at the level its event deserves.

aiokafka logs every failed reconnect of every client, node and retry (hundreds of lines per
second while a broker is down), and logs normal group events as warnings or errors. The worker
installs :class:`BrokerOutageLog` as a filter on its log handlers; it sorts aiokafka's records
(WARNING and up) into:

==============  ================================================  ==========================
event           aiokafka says (e.g.)                              logged as
==============  ================================================  ==========================
broker lost     ``Unable connect to node``, ``Unable to update    one WARNING ``broker
                metadata``, ``NodeNotReadyError``                 unreachable (...)``; the
                                                                  rest dropped (counted)
broker back     (the connection watch or a commit says so)        one INFO ``broker
                                                                  reachable again after N s``
rebalance       ``Heartbeat failed ... because it is              DEBUG (the worker's own
                rebalancing``, ``generation id is not current``   INFO lines say revoked /
                                                                  assigned)
coordinator     ``CoordinatorNotAvailable`` (a fresh broker       one INFO per episode
not ready       creating its offsets topic), ``NotCoordinator``   ``group coordinator not
                (it moved), ``Marking the coordinator dead``      available yet``
request retried ``Got error produce response`` (a timeout under    one INFO per episode
                load), ``NotLeaderForPartition`` (leaders being   ``broker request failed,
                elected after a restart)                          retrying``
session         ``Heartbeat session expired``                     one line per episode: INFO
expired                                                           right after an outage (its
                                                                  expected consequence),
                                                                  WARNING otherwise
==============  ================================================  ==========================

During an outage every one of them is part of it and dropped. An *episode* of a repeated event
ends after :data:`EPISODE_GAP_S` without it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Checked in this order: the first match decides.
_REBALANCE = ("because it is rebalancing", "generation id is not", "member_id was not recognized",
              "due to group error")
_COORDINATOR = ("CoordinatorNotAvailable", "NotCoordinator", "is either not started or not valid",
                "Marking the coordinator dead")
_SESSION = ("Heartbeat session expired",)
_CONNECTION = ("Unable connect to", "Unable to update metadata", "Unable to request metadata",
               "NodeNotReadyError", "KafkaConnectionError", "Connection at",
               "Connect call failed")
# A request that failed and is retried while the broker is up (slow, a leader being elected
# after a restart): judged by its error, so a timeout under load is not "unreachable".
_TRANSIENT = ("Got error produce response", "NotLeaderForPartition", "LeaderNotAvailable",
              "RequestTimedOut", "UnknownTopicOrPartition", "Failed fetch offsets from")

_AIOKAFKA_BOOKKEEPING = "MessageAccumulator._pop_batch"


def _aiokafka_leftover(record: logging.LogRecord) -> bool:
    """An asyncio error record about aiokafka's own callbacks or futures."""
    if _AIOKAFKA_BOOKKEEPING in str(record.msg):
        return True
    exc = record.exc_info[1] if record.exc_info else None
    return ("exception was never retrieved" in str(record.msg) and exc is not None
            and type(exc).__module__.startswith("aiokafka"))

#: A repeated event (coordinator not ready, session expired) is logged again only after this
#: long without it.
EPISODE_GAP_S = 30.0
#: A session that expires this soon after an outage ended expired because of it.
AFTERMATH_S = 120.0


def _kind(message: str) -> str | None:
    for kind, patterns in (("rebalance", _REBALANCE), ("coordinator", _COORDINATOR),
                           ("session", _SESSION), ("connection", _CONNECTION),
                           ("transient", _TRANSIENT)):
        if any(p in message for p in patterns):
            return kind
    return None


class BrokerOutageLog(logging.Filter):
    """A handler filter for aiokafka's records (see the module docstring), and the one place
    that logs "broker unreachable" and "broker reachable again"."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self.down_since: float | None = None
        self.suppressed = 0
        self._outage_ended: float | None = None
        self._last_seen: dict[str, float] = {}  # kind -> when it last occurred

    # -- the outage -------------------------------------------------------------------------
    def lost(self, detail: str) -> None:
        """The broker cannot be reached (a connection watch noticed): one WARNING, unless an
        outage is already being reported."""
        if self.down_since is None:
            self.down_since = self._clock()
            log.warning(self._lost_text(), detail)

    def recovered(self) -> None:
        """Something reached the broker again (a connection, a commit): one INFO line."""
        if self.down_since is not None:
            now = self._clock()
            log.info("broker reachable again after %.1f s (%d connection errors not logged)",
                     now - self.down_since, self.suppressed)
            self.down_since, self.suppressed, self._outage_ended = None, 0, now

    @staticmethod
    def _lost_text() -> str:
        return ("broker unreachable (%s); retrying, further connection errors are not logged "
                "until it is back")

    # -- the filter -------------------------------------------------------------------------
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "asyncio" and _aiokafka_leftover(record):
            # An abandoned producer's internals after a failed transaction: aiokafka trips over
            # its batch bookkeeping (a KeyError in a callback) and leaves the failure of its
            # internal futures unretrieved. The transaction is aborted and the task reopened
            # anyway (one WARNING line), so these are no events of their own.
            self._rewrite(record, logging.DEBUG, "aiokafka internals of an abandoned producer "
                          "(ignored): %s", str(record.msg).split("\n", 1)[0][:200])
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        if record.levelno < logging.WARNING or not record.name.startswith("aiokafka"):
            return True
        message = record.getMessage()
        kind = _kind(message)
        if kind is None:
            return True
        now = self._clock()
        if self.down_since is not None:  # part of the outage being reported
            self.suppressed += 1
            return False
        if kind == "connection":
            self.down_since = now
            self._rewrite(record, logging.WARNING, self._lost_text(), message[:200])
            return True
        if kind == "rebalance":
            self._rewrite(record, logging.DEBUG, "group rebalancing (%s)", message[:200])
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        last, self._last_seen[kind] = self._last_seen.get(kind), now
        if last is not None and now - last < EPISODE_GAP_S:
            return False  # the same episode, already logged
        if kind == "transient":
            self._rewrite(record, logging.INFO, "broker request failed, retrying (%s)",
                          message[:200])
        elif kind == "coordinator":
            self._rewrite(record, logging.INFO, "group coordinator not available yet (%s); "
                          "retrying", message[:200])
        elif self._outage_ended is not None and now - self._outage_ended < AFTERMATH_S:
            self._rewrite(record, logging.INFO, "consumer group session expired while the "
                          "broker was unreachable: rejoining the group (partitions may move)",
                          None)
        else:
            self._rewrite(record, logging.WARNING, "consumer group session expired (no "
                          "heartbeat answered within session_timeout_ms): rejoining the group "
                          "(partitions may move)", None)
        return True

    @staticmethod
    def _rewrite(record: logging.LogRecord, level: int, msg: str, arg: str | None) -> None:
        record.msg, record.args = msg, (() if arg is None else (arg,))
        record.levelno, record.levelname = level, logging.getLevelName(level)
        record.exc_info = record.exc_text = None  # one line

    def install(self) -> BrokerOutageLog:
        for handler in logging.getLogger().handlers:
            handler.addFilter(self)
        return self

    def uninstall(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self)


__all__ = ["AFTERMATH_S", "EPISODE_GAP_S", "BrokerOutageLog"]
