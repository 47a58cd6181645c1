"""Consumer lag: trailing transaction markers are not lag, records held unprocessed are, and a
worker stops exporting the partitions it no longer owns."""

from __future__ import annotations

from streams.metrics import Metrics
from streams.runtime.lag import partition_lag


def test_position_past_trailing_markers_is_caught_up() -> None:
    # records 0..9, commit markers at 10 and 11: processed 10, the consumer moved past both
    assert partition_lag(end=12, processed=10, fetched=12, buffered=0) == 0


def test_markers_not_yet_fetched_and_unprocessed_records_count() -> None:
    assert partition_lag(end=12, processed=10, fetched=10, buffered=0) == 2
    assert partition_lag(end=12, processed=10, fetched=None, buffered=0) == 2
    # fetched up to 12, but 2 records wait in the task's ordering buffer
    assert partition_lag(end=12, processed=10, fetched=12, buffered=2) == 2
    assert partition_lag(end=10, processed=12, fetched=12, buffered=0) == 0  # (stale end)


def samples(m: Metrics) -> dict[tuple[str, str], float]:
    return {(s.labels["topic"], s.labels["partition"]): s.value
            for metric in m.lag.collect() for s in metric.samples}


def test_partitions_no_longer_owned_are_not_exported() -> None:
    m = Metrics("t")
    m.set_lag({("a", 0): 5, ("a", 1): 7}, complete=True)
    m.set_lag({("a", 1): 3})  # after a batch of one partition
    assert samples(m) == {("a", "0"): 5, ("a", "1"): 3}
    m.set_lag({("a", 1): 0}, complete=True)  # partition 0 went to another worker
    assert samples(m) == {("a", "1"): 0}
