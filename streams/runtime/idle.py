"""Idle close: stream time of a quiet task follows the wall clock (setting ``idle_close_ms``).

Windows close by stream time, and stream time only moves with input: when a partition goes
quiet, its last windows would wait for the next record forever. With ``idle_close_ms > 0``, a
task whose input partitions delivered nothing for that much wall time has its stream time
advanced by the wall time that passed (first by the whole quiet period, then by what passed
since the previous advance), so final windows come out without waiting for the next event.

Trade-off: a record that arrives after such an advance is judged against the advanced stream
time, so records that are merely delayed on the way in (a slow producer, a paused upstream)
become late and are dropped. Keep ``idle_close_ms`` well above the delays the input can have;
0 (the default) turns it off.

:class:`IdleTracker` is the timing logic alone (an injected clock, no tasks), so it is unit
tested without a worker; the worker feeds it and applies what it returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable

_EPS = 1e-6  # ms: float noise of the clock arithmetic must not cost a whole millisecond


class IdleTracker:
    """Per task, the wall time of its last input and of its last idle advance.

    ``seen(task)`` on input; ``due(running)`` at most every ``check_every_ms`` returns
    ``[(task, elapsed_ms)]`` for the tasks quiet for ``idle_ms`` or more: advance each one's
    stream time by ``elapsed_ms``. A task first met in ``due`` (a task that just started, e.g.
    restored after a restart) counts as having had input at that moment.
    """

    def __init__(self, idle_ms: int, clock: Callable[[], float] = time.monotonic,
                 check_every_ms: int = 100) -> None:
        if idle_ms < 0:
            raise ValueError(f"idle_close_ms must be >= 0, got {idle_ms}")
        self.idle_ms = idle_ms
        self.check_every_ms = check_every_ms
        self._clock = clock
        self._last_input: dict[Hashable, float] = {}  # ms, from the clock
        self._last_advance: dict[Hashable, float] = {}  # the reference for the next advance
        self._last_check: float | None = None

    def _now_ms(self) -> float:
        return self._clock() * 1000

    @property
    def enabled(self) -> bool:
        return self.idle_ms > 0

    def seen(self, task: Hashable) -> None:
        """``task`` processed input now: it is not idle, and the next idle advance (after
        ``idle_ms`` of quiet) counts from now."""
        if self.idle_ms <= 0:
            return
        now = self._now_ms()
        self._last_input[task] = now
        self._last_advance[task] = now

    def due(self, running: Iterable[Hashable]) -> list[tuple[Hashable, int]]:
        """[(task, ms to advance its stream time by)] for the ``running`` tasks that are idle;
        empty if disabled or if the last check was less than ``check_every_ms`` ago. Tasks no
        longer running are forgotten."""
        if self.idle_ms <= 0:
            return []
        now = self._now_ms()
        if self._last_check is not None and now - self._last_check < self.check_every_ms - _EPS:
            return []
        self._last_check = now
        running = set(running)
        for gone in [t for t in self._last_input if t not in running]:
            del self._last_input[gone]
            del self._last_advance[gone]
        out = []
        for task in running:
            last = self._last_input.get(task)
            if last is None:
                self._last_input[task] = self._last_advance[task] = now
                continue
            if now - last < self.idle_ms - _EPS:
                continue
            elapsed = int(now - self._last_advance[task] + _EPS)
            if elapsed <= 0:
                continue
            # Keep the fraction of a millisecond that int() cut off for the next advance, so
            # stream time does not drift behind the wall clock over many small advances.
            self._last_advance[task] += elapsed
            out.append((task, elapsed))
        return out


__all__ = ["IdleTracker"]
