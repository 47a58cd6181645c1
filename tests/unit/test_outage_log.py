"""aiokafka's records while the cluster misbehaves become one line per event, each at the level
the event deserves: an outage is one WARNING and its end one INFO; a rebalance, a coordinator
that is not ready yet and a session that expired in an outage are not "broker unreachable"."""

from __future__ import annotations

import logging
import sys

import pytest
from aiokafka.errors import ProducerFenced

from streams.kafka.outage import AFTERMATH_S, EPISODE_GAP_S, BrokerOutageLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, level: int = logging.ERROR,
           name: str = "aiokafka.consumer.group_coordinator") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def kept(outage: BrokerOutageLog, messages: list[str], level: int = logging.ERROR
         ) -> list[tuple[str, str]]:
    out = []
    for msg in messages:
        r = record(msg, level)
        if outage.filter(r):
            out.append((r.levelname, r.getMessage()))
    return out


def test_an_outage_is_one_warning_and_its_end_one_info(caplog: pytest.LogCaptureFixture) -> None:
    outage = BrokerOutageLog()
    noise = ["Unable connect to node with id 1: [Errno 111] Connect call failed",
             "Unable to update metadata from [1]",
             "Heartbeat session expired - marking coordinator dead",  # (part of the outage)
             "Group Coordinator Request failed: [Error 7] RequestTimedOutError"]
    lines = kept(outage, noise * 50)
    assert lines == [("WARNING", "broker unreachable (Unable connect to node with id 1: [Errno "
                      "111] Connect call failed); retrying, further connection errors are not "
                      "logged until it is back")]
    other = [record("something else entirely", logging.WARNING, "aiokafka"),
             record("NodeNotReadyError in our own code is kept", name="streams.x")]
    assert all(outage.filter(r) for r in other)
    with caplog.at_level(logging.INFO, logger="streams.kafka.outage"):
        outage.lost("no connection to b:9092 for 3.0 s")  # (already reported: nothing)
        outage.recovered()
        outage.recovered()  # (no outage any more: nothing)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(lines) == 1 and lines[0][0] == "INFO", lines
    assert "reachable again" in lines[0][1] and "199 connection errors not logged" in lines[0][1]
    again = record("Unable connect to node with id 1")
    assert outage.filter(again) and "broker unreachable" in again.getMessage()


def test_a_rebalance_is_not_an_outage() -> None:
    outage = BrokerOutageLog()
    lines = kept(outage, ["Heartbeat failed for group trip_stats because it is rebalancing",
                          "Heartbeat failed for group trip_stats: generation id is not  current.",
                          "OffsetCommit failed for group trip_stats due to group error "
                          "(RebalanceInProgressError), will rejoin"] * 3, logging.WARNING)
    assert lines == []  # DEBUG: the worker's own INFO lines say revoked / assigned
    assert outage.down_since is None


def test_a_coordinator_not_ready_is_one_info_line_per_episode() -> None:
    clock = Clock()
    outage = BrokerOutageLog(clock)
    fresh = ["Group Coordinator Request failed: [Error 15] CoordinatorNotAvailableError",
             "Marking the coordinator dead (node 1)for group payments."]
    lines = kept(outage, fresh * 10)
    assert lines == [("INFO", "group coordinator not available yet (Group Coordinator Request "
                      "failed: [Error 15] CoordinatorNotAvailableError); retrying")]
    assert outage.down_since is None
    clock.now += EPISODE_GAP_S + 1
    assert len(kept(outage, fresh)) == 1  # a new episode


def test_a_session_expired_after_an_outage_is_one_info_line_else_a_warning() -> None:
    clock = Clock()
    outage = BrokerOutageLog(clock)
    expired = ["Heartbeat session expired - marking coordinator dead"] * 4
    kept(outage, ["Unable connect to node with id 1"])
    clock.now += 40
    outage.recovered()
    lines = kept(outage, expired)
    assert lines == [("INFO", "consumer group session expired while the broker was unreachable: "
                      "rejoining the group (partitions may move)")]
    clock.now += AFTERMATH_S + EPISODE_GAP_S
    lines = kept(outage, expired)  # no outage: the event loop was blocked, say
    assert [level for level, _ in lines] == ["WARNING"]
    assert "session expired (no heartbeat answered" in lines[0][1]


def test_a_retried_request_is_not_an_outage() -> None:
    outage = BrokerOutageLog(Clock())
    retried = ["Got error produce response on topic-partition TopicPartition(topic='rides', "
               "partition=3), retrying. Error: "
               "<class 'aiokafka.errors.NotLeaderForPartitionError'>",
               "Failed fetch offsets from 1: [Error 6] NotLeaderForPartitionError: rides-3",
               "Got error produce response: [Error 7] RequestTimedOutError"]
    lines = kept(outage, retried * 20, logging.WARNING)
    assert [level for level, _ in lines] == ["INFO"]
    assert lines[0][1].startswith("broker request failed, retrying (Got error produce")
    assert outage.down_since is None


def test_aiokafkas_batch_bookkeeping_error_after_a_failed_transaction_is_not_an_error() -> None:
    outage = BrokerOutageLog(Clock())
    trip = record("Exception in callback MessageAccumulator._pop_batch.<locals>.cb(<Future "
                  "finished exception=ProducerFenced()>)\nhandle: <Handle ...>", name="asyncio")
    assert not outage.filter(trip)  # DEBUG
    other = record("Exception in callback something_of_ours()", name="asyncio")
    assert outage.filter(other) and other.levelname == "ERROR"
    try:
        raise ProducerFenced()
    except ProducerFenced:
        fenced = logging.LogRecord("asyncio", logging.ERROR, __file__, 1,
                                   "Future exception was never retrieved\nfuture: <Future>",
                                   None, sys.exc_info())
    assert not outage.filter(fenced) and fenced.exc_info is None
    try:
        raise ValueError("ours")
    except ValueError:
        ours = logging.LogRecord("asyncio", logging.ERROR, __file__, 1,
                                 "Future exception was never retrieved", None, sys.exc_info())
    assert outage.filter(ours) and ours.exc_info is not None
