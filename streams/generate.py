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


def profile_views(rng: random.Random, count: int, start_ms: int, step_ms: float = 10
                  ) -> Iterator[Event]:
    for i in range(count):
        viewer = f"u{rng.randrange(5000)}"
        yield "profile-views", viewer, {
            "viewer_id": viewer,
            "viewer_title": rng.choice(TITLES),
            "profile_id": f"p{rng.randrange(1000)}",
            "source": rng.choice(SOURCES),
            "ts": start_ms + int(i * step_ms),
        }


RIDE_DISORDER_MS = 20_000         # rides arrive up to this much out of order ...
RIDE_LATE_SHARE = 0.01            # ... except about this share of them,
RIDE_LATE_MS = (31_000, 120_000)  # which are this much behind: beyond trip_stats' 30 s grace


def rides(rng: random.Random, count: int, start_ms: int, step_ms: float = 100
          ) -> Iterator[Event]:
    """Rides keyed by city. A base clock starts at ``start_ms`` and advances ``step_ms`` per
    ride (``--rate R`` makes it 1000/R, so event time keeps pace with the wall clock); a ride's
    ``ts`` is the base minus a random 0-20 s (out of order), and about 1 % of the rides are
    31-120 s behind the base instead: later than the 30 s grace of trip_stats' windows (whether
    one is actually late depends on its window and on the stream time when it arrives)."""
    for i in range(count):
        city = rng.choice(CITIES)
        base = start_ms + int(i * step_ms)
        if rng.random() < RIDE_LATE_SHARE:
            ts = base - rng.randint(*RIDE_LATE_MS)
        else:
            ts = base - rng.randint(0, RIDE_DISORDER_MS)
        fare = Decimal(rng.randrange(500, 6000)) / 100
        yield "rides", city, {
            "ride_id": f"r{i}", "rider_id": f"rider{rng.randrange(2000)}",
            "driver_id": f"d{rng.randrange(300)}", "city": city,
            "fare": f"{fare:.2f}", "ts": ts,
        }


DAY_MS = 86_400_000
ORDER_UNSHIPPED_SHARE = 0.10       # orders that never ship
ORDER_LATE_SHIPMENT_SHARE = 0.05   # shipments 7-9 days after their order: outside the window
ORDER_DISORDER_MS = 10 * 60_000    # events arrive up to 10 min out of event-time order
CARRIERS = ["dhl", "ups", "fedex", "dpd", "gls", "post"]


def orders_and_shipments(rng: random.Random, count: int, start_ms: int, step_ms: float = 100
                         ) -> Iterator[Event]:
    """``count`` orders keyed by order_id, one every ``step_ms`` of event time, and their
    shipments (same key): about 10 % never ship, about 5 % ship 7-9 days after the order
    (beyond order_shipments' 7-day window), the rest within 0-6 days. Orders and shipments come
    interleaved in event-time order, up to 10 minutes out of order (within the 1 h grace)."""
    timed: list[tuple[int, int, Event]] = []
    for i in range(count):
        order_id = f"o{i}"
        ts = start_ms + int(i * step_ms)
        order = {"order_id": order_id, "customer_id": f"c{rng.randrange(20000)}",
                 "amount": f"{Decimal(rng.randrange(100, 50000)) / 100:.2f}", "ts": ts}
        timed.append((ts + rng.randrange(ORDER_DISORDER_MS), len(timed),
                      ("orders", order_id, order)))
        roll = rng.random()
        if roll < ORDER_UNSHIPPED_SHARE:
            continue
        if roll < ORDER_UNSHIPPED_SHARE + ORDER_LATE_SHIPMENT_SHARE:
            delay = rng.randrange(7 * DAY_MS + 60_000, 9 * DAY_MS)
        else:
            delay = rng.randrange(0, 6 * DAY_MS)
        shipment = {"shipment_id": f"s{i}", "order_id": order_id,
                    "carrier": rng.choice(CARRIERS), "ts": ts + delay}
        timed.append((ts + delay + rng.randrange(ORDER_DISORDER_MS), len(timed),
                      ("shipments", order_id, shipment)))
    timed.sort()
    for _arrival, _n, event in timed:
        yield event


GENERATORS: dict[str, Callable[..., Iterator[Event]]] = {
    "profile_notifications": profile_views,
    "trip_stats": rides,
    "order_shipments": orders_and_shipments,
}


def events(name: str, count: int, seed: int = 42, start_ms: int | None = None,
           rate: float | None = None, step_ms: float | None = None) -> list[Event]:
    """``count`` events of topology ``name``, the same for the same arguments. Event time
    starts at ``start_ms`` (default: now) and advances ``step_ms`` per event (default
    ``1000 / rate`` with a ``rate``, else the generator's own step)."""
    if name not in GENERATORS:
        raise LookupError(f"no generator for topology {name!r} (have: {', '.join(GENERATORS)})")
    start = int(time.time() * 1000) if start_ms is None else start_ms
    if step_ms is None and rate:
        step_ms = 1000 / rate
    extra = {} if step_ms is None else {"step_ms": step_ms}
    return list(GENERATORS[name](random.Random(seed), count, start, **extra))


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
