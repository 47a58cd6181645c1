"""A progress line while a worker works off a backlog: records/s, lag and ETA every few seconds,
and one line when it has caught up, then silence until a backlog builds up again.

The worker feeds it at every commit (where it measures the consumer lag anyway), so it adds no
work to the hot path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("streams.catchup")


class CatchUpProgress:
    """Say how a backlog shrinks. A backlog is a total lag of at least ``threshold`` records;
    while there is one, :meth:`observe` logs at most every ``interval_s`` seconds; once the lag
    is back to ``caught_up`` records or fewer it logs "caught up" once and stops.

    >>> lines = []
    >>> p = CatchUpProgress(interval_s=5, threshold=100, say=lines.append)
    >>> p.observe(lag=1000, processed=0, now=0.0)       # backlog found: start measuring
    >>> p.observe(lag=500, processed=500, now=5.0)
    >>> p.observe(lag=0, processed=1000, now=8.0)
    >>> p.observe(lag=0, processed=1000, now=20.0)      # caught up: nothing more
    >>> lines  # doctest: +NORMALIZE_WHITESPACE
    ['catching up: 500 records behind, 100 records/s, ETA 5 s',
     'caught up: 1,000 records in 8 s (125 records/s)']
    """

    def __init__(self, interval_s: float = 5.0, threshold: int = 1000, caught_up: int = 0,
                 say: Callable[[str], None] | None = None) -> None:
        self.interval_s, self.threshold, self.caught_up = interval_s, threshold, caught_up
        self.say = say or log.info
        self._start: tuple[float, int] | None = None  # (time, processed) when the backlog began
        self._last: tuple[float, int, int] = (0.0, 0, 0)  # (time, processed, lag) last line

    @property
    def active(self) -> bool:
        return self._start is not None

    def observe(self, lag: int, processed: int, now: float) -> None:
        """``lag``: records not processed yet over the worker's partitions; ``processed``: a
        running count of the records it processed; ``now``: a monotonic clock."""
        if self._start is None:
            if lag >= self.threshold:
                self._start = (now, processed)
                self._last = (now, processed, lag)
            return
        if lag <= self.caught_up:
            began, first = self._start
            took = max(now - began, 1e-9)
            done = processed - first
            self.say(f"caught up: {done:,} records in {took:.0f} s ({done / took:,.0f} "
                     "records/s)")
            self._start = None
            return
        at, before, lag_before = self._last
        if now - at < self.interval_s:
            return
        rate = (processed - before) / (now - at)
        shrink = (lag_before - lag) / (now - at)  # new input keeps arriving meanwhile
        eta = f"ETA {lag / shrink:,.0f} s" if shrink > 0 else "not shrinking"
        self.say(f"catching up: {lag:,} records behind, {rate:,.0f} records/s, {eta}")
        self._last = (now, processed, lag)
