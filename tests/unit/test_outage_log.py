"""While the broker is down, aiokafka's connection errors become one line, and its return
another."""

from __future__ import annotations

import logging

import pytest

from streams.kafka.outage import BrokerOutageLog


def record(name: str, level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_an_outage_is_one_line_and_its_end_another(caplog: pytest.LogCaptureFixture) -> None:
    outage = BrokerOutageLog()
    kept = []
    for _ in range(50):
        for msg in ("Unable connect to node with id 1: [Errno 111] Connect call failed",
                    "Unable to update metadata from [1]"):
            r = record("aiokafka.consumer.fetcher", logging.ERROR, msg)
            if outage.filter(r):
                kept.append(r)
    other = [record("aiokafka", logging.WARNING, "something else entirely"),
             record("streams.x", logging.ERROR, "NodeNotReadyError in our own code is kept")]
    assert all(outage.filter(r) for r in other)
    assert [r.getMessage() for r in kept] == [
        "broker unreachable (Unable connect to node with id 1: [Errno 111] Connect call failed); "
        "retrying, further connection errors are not logged until it is back"]
    with caplog.at_level(logging.INFO, logger="streams.kafka.outage"):
        outage.recovered()
        outage.recovered()  # (no outage any more: nothing)
    lines = [r.getMessage() for r in caplog.records if r.name == "streams.kafka.outage"]
    assert len(lines) == 1 and "99 connection errors not logged" in lines[0]
    again = record("aiokafka", logging.ERROR, "Unable connect to node with id 1")
    assert outage.filter(again) and "broker unreachable" in again.getMessage()
