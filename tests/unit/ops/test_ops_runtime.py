"""Operations plumbing without a broker: end-to-end latency observed when the broker
acknowledges an output, the processing mode setting, broker lost/regained log lines, and the
JSON log format."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streams.config import ConfigError, load_settings
from streams.logs import JsonFormatter
from streams.kafka.outage import BrokerOutageLog
from streams.runtime.lifecycle import BrokerWatch
from streams.runtime.transport import E2E_SAMPLES_PER_BATCH, KafkaTransport
from streams.runtime.task import Output
from streams.runtime.tuning import tuning


# -- end-to-end latency ----------------------------------------------------------------------------
class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.capacity, self.n = capacity, 0

    def append(self, **_: Any) -> Any:
        if self.n >= self.capacity:
            return None
        self.n += 1
        return object()

    def size(self) -> int:
        return 100 * self.n


class FakeProducer:
    """Records each send_batch; its futures resolve only when the test says (the broker's ack)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self.sent: list[tuple[str, int, asyncio.Future[Any]]] = []

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, partition: int) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, fut))
        return fut

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}


def _outputs(topic: str, stamps: list[int]) -> list[Output]:
    return [Output(topic, 0, b"k", b"v", ts, None) for ts in stamps]


def test_latency_is_observed_when_the_output_is_acknowledged() -> None:
    observed: list[float] = []
    stamps: list[int] = []
    ack_window: list[float] = []  # wall clock (s) just before the ack and once it was observed

    async def run() -> None:
        producer = FakeProducer()
        t = KafkaTransport(producer, None, on_latency=observed.append,  # type: ignore[arg-type]
                           latency_topics=["out"])
        now = int(time.time() * 1000)
        stamps.extend([now - 2000, now - 1000])
        await t.send(_outputs("out", stamps) + _outputs("dlq", [now - 9000]))
        await asyncio.sleep(0)
        assert observed == []  # sent, not acknowledged yet
        await asyncio.sleep(0.2)
        ack_window.append(time.time())
        for _topic, _p, fut in producer.sent:
            fut.set_result(None)
        deadline = time.monotonic() + 30
        while len(observed) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        ack_window.append(time.time())

    asyncio.run(run())
    # only the output topic, one per record, each from its own timestamp until the ack: within
    # what the wall clock read around the ack, so later than the send by the 0.2 s waited
    assert len(observed) == 2
    acked_from, acked_by = ack_window
    eps = 1e-6  # float rounding of the two ways of computing the same difference
    for latency, ts in zip(sorted(observed), sorted(stamps, reverse=True), strict=True):
        assert acked_from - ts / 1000 - eps <= latency <= acked_by - ts / 1000 + eps


def test_failed_sends_are_not_observed_and_batches_are_sampled() -> None:
    observed: list[float] = []

    async def run() -> None:
        producer = FakeProducer(capacity=100)
        t = KafkaTransport(producer, None, on_latency=observed.append,  # type: ignore[arg-type]
                           latency_topics=["out"])
        now = int(time.time() * 1000)
        await t.send(_outputs("out", [now] * 250))   # three batches: 100, 100, 50
        assert len(producer.sent) == 3
        producer.sent[0][2].set_exception(RuntimeError("broker said no"))
        for _t, _p, fut in producer.sent[1:]:
            fut.set_result(None)
        await asyncio.sleep(0)
        producer.sent[0][2].exception()  # retrieved (flush would raise it)

    asyncio.run(run())
    assert 2 <= len(observed) <= 2 * (E2E_SAMPLES_PER_BATCH + 1)


def test_records_without_timestamp_are_not_timed() -> None:
    observed: list[float] = []

    async def run() -> None:
        producer = FakeProducer()
        t = KafkaTransport(producer, None, on_latency=observed.append,  # type: ignore[arg-type]
                           latency_topics=["out"])
        await t.send(_outputs("out", [None, 0]))  # type: ignore[list-item]
        producer.sent[0][2].set_result(None)
        await asyncio.sleep(0)

    asyncio.run(run())
    assert observed == []


# -- processing mode -------------------------------------------------------------------------------
def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "extra.toml"
    path.write_text(text)
    return path


def test_processing_mode_defaults_to_throughput() -> None:
    assert load_settings("no_such_topology").processing_mode == "throughput"


@pytest.mark.parametrize("text", ['processing.mode = "latency"\n',
                                  '[processing]\nmode = "latency"\n'])
def test_processing_mode_from_toml(tmp_path: Path, text: str) -> None:
    assert load_settings("x", _config(tmp_path, text)).processing_mode == "latency"


def test_flag_overrides_the_file(tmp_path: Path) -> None:
    path = _config(tmp_path, 'processing.mode = "latency"\n')
    assert load_settings("x", path, processing_mode="throughput").processing_mode == "throughput"


def test_unknown_processing_mode_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="processing.mode must be one of throughput, latency"):
        load_settings("x", _config(tmp_path, 'processing.mode = "fast"\n'))
    with pytest.raises(ConfigError, match="unknown setting 'processing_speed'"):
        load_settings("x", _config(tmp_path, 'processing.speed = 1\n'))


def test_latency_mode_trades_batch_size_for_promptness(tmp_path: Path) -> None:
    fast = tuning(load_settings("x", _config(tmp_path, 'processing.mode = "latency"\n')))
    big = tuning(load_settings("x"))
    assert fast.linger_ms < big.linger_ms
    assert fast.fetch_max_wait_ms < big.fetch_max_wait_ms
    assert fast.max_batch_records < big.max_batch_records


def test_cli_rejects_an_unknown_mode_in_one_line() -> None:
    from streams.cli import main

    result = CliRunner().invoke(main, ["worker", "profile_notifications",
                                       "--processing-mode", "fast"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "'fast' is not one of 'throughput', 'latency'" in result.output


# -- broker lost / regained ------------------------------------------------------------------------
def test_broker_lost_and_regained_are_one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    state = {"up": True, "now": 0.0}
    clock = lambda: state["now"]  # noqa: E731
    outage = BrokerOutageLog(clock)
    watch = BrokerWatch(None, "127.0.0.1:9092", outage, grace_s=3.0,
                        connected=lambda _c: state["up"], clock=clock)
    caplog.set_level(logging.INFO, logger="streams.kafka.outage")
    timeline = [(0, True), (1, False), (2, False), (3, False), (4, False), (5, False),
                (6, False), (9, True), (10, True), (11, False), (12, True)]
    for now, up in timeline:
        state["now"], state["up"] = float(now), up
        watch.check()
        if now == 5:  # aiokafka's errors meanwhile: part of the same outage
            assert not outage.filter(logging.LogRecord(
                "aiokafka.client", logging.ERROR, __file__, 1, "Unable connect to node", None,
                None))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["broker unreachable (no connection to 127.0.0.1:9092 for 3.0 s); retrying, "
                     "further connection errors are not logged until it is back",
                     "broker reachable again after 5.0 s (1 connection errors not logged)"]
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]


def test_an_outage_noticed_by_aiokafka_first_ends_when_connected_again(
        caplog: pytest.LogCaptureFixture) -> None:
    state = {"up": True, "now": 0.0}
    clock = lambda: state["now"]  # noqa: E731
    outage = BrokerOutageLog(clock)
    watch = BrokerWatch(None, "b:9092", outage, grace_s=3.0,
                        connected=lambda _c: state["up"], clock=clock)
    caplog.set_level(logging.INFO, logger="streams.kafka.outage")
    outage.filter(logging.LogRecord("aiokafka.client", logging.ERROR, __file__, 1,
                                    "Unable connect to node", None, None))
    watch.check()  # a connection not yet seen closed right after the error: no "back" yet
    assert outage.down_since is not None
    state["now"] = 4.0
    watch.check()
    assert [r.getMessage()[:28] for r in caplog.records] == ["broker reachable again after"]


# -- JSON logs -------------------------------------------------------------------------------------
def test_json_log_lines_keep_tracebacks_inside_the_object() -> None:
    fmt = JsonFormatter("payments")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys
        rec = logging.LogRecord("streams.runtime.worker", logging.ERROR, __file__, 1,
                                "final commit failed", (), sys.exc_info())
    line = fmt.format(rec)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["level"] == "ERROR" and doc["topology"] == "payments"
    assert doc["message"] == "final commit failed"
    assert "ValueError: bad\nthing" in doc["exception"]
