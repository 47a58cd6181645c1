"""Exactly-once building blocks that need no broker: the setting that switches it on, how a
failed transaction is classified, the transactional id, positions after a commit."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.errors import (InvalidProducerEpoch, KafkaConnectionError, KafkaError,
                             KafkaTimeoutError, LeaderNotAvailableError,
                             NotLeaderForPartitionError, OutOfOrderSequenceNumber, ProducerFenced,
                             RecordTooLargeError, RequestTimedOutError,
                             TopicAuthorizationFailedError, TransactionalIdAuthorizationFailed)

from streams.config import ConfigError, load_settings
from streams.runtime.transactions import _positions_after_commit, classify, transactional_id
from streams.state.meta import TaskId


def test_payments_runs_exactly_once_and_defaults_stay_at_least_once() -> None:
    assert load_settings("payments").processing_guarantee == "exactly_once"
    assert load_settings("fraud_alerts").processing_guarantee == "at_least_once"


@pytest.mark.parametrize("toml, message", [
    ('processing_guarantee = "exactly-once"\n', "processing_guarantee must be one of"),
    ("commit_interval_ms = 30000\ntransaction_timeout_ms = 60000\n", "at least 5 x"),
])
def test_bad_guarantee_settings_are_one_clear_error(tmp_path: Path, toml: str,
                                                    message: str) -> None:
    path = tmp_path / "x.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings("payments", path)


@pytest.mark.parametrize("exc, kind", [
    (ProducerFenced(), "fenced"),
    (InvalidProducerEpoch(), "fenced"),
    (KafkaConnectionError(), "retriable"),
    (RequestTimedOutError(), "retriable"),
    (TimeoutError(), "retriable"),
    (RecordTooLargeError(), "fatal"),
    (ValueError("bug"), "fatal"),
    # what a broker outage and the broker's return look like to a transaction
    (KafkaError("Unexpected error during batch delivery"), "retriable"),
    (KafkaTimeoutError(), "retriable"),
    (LeaderNotAvailableError(), "retriable"),
    (NotLeaderForPartitionError(), "retriable"),
    (OutOfOrderSequenceNumber(), "retriable"),
    (ConnectionRefusedError(), "retriable"),
    (TopicAuthorizationFailedError(), "fatal"),
    (TransactionalIdAuthorizationFailed(), "fatal"),
])
def test_failed_transactions_are_classified(exc: BaseException, kind: str) -> None:
    assert classify(exc) == kind


def test_transactional_id_is_stable_per_task() -> None:
    assert transactional_id("payments", TaskId("0", 3)) == "payments-0_3"
    assert transactional_id("payments", TaskId("0", 3)) != transactional_id(
        "payments", TaskId("0", 2))


def test_positions_after_commit_count_the_commit_marker() -> None:
    assert _positions_after_commit({("cl", 0): 10, ("cl", 1): 3}) == {("cl", 0): 11,
                                                                      ("cl", 1): 4}
