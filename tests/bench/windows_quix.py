"""Variant (c) of bench_windows.py: rides per key and 1-minute tumbling window (grace 30 s) on
Quix Streams, written the way its documentation shows, emitting each window once when it closes.

Run by the benchmark as a subprocess (stops gracefully on SIGTERM)::

    BENCH_BROKER=127.0.0.1:9092 python tests/bench/windows_quix.py

Environment:
  BENCH_BROKER      bootstrap address, default 127.0.0.1:9092
  BENCH_GROUP       consumer group (also names Quix's changelog topic), default wbench-quix
  BENCH_IN_TOPIC    input topic, default wbench-rides
  BENCH_OUT_TOPIC   output topic, default wbench-out-quix
  BENCH_STATE_DIR   Quix's RocksDB state directory, default a fresh temporary directory
  BENCH_WORKLOAD    city (default), keys-update or driver-repartition
  BENCH_LATE_FILE   where to write, on exit, the number of rides the window dropped as late

Workload ``keys-update``: the rides are keyed by driver; no ``group_by``, and ``.current()``
instead of ``.final()``: every record emits its window's new value. Workload ``city``: the
rides are already keyed by city, so no ``group_by`` (it would add a
repartition topic that Quix's docs only ask for when the key must change). Workload
``driver-repartition``: ``sdf.group_by("driver_id")`` re-keys them by driver through Quix's
repartition topic ``repartition__<group>--wbench-rides--driver_id``. Event time comes from the
``ts`` field. Rides dropped as late are counted by the window's ``on_late`` callback (which
returns False, so Quix does not also log each one).
``.final()`` uses Quix's default closing strategy "key": a window closes when the largest
timestamp seen *for its key* passes window end + grace (the framework uses the largest timestamp
of the task, i.e. of the partition), so at the very end of the input a few windows may be
closed in one and still open in the other; the benchmark compares the windows both closed.
Output values are flattened to ``{rides, fare_total, window_start, window_end}`` like the
framework's. Commit interval 1 s (Quix's default is 5 s), as for the other variants.
"""

from __future__ import annotations

import logging
import os
import tempfile
from decimal import Decimal

from quixstreams import Application
from quixstreams.models import TopicConfig

BROKER = os.environ.get("BENCH_BROKER", "127.0.0.1:9092")
IN_TOPIC = os.environ.get("BENCH_IN_TOPIC", "wbench-rides")
OUT_TOPIC = os.environ.get("BENCH_OUT_TOPIC", "wbench-out-quix")


def ride_ts(value: dict, headers: object, timestamp: int, timestamp_type: object) -> int:
    return value["ts"]


def initializer(ride: dict) -> dict:
    return {"rides": 1, "fare_total": f"{Decimal(ride['fare']):.2f}"}


def reducer(totals: dict, ride: dict) -> dict:
    return {"rides": totals["rides"] + 1,
            "fare_total": f"{Decimal(totals['fare_total']) + Decimal(ride['fare']):.2f}"}


class LateCounter:
    """``on_late`` callback of the window: counts the rides it drops as late."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *args: object, **kwargs: object) -> bool:
        self.count += 1
        return False  # not logged


def flatten(window: dict) -> dict:
    return {**window["value"], "window_start": window["start"], "window_end": window["end"]}


def main() -> None:
    app = Application(
        broker_address=BROKER,
        consumer_group=os.environ.get("BENCH_GROUP", "wbench-quix"),
        auto_offset_reset="earliest",
        commit_interval=1.0,
        state_dir=os.environ.get("BENCH_STATE_DIR") or tempfile.mkdtemp(prefix="wbench-quix-"),
        processing_guarantee="at-least-once",
        loglevel="WARNING",
    )
    rides = app.topic(IN_TOPIC, key_deserializer="str", value_deserializer="json",
                      timestamp_extractor=ride_ts)
    out = app.topic(OUT_TOPIC, key_serializer="str", value_serializer="json",
                    config=TopicConfig(num_partitions=4, replication_factor=1))
    sdf = app.dataframe(rides)
    workload = os.environ.get("BENCH_WORKLOAD", "city")
    if workload == "driver-repartition":
        sdf = sdf.group_by("driver_id")
    elif workload not in ("city", "keys-update"):
        raise SystemExit(f"BENCH_WORKLOAD must be city, keys-update or driver-repartition, "
                         f"not {workload!r}")
    late = LateCounter()
    window = (sdf.tumbling_window(duration_ms=60_000, grace_ms=30_000, on_late=late)
                 .reduce(reducer=reducer, initializer=initializer))
    # keys-update: one output per updated window per record, like the framework's emit="update"
    sdf = window.current() if workload == "keys-update" else window.final()
    sdf = sdf.apply(flatten)
    sdf.to_topic(out)
    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    app.run()
    late_file = os.environ.get("BENCH_LATE_FILE")
    if late_file:
        with open(late_file, "w") as fh:
            fh.write(f"{late.count}\n")


if __name__ == "__main__":
    main()
