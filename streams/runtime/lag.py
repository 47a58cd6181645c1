"""Consumer lag as an operator reads it: records of a partition the worker has yet to process.

``streams_consumer_lag{topic,partition}`` = end - processed position, where

* **end** is the partition's *last stable offset* (the consumer reads ``read_committed``:
  records of open transactions are not readable yet, so they are not lag), or its high
  watermark when the broker reports no stable offset;
* **processed position** is the offset after the last record the task processed. A
  transaction's commit or abort marker takes an offset of its own but is never handed out as a
  record, so once the consumer has moved past the trailing markers (its fetch position) and the
  task holds none of the handed-out records unprocessed, the partition is caught up: lag 0, not
  the 1-4 markers at the end of an exactly-once topic.

The worker sets it for every assigned partition of a running task at every commit (so a
partition without new input is current too), and removes the series of partitions it no
longer owns (another worker reports them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka import TopicPartition


def partition_lag(end: int, processed: int, fetched: int | None, buffered: int) -> int:
    """Records of one partition not processed yet.

    ``processed``: offset after the last processed record; ``fetched``: the consumer's position
    (after the last record or marker it handed out); ``buffered``: handed-out records the task
    holds unprocessed. With nothing held, everything below ``fetched`` is done (the gap between
    ``processed`` and ``fetched`` can only be markers or aborted records).

    >>> partition_lag(end=12, processed=10, fetched=12, buffered=0)   # two trailing markers
    0
    >>> partition_lag(end=12, processed=10, fetched=10, buffered=0)   # markers not read yet
    2
    >>> partition_lag(end=500, processed=100, fetched=300, buffered=200)
    400
    """
    done = processed
    if fetched is not None and not buffered:
        done = max(processed, fetched)
    return max(0, end - done)


def end_offset(consumer: Any, tp: TopicPartition) -> int | None:
    """The partition's readable end as of the consumer's last fetch (None before the first, or
    when ``tp`` is not assigned)."""
    try:
        end = consumer.last_stable_offset(tp)
        if end is None or end < 0:  # (no stable offset from this broker: read_uncommitted)
            end = consumer.highwater(tp)
    except (AssertionError, KeyError):  # aiokafka asserts the partition is assigned
        return None
    return end


def fetch_position(consumer: Any, tp: TopicPartition) -> int | None:
    """The consumer's position without waiting: aiokafka's ``position()`` is a coroutine that
    blocks until a position is known; the lag only needs it if it is known. (aiokafka internals,
    read in this one place.)"""
    try:
        state = consumer._subscription.subscription.assignment.state_value(tp)  # noqa: SLF001
    except (AttributeError, KeyError):
        return None
    if state is None or not state.has_valid_position:
        return None
    return int(state.position)


def report_lag(metrics: Any, consumer: Any, tasks: Any,
               tps: Iterable[TopicPartition] | None = None) -> int:
    """``streams_consumer_lag`` of ``tps`` (``tasks``: the worker's
    :class:`~streams.runtime.task_manager.TaskManager`); ``None``: of every assigned partition
    (at each commit, so partitions without new input are current too), and the series of
    partitions this worker no longer owns are removed. Returns the total lag reported."""
    complete = tps is None
    lags: dict[tuple[str, int], int] = {}
    for tp in (consumer.assignment() if tps is None else tps):
        task = tasks.task_for(tp)
        end = end_offset(consumer, tp)
        processed = task.offsets.get((tp.topic, tp.partition)) if task else None
        if task is None or end is None or processed is None:
            continue  # not running yet (opening, restoring) or never fetched
        # (records fetched for the task and held unprocessed in its timestamp-order buffer)
        lags[(tp.topic, tp.partition)] = partition_lag(
            end, processed, fetch_position(consumer, tp), int(task.buffered(tp.topic)))
    metrics.set_lag(lags, complete=complete)
    return sum(lags.values())


__all__ = ["end_offset", "fetch_position", "partition_lag", "report_lag"]
