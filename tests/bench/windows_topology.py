"""Variant (a) of bench_windows.py: rides per key and 1-minute tumbling window on this framework.

``BENCH_WORKLOAD`` picks the key:

- ``city`` (default): wbench-rides {ride_id, rider_id, driver_id, city, fare, ts} keyed by city
  -> grouped by its key, the city (the input is already partitioned by city, so no
  repartition: the same work as the Quix and faust variants);
- ``keys-update``: rides keyed by driver (100,000 drivers): grouped by that key (no
  repartition), windows emitted on every update (``emit="update"``);
- ``driver-repartition``: the same rides re-keyed by ``driver_id`` through the internal topic
  ``wbench_windows-by-driver-repartition`` (the input stays keyed by city);

then 1-minute tumbling windows, grace 30 s, event time from ``ts``
  -> {rides, fare_total} (fare_total: Decimal sum, written with two places), emitted once per
     window when it closes -> wbench-out-streams
     value {rides, fare_total, window_start, window_end}, key = city or driver.

Rides a window drops as late go to ``BENCH_LATE_TOPIC`` (default wbench-late-streams), so the
benchmark can count them.

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
LATE_TOPIC = os.environ.get("BENCH_LATE_TOPIC", "wbench-late-streams")
WORKLOAD = os.environ.get("BENCH_WORKLOAD", "city")
REPARTITION_NAME = "by-driver"

topology = Topology("wbench_windows", description="rides and fares per key and minute",
                    late_topic=LATE_TOPIC)


def new_totals() -> dict:
    return {"rides": 0, "fare_total": "0.00"}


def add_ride(totals: dict, ride: dict) -> dict:
    return {"rides": totals["rides"] + 1,
            "fare_total": f"{Decimal(totals['fare_total']) + Decimal(ride['fare']):.2f}"}


rides = topology.stream(IN_TOPIC, timestamp="ts")
emit = "final"
if WORKLOAD == "city":
    grouped = rides.group_by_key()
    table_name = "wbench-rides-per-city-1m"
elif WORKLOAD == "keys-update":
    grouped = rides.group_by_key()
    table_name = "wbench-rides-per-driver-1m"
    emit = "update"
elif WORKLOAD == "driver-repartition":
    grouped = rides.group_by(lambda r: r["driver_id"], name=REPARTITION_NAME)
    table_name = "wbench-rides-per-driver-1m"
else:
    raise SystemExit(f"BENCH_WORKLOAD must be city, keys-update or driver-repartition, "
                     f"not {WORKLOAD!r}")
(grouped.window(TumblingWindows(size=timedelta(minutes=1), grace=timedelta(seconds=30)))
        .aggregate(new_totals, add_ride, name=table_name, emit=emit)
        .to(OUT_TOPIC))
