"""Window math against brute force: which windows hold a timestamp, their bounds, validation."""

from __future__ import annotations

import doctest
from datetime import timedelta

import pytest
from hypothesis import given, strategies as st

import streams
from streams.dsl import window_specs as windows
from streams.dsl.window_specs import (HoppingWindows, JoinWindows, SessionWindows,
                                      SlidingWindows, TumblingWindows)


def brute_force(size: int, advance: int, ts: int) -> list[tuple[int, int]]:
    """Every window starting at a non-negative multiple of ``advance`` that holds ``ts``."""
    return [(s, s + size) for s in range(0, max(ts, 0) + 1, advance) if s <= ts < s + size]


@st.composite
def hopping(draw: st.DrawFn) -> HoppingWindows:
    size = draw(st.integers(1, 60))
    return HoppingWindows(size=size, advance=draw(st.integers(1, size)))


@given(w=hopping(), ts=st.one_of(st.integers(-5, 200), st.sampled_from([0, 1])))
def test_hopping_windows_for_matches_brute_force(w: HoppingWindows, ts: int) -> None:
    got = w.windows_for(ts)
    assert got == brute_force(w.size_ms, w.advance_ms, ts)
    if ts >= 0:  # every timestamp is in size/advance windows, fewer near the epoch
        assert 1 <= len(got) <= -(-w.size_ms // w.advance_ms)


@given(size=st.integers(1, 60), ts=st.integers(-5, 500))
def test_tumbling_windows_for_is_the_one_window(size: int, ts: int) -> None:
    got = TumblingWindows(size=size).windows_for(ts)
    assert got == brute_force(size, size, ts)
    assert got == ([] if ts < 0 else [(ts // size * size, ts // size * size + size)])


@given(w=hopping(), ts=st.integers(10**12, 10**12 + 10**6))
def test_large_timestamps(w: HoppingWindows, ts: int) -> None:
    got = w.windows_for(ts)
    assert all(s <= ts < e and s % w.advance_ms == 0 and e - s == w.size_ms for s, e in got)
    # far from the epoch: one window per multiple of advance in (ts - size, ts]
    assert len(got) in (w.size_ms // w.advance_ms, -(-w.size_ms // w.advance_ms))


def test_windows_near_the_epoch_never_start_before_it() -> None:
    w = HoppingWindows(size=10, advance=3)
    assert w.windows_for(0) == [(0, 10)]
    assert w.windows_for(4) == [(0, 10), (3, 13)]
    assert w.windows_for(10) == [(3, 13), (6, 16), (9, 19)]
    assert TumblingWindows(size=10).windows_for(9) == [(0, 10)]
    assert TumblingWindows(size=10).windows_for(10) == [(10, 20)]  # end is exclusive


def test_timedelta_sizes_are_milliseconds() -> None:
    w = HoppingWindows(size=timedelta(minutes=5), advance=timedelta(minutes=1),
                       grace=timedelta(seconds=30))
    assert (w.size_ms, w.advance_ms, w.grace_ms) == (300_000, 60_000, 30_000)
    assert TumblingWindows(timedelta(seconds=1)).windows_for(1500) == [(1000, 2000)]


def test_close_times() -> None:
    # half-open windows close at end + grace; inclusive ends one ms later; sessions also wait
    # for the gap (Kafka Streams: closed when end < stream time - gap - grace)
    assert TumblingWindows(size=10, grace=5).close_time(20) == 25
    assert HoppingWindows(size=10, advance=5, grace=0).close_time(15) == 15
    assert SessionWindows(gap=5, grace=2).close_time(100) == 108
    assert SlidingWindows(max_difference=10, grace=2).close_time(100) == 103


def test_inclusive_bounds() -> None:
    assert SlidingWindows(max_difference=10).windows_of_record(100) == ((90, 100), (101, 111))
    assert SlidingWindows(timedelta(seconds=1)).max_difference_ms == 1000
    assert SessionWindows(gap=5).merge_bounds(100) == (95, 105)
    j = JoinWindows(before=5, after=2)
    assert j.bounds(100) == (95, 102)
    assert j.reverse_bounds(100) == (98, 105)
    # a pair joins from both sides or from neither
    for left in range(90, 110):
        assert (j.bounds(left)[0] <= 100 <= j.bounds(left)[1]) == (
            j.reverse_bounds(100)[0] <= left <= j.reverse_bounds(100)[1])


@pytest.mark.parametrize("make, message", [
    (lambda: TumblingWindows(size=0), "TumblingWindows.size must be > 0"),
    (lambda: TumblingWindows(size=10, grace=-1), "TumblingWindows.grace must be >= 0"),
    (lambda: HoppingWindows(size=10, advance=0), "HoppingWindows.advance must be > 0"),
    (lambda: HoppingWindows(size=10, advance=11), "must be <= size"),
    (lambda: HoppingWindows(size=-1, advance=1), "HoppingWindows.size must be > 0"),
    (lambda: SlidingWindows(max_difference=0), "SlidingWindows.max_difference must be > 0"),
    (lambda: SessionWindows(gap=0), "SessionWindows.gap must be > 0"),
    (lambda: SessionWindows(gap=timedelta(seconds=1), grace=-5), "grace must be >= 0"),
    (lambda: JoinWindows(before=-1, after=0), "JoinWindows.before must be >= 0"),
])
def test_invalid_specs_are_refused(make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        make()


def test_public_names_and_doctests() -> None:
    for name in ("TumblingWindows", "HoppingWindows", "SlidingWindows", "SessionWindows",
                 "JoinWindows"):
        assert getattr(streams, name) is getattr(windows, name)
    assert "NotImplementedError" not in (windows.__doc__ or "")
    result = doctest.testmod(windows)
    assert result.attempted >= 6 and result.failed == 0
