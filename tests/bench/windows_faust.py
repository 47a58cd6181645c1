"""Variant (b) of bench_windows.py: rides per city and 1-minute tumbling window, hand-written
on faust-streaming the way faust's documentation shows (an agent over a topic of Records, a
windowed table relative to the event's timestamp, at-least-once).

Run by the benchmark as a subprocess::

    BENCH_BROKER=127.0.0.1:9092 python tests/bench/windows_faust.py worker -l warn

Environment:
  BENCH_BROKER         bootstrap address, default 127.0.0.1:9092
  BENCH_FAUST_APP_ID   app id = consumer group = prefix of faust's topics, default wbench-faust
  BENCH_IN_TOPIC       input topic, default wbench-rides
  BENCH_PARTITIONS     partitions of the table's changelog, default 4
  BENCH_FAUST_DATADIR  faust's data directory, default a fresh temporary directory

The result is the table itself: its changelog topic ``<app id>-ride-totals-changelog`` holds
every update of every (city, window); the last one per window is the window's aggregate.
faust has no event-time "final" emit: windows expire (``on_window_close``) by comparing the
window end with the wall clock (``time.time()`` in ``Table._del_old_keys``), so ``expires`` is
set to a day (the benchmark's data ends "now") and nothing expires during a run -- an expired
window would be re-created empty by a record that arrives out of order after the cleanup.

Event time: the benchmark writes each ride with Kafka timestamp = ``ts``, so
``relative_to_stream()`` (the record timestamp, which faust hands over in seconds) puts a ride
into the same window as its ``ts`` field. ``relative_to_field(Ride.ts)`` would need ``ts`` in
seconds: faust's windows and expiry are in seconds.

The commit interval is 1 s (faust's default is 2.8 s), as for the other variants.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from datetime import timedelta
from decimal import Decimal

import faust

BROKER = os.environ.get("BENCH_BROKER", "127.0.0.1:9092")
IN_TOPIC = os.environ.get("BENCH_IN_TOPIC", "wbench-rides")
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "4"))
KEY_FIELD = os.environ.get("BENCH_KEY_FIELD", "city")   # what the windows are per


class Ride(faust.Record, serializer="json"):
    ride_id: str
    rider_id: str
    driver_id: str
    city: str
    fare: str
    ts: int


app = faust.App(
    os.environ.get("BENCH_FAUST_APP_ID", "wbench-faust"),
    broker=f"kafka://{BROKER}",
    store="memory://",
    datadir=os.environ.get("BENCH_FAUST_DATADIR") or tempfile.mkdtemp(prefix="wbench-faust-"),
    # web_enabled alone is not enough: `faust worker` sets it from its own --with-web /
    # --without-web flag, default --with-web (see __main__ below); loopback if ever on
    web_enabled=False,
    web_bind="127.0.0.1",
    topic_partitions=PARTITIONS,
    consumer_auto_offset_reset="earliest",
    broker_commit_interval=1.0,
    producer_acks=-1,
    producer_linger=0.005,
)

rides = app.topic(IN_TOPIC, key_type=str, value_type=Ride)


def new_totals() -> dict:
    return {"rides": 0, "fare_total": "0.00"}


totals = app.Table(
    "ride-totals", default=new_totals, partitions=PARTITIONS,
).tumbling(timedelta(minutes=1), expires=timedelta(days=1)).relative_to_stream()


@app.agent(rides)
async def count_rides(stream):  # type: ignore[no-untyped-def]
    # faust 0.15 / mode 0.7 leave the root logger at DEBUG for `-l warn` (only the handler
    # filters), so every debug() call builds a LogRecord; the framework worker sets aiokafka
    # to WARNING, do the same here (as tests/bench/faust_baseline.py does).
    logging.getLogger().setLevel(logging.WARNING)
    async for ride in stream:
        key = getattr(ride, KEY_FIELD)
        current = totals[key].current()  # the window of this event's timestamp
        totals[key] = {
            "rides": current["rides"] + 1,
            "fare_total": f"{Decimal(current['fare_total']) + Decimal(ride.fare):.2f}",
        }


if __name__ == "__main__":
    # `faust worker` overrides web_enabled with its --with-web flag (on by default) and would
    # serve on 0.0.0.0:6066: run without the web server unless --with-web is asked for
    if sys.argv[1:2] == ["worker"] and not {"--with-web", "--without-web"} & set(sys.argv):
        sys.argv.append("--without-web")
    app.main()
