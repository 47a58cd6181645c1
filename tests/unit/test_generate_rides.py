"""`streams generate trip_stats`: out-of-order rides, a few beyond the grace, per seed."""

from __future__ import annotations

import doctest
from decimal import Decimal

from streams.devtools import generate


def test_rides_are_deterministic_per_seed() -> None:
    a = generate.events("trip_stats", 2_000, seed=3, start_ms=10**12)
    assert a == generate.events("trip_stats", 2_000, seed=3, start_ms=10**12)
    assert a != generate.events("trip_stats", 2_000, seed=4, start_ms=10**12)


def test_rides_disorder_and_late_share() -> None:
    start, n = 10**12, 20_000
    evs = generate.events("trip_stats", n, seed=5, start_ms=start)
    behind = [start + i * 100 - v["ts"] for i, (_, _, v) in enumerate(evs)]
    in_order = [b for b in behind if b <= 20_000]
    late = [b for b in behind if b > 20_000]
    assert min(behind) >= 0 and max(in_order) > 19_000
    assert all(31_000 <= b <= 120_000 for b in late)         # later than the 30 s grace
    assert 0.006 * n < len(late) < 0.014 * n                  # about 1 %
    # Really out of order: many rides are older than one sent before them.
    ts = [v["ts"] for _, _, v in evs]
    assert sum(1 for x, y in zip(ts, ts[1:], strict=False) if y < x) > n // 3


def test_rides_keep_the_contract_fields() -> None:
    for topic, key, v in generate.events("trip_stats", 500, seed=1):
        assert topic == "rides" and key == v["city"]
        assert set(v) == {"ride_id", "rider_id", "driver_id", "city", "fare", "ts"}
        assert Decimal(v["fare"]).as_tuple().exponent == -2


def test_rate_sets_the_pace_of_event_time() -> None:
    evs = generate.events("trip_stats", 1_001, seed=2, start_ms=0, rate=1000)
    assert max(v["ts"] for _, _, v in evs) <= 1_000            # 1 ms per ride at 1000/s
    slow = generate.events("trip_stats", 1_001, seed=2, start_ms=0, step_ms=600)
    assert max(v["ts"] for _, _, v in slow) > 500_000           # 10 min of event time


def test_rows_without_event_time_are_stamped_just_before_the_events_that_follow_them() -> None:
    # A worker reads a task's inputs in timestamp order: users and products produced before
    # the transactions must not carry a later timestamp (the producer's clock) than them.
    evs = generate.events("enrichment", 200, seed=3, start_ms=1_000_000)
    stamps = generate.record_timestamps(evs)
    for i, (topic, _key, value) in enumerate(evs):
        if "ts" in value:
            assert stamps[i] == value["ts"]
        else:
            following = next(v["ts"] for _, _, v in evs[i + 1:] if "ts" in v)
            assert stamps[i] == following - 1, (topic, i)
    # Time only goes back at a transaction that arrives late, never at a users/products row.
    assert all(a is None or b is None or a <= b + 1 or evs[i + 1][0] == "transactions"
               for i, (a, b) in enumerate(zip(stamps, stamps[1:], strict=False)))
    assert doctest.testmod(generate).failed == 0
