"""Realistic input for the reference topologies (``streams generate NAME``).

Each generator is deterministic for a seed, so tests can rebuild the same input for an oracle.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaProducer

from .dsl.serdes import json_dumps

Event = tuple[str, str, dict[str, Any]]  # (topic, key, value)

TITLES = ["Software Engineer", "Senior Software Engineer", "Technical Recruiter", "Recruiter",
          "Hiring Manager", "CEO", "CTO", "Product Manager", "Data Scientist", "Student",
          "Engineering Manager", "Designer", "VP Sales", "Founder & CEO", "Talent Recruiter"]
SOURCES = ["search", "feed", "profile", "email", "people-you-may-know"]
CITIES = ["berlin", "paris", "london", "madrid", "rome", "vienna", "lisbon", "prague"]


def profile_views(rng: random.Random, count: int, start_ms: int) -> Iterator[Event]:
    for i in range(count):
        viewer = f"u{rng.randrange(5000)}"
        yield "profile-views", viewer, {
            "viewer_id": viewer,
            "viewer_title": rng.choice(TITLES),
            "profile_id": f"p{rng.randrange(1000)}",
            "source": rng.choice(SOURCES),
            "ts": start_ms + i * 10,
        }


def rides(rng: random.Random, count: int, start_ms: int) -> Iterator[Event]:
    """Rides keyed by city, up to 20 s out of order and a few much later."""
    for i in range(count):
        city = rng.choice(CITIES)
        ts = start_ms + i * 100 - rng.randrange(20_000)
        if rng.random() < 0.01:
            ts -= rng.randrange(60_000, 300_000)
        fare = Decimal(rng.randrange(500, 6000)) / 100
        yield "rides", city, {
            "ride_id": f"r{i}", "rider_id": f"rider{rng.randrange(2000)}",
            "driver_id": f"d{rng.randrange(300)}", "city": city,
            "fare": f"{fare:.2f}", "ts": ts,
        }


GENERATORS: dict[str, Callable[[random.Random, int, int], Iterator[Event]]] = {
    "profile_notifications": profile_views,
    "trip_stats": rides,
}


def events(name: str, count: int, seed: int = 42, start_ms: int | None = None) -> list[Event]:
    if name not in GENERATORS:
        raise LookupError(f"no generator for topology {name!r} (have: {', '.join(GENERATORS)})")
    start = int(time.time() * 1000) if start_ms is None else start_ms
    return list(GENERATORS[name](random.Random(seed), count, start))


async def produce(bootstrap: str, items: list[Event], rate: float | None = None) -> int:
    """Send ``items``; at most ``rate`` events/s if given. Returns the number sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, acks="all",
                                max_batch_size=512 * 1024)
    await producer.start()
    try:
        started = time.monotonic()
        futures = []
        for i, (topic, key, value) in enumerate(items):
            futures.append(await producer.send(topic, json_dumps(value), key=key.encode()))
            if rate and i % 100 == 99:
                ahead = (i + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*futures)
        return len(items)
    finally:
        await producer.stop()
