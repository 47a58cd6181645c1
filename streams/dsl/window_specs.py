"""Window specifications and their math, with Kafka Streams' bounds.

Times are epoch milliseconds; sizes are ``timedelta`` or int milliseconds. Windows are aligned to
the epoch. Two kinds of bounds:

* time windows (tumbling, hopping) are half-open ``[start, end)``: a record at ``end`` is in
  the next window;
* sliding windows, sessions and join windows are inclusive ``[start, end]``.

A window is closed once no record that could fall into it is accepted any more: records
``grace`` older than stream time are still accepted, so ``close_time(end)`` is ``end + grace``
for half-open windows ("a window closes when stream time >= end + grace", as Kafka Streams'
``KStreamWindowAggregate``), ``end + grace + 1`` for sliding windows' inclusive ends (closed when
``end < stream time - grace``) and ``end + gap + grace + 1`` for sessions (a record up to ``gap``
after the end still merges into it: closed when ``end < stream time - gap - grace``, as
``KStreamSessionWindowAggregate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

Duration = timedelta | int


def to_ms(d: Duration) -> int:
    """``d`` (a timedelta or int milliseconds) in milliseconds.

    >>> to_ms(timedelta(seconds=2)), to_ms(500)
    (2000, 500)
    """
    return int(d.total_seconds() * 1000) if isinstance(d, timedelta) else int(d)


def _check(cls: str, field: str, value: Duration, *, positive: bool) -> int:
    ms = to_ms(value)
    if ms < 0 or (positive and ms == 0):
        raise ValueError(f"{cls}.{field} must be {'> 0' if positive else '>= 0'}, got {ms} ms")
    return ms


class _Graced:
    grace: Duration

    @property
    def grace_ms(self) -> int:
        """How long after a window's end late records are still accepted, in ms."""
        return to_ms(self.grace)


class _InclusiveEnd(_Graced):
    def close_time(self, window_end: int) -> int:
        """The stream time at which the window ending (inclusive) at ``window_end`` closes:
        a record at ``window_end`` still belongs to it, so one ms after ``end + grace``."""
        return window_end + self.grace_ms + 1


class _TimeWindows(_Graced):
    """What tumbling and hopping windows share: epoch-aligned ``[start, start + size)``."""

    size: Duration

    @property
    def size_ms(self) -> int:
        """The window size in ms."""
        return to_ms(self.size)

    @property
    def advance_ms(self) -> int:
        """How far apart window starts are, in ms."""
        raise NotImplementedError

    def windows_for(self, ts: int) -> list[tuple[int, int]]:
        """[(start, end)] of the windows holding ``ts``, by start (empty for ``ts < 0``).

        >>> HoppingWindows(size=10, advance=5).windows_for(12)
        [(5, 15), (10, 20)]
        >>> HoppingWindows(size=10, advance=5).windows_for(-1)
        []
        """
        size, advance = self.size_ms, self.advance_ms
        start = max(0, ts - size + advance) // advance * advance
        out = []
        while start <= ts:
            out.append((start, start + size))
            start += advance
        return out

    def close_time(self, window_end: int) -> int:
        """The stream time at which the window ending (exclusive) at ``window_end`` closes."""
        return window_end + self.grace_ms


@dataclass(frozen=True)
class TumblingWindows(_TimeWindows):
    """Fixed-size, non-overlapping windows ``[start, start + size)`` (end exclusive), with
    ``start`` a non-negative multiple of ``size``.

    >>> TumblingWindows(size=10).windows_for(25)
    [(20, 30)]
    >>> TumblingWindows(size=10).windows_for(20)
    [(20, 30)]
    """

    size: Duration
    grace: Duration = 0

    def __post_init__(self) -> None:
        _check("TumblingWindows", "size", self.size, positive=True)
        _check("TumblingWindows", "grace", self.grace, positive=False)

    @property
    def advance_ms(self) -> int:
        """How far apart window starts are, in ms."""
        return self.size_ms

    def describe(self) -> str:
        """One line for ``Topology.describe``.

        >>> TumblingWindows(size=60_000, grace=5_000).describe()
        'tumbling 60000 ms, grace 5000 ms'
        """
        return f"tumbling {self.size_ms} ms, grace {self.grace_ms} ms"

    def windows_for(self, ts: int) -> list[tuple[int, int]]:
        """[(start, end)] of the one window holding ``ts`` (empty for ``ts < 0``).

        >>> TumblingWindows(size=10).windows_for(25)
        [(20, 30)]
        """
        # The one window, without the hopping loop (this runs once per record).
        if ts < 0:
            return []
        size = to_ms(self.size)
        start = ts - ts % size
        return [(start, start + size)]


@dataclass(frozen=True)
class HoppingWindows(_TimeWindows):
    """Windows ``[start, start + size)`` (end exclusive) starting at every non-negative multiple
    of ``advance``: a record at ``ts`` is in each one with ``start <= ts < start + size``, as
    Kafka Streams' ``TimeWindows.windowsFor`` (no window starts before 0).

    >>> HoppingWindows(size=10, advance=5).windows_for(12)
    [(5, 15), (10, 20)]
    >>> HoppingWindows(size=10, advance=5).windows_for(3)
    [(0, 10)]
    """

    size: Duration
    advance: Duration
    grace: Duration = 0

    def __post_init__(self) -> None:
        size = _check("HoppingWindows", "size", self.size, positive=True)
        advance = _check("HoppingWindows", "advance", self.advance, positive=True)
        if advance > size:
            raise ValueError(f"HoppingWindows.advance ({advance} ms) must be <= size ({size} ms)")
        _check("HoppingWindows", "grace", self.grace, positive=False)

    @property
    def advance_ms(self) -> int:
        """How far apart window starts are, in ms."""
        return to_ms(self.advance)

    def describe(self) -> str:
        """One line for ``Topology.describe``.

        >>> HoppingWindows(size=300_000, advance=60_000).describe()
        'hopping 300000 ms every 60000 ms, grace 0 ms'
        """
        return f"hopping {self.size_ms} ms every {self.advance_ms} ms, grace {self.grace_ms} ms"


@dataclass(frozen=True)
class SlidingWindows(_InclusiveEnd):
    """Windows ``[start, end]``, inclusive at both ends, with ``end - start = max_difference``:
    two records are in a common window when their timestamps differ by at most
    ``max_difference`` (Kafka Streams' ``SlidingWindows.ofTimeDifferenceAndGrace``). Windows are
    defined by the data: a record at ``ts`` defines the window ending at it and the one starting
    just after it.

    >>> SlidingWindows(max_difference=10).windows_of_record(100)
    ((90, 100), (101, 111))
    """

    max_difference: Duration
    grace: Duration = 0

    def __post_init__(self) -> None:
        _check("SlidingWindows", "max_difference", self.max_difference, positive=True)
        _check("SlidingWindows", "grace", self.grace, positive=False)

    @property
    def max_difference_ms(self) -> int:
        """The largest time difference of two records in one window, in ms."""
        return to_ms(self.max_difference)

    def describe(self) -> str:
        """One line for ``Topology.describe``.

        >>> SlidingWindows(max_difference=600_000).describe()
        'sliding 600000 ms, grace 0 ms'
        """
        return f"sliding {self.max_difference_ms} ms, grace {self.grace_ms} ms"

    def windows_of_record(self, ts: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(the window ending at ``ts``, the window starting at ``ts + 1``), inclusive bounds.

        >>> SlidingWindows(max_difference=10).windows_of_record(100)
        ((90, 100), (101, 111))
        """
        d = self.max_difference_ms
        return (ts - d, ts), (ts + 1, ts + 1 + d)


@dataclass(frozen=True)
class SessionWindows(_InclusiveEnd):
    """Per-key sessions ``[start, end]`` (inclusive: the first and last record's timestamps):
    a record at ``ts`` merges with every session of its key that ends at ``ts - gap`` or later
    and starts at ``ts + gap`` or earlier.

    >>> SessionWindows(gap=5).merge_bounds(100)
    (95, 105)
    """

    gap: Duration
    grace: Duration = 0

    def __post_init__(self) -> None:
        _check("SessionWindows", "gap", self.gap, positive=True)
        _check("SessionWindows", "grace", self.grace, positive=False)

    @property
    def gap_ms(self) -> int:
        """The inactivity gap that ends a session, in ms."""
        return to_ms(self.gap)

    def describe(self) -> str:
        """One line for ``Topology.describe``.

        >>> SessionWindows(gap=timedelta(minutes=30)).describe()
        'session gap 1800000 ms, grace 0 ms'
        """
        return f"session gap {self.gap_ms} ms, grace {self.grace_ms} ms"

    def close_time(self, window_end: int) -> int:
        """The stream time at which the session ending (inclusive) at ``window_end`` closes:
        a record at ``window_end + gap`` may still merge into it until then.

        >>> SessionWindows(gap=5, grace=2).close_time(100)
        108
        """
        return window_end + self.gap_ms + self.grace_ms + 1

    def merge_bounds(self, ts: int) -> tuple[int, int]:
        """(earliest end, latest start) of the sessions a record at ``ts`` merges with: the
        arguments of ``SessionStoreView.fetch_sessions``.

        >>> SessionWindows(gap=5).merge_bounds(100)
        (95, 105)
        """
        return ts - self.gap_ms, ts + self.gap_ms


@dataclass(frozen=True)
class JoinWindows(_Graced):
    """Stream-stream join window: a record at ``ts`` joins the other side's records with
    timestamps in ``[ts - before, ts + after]`` (inclusive).

    >>> JoinWindows(before=5, after=2).bounds(100)
    (95, 102)
    >>> JoinWindows(before=5, after=2).reverse_bounds(100)
    (98, 105)
    """

    before: Duration
    after: Duration
    grace: Duration = 0

    def __post_init__(self) -> None:
        _check("JoinWindows", "before", self.before, positive=False)
        _check("JoinWindows", "after", self.after, positive=False)
        _check("JoinWindows", "grace", self.grace, positive=False)

    @property
    def before_ms(self) -> int:
        """How far a left record looks back for right records, in ms."""
        return to_ms(self.before)

    @property
    def after_ms(self) -> int:
        """How far a left record looks ahead for right records, in ms."""
        return to_ms(self.after)

    def bounds(self, ts: int) -> tuple[int, int]:
        """Inclusive range of the other side's timestamps a left record at ``ts`` joins.

        >>> JoinWindows(before=5, after=2).bounds(100)
        (95, 102)
        """
        return ts - self.before_ms, ts + self.after_ms

    def reverse_bounds(self, ts: int) -> tuple[int, int]:
        """Inclusive range of the left side's timestamps a right record at ``ts`` joins.

        >>> JoinWindows(before=5, after=2).reverse_bounds(100)
        (98, 105)
        """
        return ts - self.after_ms, ts + self.before_ms
