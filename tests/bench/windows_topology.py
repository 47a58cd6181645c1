"""Variant (a) of bench_windows.py: rides per city and 1-minute tumbling window on this framework.

wbench-rides {ride_id, rider_id, driver_id, city, fare, ts} keyed by city
  -> grouped by its key, the city (the input is already partitioned by city, so no
     repartition: the same work as the Quix and faust variants)
  -> 1-minute tumbling windows, grace 30 s, event time from ``ts``
  -> {rides, fare_total} (fare_total: Decimal sum, written with two places), emitted once per
     window when it closes -> wbench-out-streams
     value {rides, fare_total, window_start, window_end}, key = city

Not under topologies/ (the CLI's registry only finds those), so the benchmark runs it with
tests/bench/windows_runner.py.
"""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import Decimal

from streams import Topology, TumblingWindows

IN_TOPIC = os.environ.get("BENCH_IN_TOPIC", "wbench-rides")
OUT_TOPIC = os.environ.get("BENCH_OUT_TOPIC", "wbench-out-streams")

topology = Topology("wbench_windows", description="rides and fares per city and minute")


def new_totals() -> dict:
    return {"rides": 0, "fare_total": "0.00"}


def add_ride(totals: dict, ride: dict) -> dict:
    return {"rides": totals["rides"] + 1,
            "fare_total": f"{Decimal(totals['fare_total']) + Decimal(ride['fare']):.2f}"}


rides = topology.stream(IN_TOPIC, timestamp="ts")
(rides.group_by_key()
      .window(TumblingWindows(size=timedelta(minutes=1), grace=timedelta(seconds=30)))
      .aggregate(new_totals, add_ride, name="wbench-rides-per-city-1m", emit="final")
      .to(OUT_TOPIC))
