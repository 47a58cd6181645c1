"""Baseline for bench_profile_notifications.py: the profile_notifications logic as a bare
aiokafka consume -> filter -> produce loop (the floor any framework on aiokafka pays).

Run by the benchmark as a subprocess; stops on SIGTERM/SIGINT, then waits for every produced
record to be acknowledged and commits the consumed offsets once.

Environment:
  BENCH_BROKER     bootstrap address (host:port), default 127.0.0.1:9092
  BENCH_GROUP      consumer group, default bench-raw
  BENCH_IN_TOPIC   input topic, default profile-views
  BENCH_OUT_TOPIC  output topic, default bench-raw-out

Consumer and producer use the same settings as the framework worker (read_committed, 4 MiB
partition fetches, 5000 records per getmany; idempotent producer, acks=all, linger 5 ms,
512 KiB batches), so the difference to the worker is the framework's own per-record work.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

NOTABLE_TITLES = ("Recruiter", "Hiring Manager", "CEO", "CTO")


async def main() -> None:
    broker = os.environ.get("BENCH_BROKER", "127.0.0.1:9092")
    out_topic = os.environ.get("BENCH_OUT_TOPIC", "bench-raw-out")
    consumer = AIOKafkaConsumer(
        os.environ.get("BENCH_IN_TOPIC", "profile-views"),
        bootstrap_servers=broker, group_id=os.environ.get("BENCH_GROUP", "bench-raw"),
        enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_wait_ms=100)
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", enable_idempotence=True,
                                linger_ms=5, max_batch_size=512 * 1024)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await producer.start()
    await consumer.start()
    futures: list[asyncio.Future] = []
    loads, dumps, send = json.loads, json.dumps, producer.send
    try:
        while not stopping.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batch.values():
                for rec in records:
                    view = loads(rec.value)
                    title = view.get("viewer_title") or ""
                    if any(t in title for t in NOTABLE_TITLES):
                        futures.append(await send(
                            out_topic, dumps(view, separators=(",", ":")).encode(),
                            key=str(view["profile_id"]).encode(), timestamp_ms=rec.timestamp))
            if len(futures) > 50_000:  # keep memory bounded; still no commit until the end
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
        await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(main())
