"""trip_stats' windowed outputs on the TopologyTestDriver against brute-force oracles, over
generated rides (out of order, ~1 % beyond the grace). One partition: the city task sees the
rides in input order, so its stream time at each ride is the max ts so far."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from streams.devtools import generate
from streams.testing import TopologyTestDriver
from topologies.trip_stats import topology

MIN, GRACE = 60_000, 30_000


def _city_oracle(rides: list[dict[str, Any]], size: int, advance: int
                 ) -> tuple[dict[tuple[str, int], list[Any]], set[str]]:
    """{(city, window start): [rides, fare total, largest ride ts]} and the ride ids late for
    every window."""
    windows: dict[tuple[str, int], list[Any]] = {}
    late = set()
    now = -1
    for r in rides:
        ts = r["ts"]
        now = max(now, ts)
        starts = [s for s in range(max(0, ts - size + advance) // advance * advance, ts + 1,
                                   advance) if s <= ts < s + size]
        open_ = [s for s in starts if now < s + size + GRACE]
        if not open_:
            late.add(r["ride_id"])
        for s in open_:
            w = windows.setdefault((r["city"], s), [0, Decimal(0), ts])
            w[0] += 1
            w[1] += Decimal(r["fare"])
            w[2] = max(w[2], ts)
    return windows, late


def _run(n: int, seed: int) -> tuple[TopologyTestDriver, list[dict[str, Any]]]:
    events = generate.events("trip_stats", n, seed=seed, start_ms=1_700_000_000_000)
    driver = TopologyTestDriver(topology, commit_every=700)
    for i in range(0, n, 250):
        driver.pipe_batch("rides", [(k, v, None) for _, k, v in events[i:i + 250]])
    return driver, [v for _, _, v in events]


def test_per_city_windows_and_late_rides_match_the_oracle() -> None:
    driver, rides = _run(6_000, seed=13)
    with driver:
        oracle_1m, late_1m = _city_oracle(rides, MIN, MIN)
        oracle_5m, late_5m = _city_oracle(rides, 5 * MIN, MIN)
        assert late_1m, "the generator must produce some late rides"
        now = max(r["ts"] for r in rides)
        before = driver.read_output("rides-per-city-1m")
        # Final: only closed windows so far, each once, with its final aggregate.
        closed = {k: v[:2] for k, v in oracle_1m.items() if k[1] + MIN + GRACE <= now}
        assert len(before) == len(closed)
        driver.advance_stream_time(now + 40 * MIN)       # everything closes (sessions: gap 30 min)
        emitted = before + driver.read_output("rides-per-city-1m")
        got = {(k, v["window_start"]): [v["rides"], Decimal(v["fare_total"])] for k, v in emitted}
        assert len(got) == len(emitted), "each window once"
        assert got == {k: v[:2] for k, v in oracle_1m.items()}
        # each stamped with its window's largest ride timestamp (as Kafka Streams)
        stamps = {(r.key.decode(), json.loads(r.value)["window_start"]): r.timestamp
                  for r in driver.topics["rides-per-city-1m"]}
        assert stamps == {k: v[2] for k, v in oracle_1m.items()}
        for k, v in emitted:
            assert v["city"] == k and v["window_end"] == v["window_start"] + MIN
            assert Decimal(v["fare_total"]).as_tuple().exponent == -2
        # Update mode: the last update of each hopping window is its aggregate.
        last: dict[tuple[str, int], list[Any]] = {}
        for k, v in driver.read_output("rides-per-city-5m"):
            assert v["window_end"] - v["window_start"] == 5 * MIN
            last[(k, v["window_start"])] = [v["rides"], Decimal(v["fare_total"])]
        assert last == {k: v[:2] for k, v in oracle_5m.items()}
        # Late rides: in rides-late, named by the aggregation they were late for.
        by_node: dict[str, list[str]] = {}
        for rec in driver.read_records("rides-late"):
            h = {k: v.decode() for k, v in rec.headers}
            assert h["reason"] == "late" and h["source-topic"] == "rides"
            by_node.setdefault(h["node"], []).append(json.loads(rec.value)["ride_id"])
        assert sorted(by_node["rides-per-city-1m-window"]) == sorted(late_1m)
        assert sorted(by_node.get("rides-per-city-5m-window", [])) == sorted(late_5m)
        # Sessions: every ride is in exactly one final session or late for sessions.
        sessions = driver.read_output("rider-sessions")
        n_late = len(by_node.get("rider-sessions-window", []))
        assert sum(v["rides"] for _, v in sessions) + n_late == len(rides)
        assert all(v["window_start"] <= v["window_end"] and v["rider_id"] == k
                   for k, v in sessions)
        assert all(r.timestamp == json.loads(r.value)["window_end"]  # stamped with the end
                   for r in driver.topics["rider-sessions"])
        # Busy drivers: sliding windows of 10 min with more than 5 rides, each once; a window's
        # count is every ride in its bounds (inclusive) that arrived while it was open.
        busy = driver.read_output("busy-drivers")
        assert busy and all(v["rides"] > 5 and v["driver_id"] == k and
                            v["window_end"] - v["window_start"] == 10 * MIN for k, v in busy)
        assert len({(k, v["window_start"]) for k, v in busy}) == len(busy)
        now_at: list[int] = []
        driver_now: int = -1
        for r in rides:  # the driver task sees the rides in input order, too
            driver_now = max(driver_now, r["ts"])
            now_at.append(driver_now)
        for k, v in busy[:200]:
            s, e = v["window_start"], v["window_end"]
            expected = sum(1 for r, at in zip(rides, now_at, strict=True) if r["driver_id"] == k and
                           s <= r["ts"] <= e and at <= e + GRACE)
            assert v["rides"] == expected, (k, v)
        # Closed windows are deleted (with their time index entries): the stores are empty.
        assert driver.table("rides-per-city-1m") == {}
        assert driver.table("rides-per-city-5m") == {}
        assert driver.table("busy-drivers") == {}
