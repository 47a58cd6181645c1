"""While the broker is down, aiokafka's connection errors become one line, and its return
another."""

from __future__ import annotations

import logging

import pytest

from streams.kafka.outage import BrokerOutageLog


def test_an_outage_is_one_line_and_its_end_another(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    outage = BrokerOutageLog()
    caplog.handler.addFilter(outage)
    try:
        aio = logging.getLogger("aiokafka.consumer.fetcher")
        for _ in range(50):
            aio.error("Unable connect to node with id 1: [Errno 111] Connect call failed")
            aio.error("Unable to update metadata from [1]")
        aio.warning("something else entirely")
        logging.getLogger("streams.x").error("NodeNotReadyError in our own code is kept")
        outage.recovered()
        outage.recovered()  # (no outage any more: nothing)
        aio.error("Unable connect to node with id 1")  # a new outage: one line again
    finally:
        caplog.handler.removeFilter(outage)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("broker unreachable" in m for m in lines) == 2
    assert sum("reachable again" in m and "99 connection errors" in m for m in lines) == 1
    assert "something else entirely" in lines
    assert "NodeNotReadyError in our own code is kept" in lines
    assert len(lines) == 5
