"""Variant (d) of bench_windows.py: the Python ceiling -- a bare aiokafka consume loop that
decodes the JSON and adds each ride to an in-memory dict per (city, 1-minute window start).

No state store, no changelog, no output topic, no window closing: what any Python framework on
aiokafka pays at least. Offsets are committed every second (like the other variants). On
SIGTERM/SIGINT it commits once more and writes the dict as JSON to ``BENCH_RESULT_FILE`` (if
set) so the benchmark can check it as well.

Environment:
  BENCH_BROKER       bootstrap address, default 127.0.0.1:9092
  BENCH_GROUP        consumer group, default wbench-raw
  BENCH_IN_TOPIC     input topic, default wbench-rides
  BENCH_KEY_FIELD    the ride's field the windows are per, default city
  BENCH_RESULT_FILE  where to write {city: {window_start: [rides, "fare_total"]}} on exit

The consumer uses the framework worker's settings (read_committed, 4 MiB partition fetches,
5000 records per getmany).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from decimal import Decimal

from aiokafka import AIOKafkaConsumer

WINDOW_MS = 60_000


async def main() -> None:
    consumer = AIOKafkaConsumer(
        os.environ.get("BENCH_IN_TOPIC", "wbench-rides"),
        bootstrap_servers=os.environ.get("BENCH_BROKER", "127.0.0.1:9092"),
        group_id=os.environ.get("BENCH_GROUP", "wbench-raw"),
        enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_wait_ms=100)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await consumer.start()
    windows: dict[tuple[str, int], list] = {}
    key_field = os.environ.get("BENCH_KEY_FIELD", "city")
    loads = json.loads
    last_commit = time.monotonic()
    dirty = False
    try:
        while not stopping.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batch.values():
                dirty = True
                for rec in records:
                    ride = loads(rec.value)
                    ts = ride["ts"]
                    key = (ride[key_field], ts - ts % WINDOW_MS)
                    agg = windows.get(key)
                    if agg is None:
                        windows[key] = [1, Decimal(ride["fare"])]
                    else:
                        agg[0] += 1
                        agg[1] += Decimal(ride["fare"])
            if dirty and time.monotonic() - last_commit >= 1.0:
                await consumer.commit()
                last_commit, dirty = time.monotonic(), False
        await consumer.commit()
    finally:
        await consumer.stop()
    path = os.environ.get("BENCH_RESULT_FILE")
    if path:
        out: dict[str, dict[str, list]] = {}
        for (city, start), (n, total) in windows.items():
            out.setdefault(city, {})[str(start)] = [n, f"{total:.2f}"]
        with open(path, "w") as fh:
            json.dump(out, fh)


if __name__ == "__main__":
    asyncio.run(main())
