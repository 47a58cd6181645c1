"""``streams generate`` continues event time across runs: a second run starts after the latest
event time already in the input topics, so the workers do not find it behind their stream
time (late). On the shared broker, on topics of its own."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaProducer

from streams.devtools import generate
from streams.kafka import admin

GRACE_MS = 30_000  # trip_stats' windows


def _rides(topic: str, count: int, seed: int, start_ms: int) -> list[generate.Event]:
    return [(topic, k, v) for _, k, v in generate.events("trip_stats", count, seed=seed,
                                                         start_ms=start_ms)]


async def _produce_raw(kafka: str, topic: str, value: bytes) -> None:
    """One record with the producer's own (wall clock) record timestamp."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka)
    await producer.start()
    try:
        # a record timestamp far behind every event time here
        await producer.send_and_wait(topic, value, key=b"y", timestamp_ms=1_000)
    finally:
        await producer.stop()


def test_second_run_starts_after_the_first_runs_event_time(kafka: str) -> None:
    topic = f"gen-continue-{uuid.uuid4().hex[:8]}"
    try:
        assert admin.run(generate.latest_event_time(kafka, [topic])) is None  # no topic
        admin.run(admin.ensure_topics(kafka, [admin.TopicSpec(topic, 4)]))
        assert admin.run(generate.latest_event_time(kafka, [topic])) is None  # no records
        start = 1_700_000_000_000
        first = _rides(topic, 3000, seed=1, start_ms=start)
        admin.run(generate.produce(kafka, first))
        newest = max(v["ts"] for _, _, v in first)
        # a record sent last with an old timestamp: the newest event time is not the last one's
        admin.run(generate.produce(kafka, [(topic, "x", {"ts": start})]))
        # input written by another producer: its record timestamp is the wall clock, its
        # event time (the value's ts, what the topologies read) an hour past the first run's
        ahead = newest + 3_600_000
        admin.run(_produce_raw(kafka, topic, b'{"ts": %d}' % ahead))
        newest = ahead
        # "now" is where the first run started: the wall clock is behind the generated data
        now = start
        assert admin.run(generate.latest_event_time(kafka, [topic])) == newest
        second_start = admin.run(generate.continued_start(kafka, "trip_stats", now_ms=now,
                                                          topics=[topic]))
        assert second_start > newest
        # What that means for trip_stats: the second run's rides are late (beyond the grace
        # behind the first run's stream time) only where the generator makes them late (~1 %).
        second = _rides(topic, 3000, seed=2, start_ms=second_start)
        late = [v for _, _, v in second if v["ts"] < newest - GRACE_MS]
        assert len(late) < 0.02 * len(second), len(late)
        # and later than the wall clock, a run starts at the wall clock
        later = newest + 3_600_000
        assert admin.run(generate.continued_start(kafka, "trip_stats", now_ms=later,
                                                  topics=[topic])) == later
    finally:
        admin.run(admin.delete_topics(kafka, [topic]))
