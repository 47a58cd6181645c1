"""What ``processing.mode`` changes: the knobs that trade batch size for promptness.

- ``throughput`` (the default): polls return up to ``max_batch_records`` records, a fetch waits
  up to 100 ms on the broker for data to accumulate, the producer lingers 5 ms to fill batches.
  Most events per second per core; an event may wait for a fetch wait and a linger.
- ``latency``: batches of at most 500 records (a batch's outputs go out before the next poll),
  fetches come back as soon as there is a byte, the producer sends without lingering. Each event
  costs more requests, so throughput at saturation is lower.

The commit cadence is the same in both modes: at-least-once outputs are visible as soon as they
are acknowledged, not at commit, so committing more often would only add pauses.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Settings


@dataclass(frozen=True)
class Tuning:
    fetch_max_wait_ms: int     # broker-side wait for data in a fetch
    poll_timeout_ms: int       # client-side wait of an empty poll (the loop's idle tick)
    linger_ms: int             # producer batching delay
    max_batch_records: int     # records per poll (one processing batch)
    commit_interval_ms: int
    commit_every_records: int


def tuning(settings: Settings) -> Tuning:
    """The consumer/producer/loop parameters for ``settings.processing_mode``."""
    if settings.processing_mode == "latency":
        return Tuning(fetch_max_wait_ms=5, poll_timeout_ms=50, linger_ms=0,
                      max_batch_records=min(settings.max_batch_records, 500),
                      commit_interval_ms=settings.effective_commit_interval_ms,
                      commit_every_records=settings.commit_every_records)
    return Tuning(fetch_max_wait_ms=100, poll_timeout_ms=200, linger_ms=5,
                  max_batch_records=settings.max_batch_records,
                  commit_interval_ms=settings.effective_commit_interval_ms,
                  commit_every_records=settings.commit_every_records)


__all__ = ["Tuning", "tuning"]
