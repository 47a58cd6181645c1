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

import orjson
from aiokafka import AIOKafkaProducer

from ..kafka.clients import Kafka, client_kwargs
from ..serdes import json_dumps

Event = tuple[str, str, Any]  # (topic, key, value): a JSON value, or bytes sent as they are

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


FIRST_NAMES = ["Ada", "Alan", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis",
               "Frances", "Edsger", "Radia", "Tim", "Katherine", "John", "Hedy", "Donald"]
TIERS = ["PREMIUM", "REGULAR", "BASIC"]
TIER_WEIGHTS = [2, 5, 3]
CATEGORIES = ["books", "electronics", "garden", "toys", "grocery", "sports", "music"]
PRODUCT_NAMES = ["lamp", "kettle", "novel", "headphones", "rake", "puzzle", "coffee", "ball",
                 "guitar strings", "notebook", "charger", "tent"]
UNKNOWN_SHARE = 0.04  # transactions whose user (and, separately, product) does not exist
LATE_SHARE, LATE_STEPS = 0.03, 50  # transactions that arrive up to 50 steps late


def enrichment(rng: random.Random, count: int, start_ms: int, step_ms: float = 100
               ) -> Iterator[Event]:
    """Reference data first: users (keyed by user_id, tiers PREMIUM/REGULAR/BASIC) and products
    (keyed by product_id), then ``count`` transactions keyed by user_id. About 4 % of the
    transactions name a user that does not exist and about 4 % a product that does not; after
    each fifth of the transactions three users change tier. Event time starts at ``start_ms``
    and advances ``step_ms`` per transaction; about 3 % of the transactions arrive late (their
    ``ts`` up to 50 steps back), among them, three transactions after each tier change, one of
    a changed user from before the change: it gets the tier the user had at its ``ts``. The
    users rows carry no time: ``record_timestamps`` stamps them just before the next
    transaction."""
    n_users, n_products = max(20, count // 20), max(10, count // 40)
    user_ids = [f"u{i}" for i in range(n_users)]
    product_ids = [f"p{i}" for i in range(n_products)]
    for uid in user_ids:
        yield "users", uid, {"user_id": uid, "name": rng.choice(FIRST_NAMES),
                             "tier": rng.choices(TIERS, TIER_WEIGHTS)[0]}
    for pid in product_ids:
        price = Decimal(rng.randrange(100, 50000)) / 100
        yield "products", pid, {"product_id": pid, "name": rng.choice(PRODUCT_NAMES),
                                "category": rng.choice(CATEGORIES), "price": f"{price:.2f}"}
    fifth = max(1, count // 5)
    changed: list[str] = []
    changed_at = 0
    for i in range(count):
        if i and i % fifth == 0:
            changed, changed_at = rng.sample(user_ids, 3), i
            for uid in changed:
                yield "users", uid, {"user_id": uid, "name": rng.choice(FIRST_NAMES),
                                     "tier": rng.choice(TIERS)}
        uid = (f"u-unknown-{rng.randrange(1000)}" if rng.random() < UNKNOWN_SHARE
               else rng.choice(user_ids))
        pid = (f"p-unknown-{rng.randrange(1000)}" if rng.random() < UNKNOWN_SHARE
               else rng.choice(product_ids))
        amount = Decimal(rng.randrange(100, 100000)) / 100
        ts = start_ms + int(i * step_ms)
        if changed and i == changed_at + 3:
            # a transaction of a user who just changed tier, from before the change, arrives
            # late: it gets the tier the user had when it happened
            uid, ts = changed[0], start_ms + int((changed_at - 2) * step_ms)
        elif rng.random() < LATE_SHARE and i % fifth:
            # arrives late (not right after a tier change: the users rows are stamped with the
            # time of the transaction that follows them)
            ts = max(start_ms, ts - int(rng.randrange(1, LATE_STEPS) * step_ms))
        yield "transactions", uid, {"txn_id": f"t{i}", "user_id": uid, "product_id": pid,
                                    "amount": f"{amount:.2f}", "ts": ts}


MERCHANTS = ["grocer", "fuel", "coffee", "books", "pharmacy", "electronics", "travel", "cinema",
             "restaurant", "online-store"]
FRAUD_USERS = 3000
FRAUD_SPIKE_SHARE = 0.005  # transactions far above the user's usual level


def card_transactions(rng: random.Random, count: int, start_ms: int, step_ms: float = 10
                      ) -> Iterator[Event]:
    """Card transactions keyed by user_id for fraud_alerts: ``FRAUD_USERS`` users, each with a
    usual spending level (5-80); amounts are mostly 0.3-1.7 x that level, and about 0.5 % are
    spikes of 8-40 x it. Amounts are 2-place decimal strings, ``ts`` advances ``step_ms``."""
    levels = [Decimal(rng.randrange(500, 8000)) / 100 for _ in range(FRAUD_USERS)]
    for i in range(count):
        user = rng.randrange(FRAUD_USERS)
        if rng.random() < FRAUD_SPIKE_SHARE:
            factor = Decimal(rng.randrange(800, 4000)) / 100
        else:
            factor = Decimal(rng.randrange(30, 170)) / 100
        amount = max(Decimal("0.01"), (levels[user] * factor).quantize(Decimal("0.01")))
        user_id = f"user{user}"
        yield "card-transactions", user_id, {
            "txn_id": f"t{i}", "user_id": user_id, "amount": f"{amount:.2f}",
            "merchant": rng.choice(MERCHANTS), "ts": start_ms + int(i * step_ms),
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


PAYMENT_DUPLICATE_SHARE = 0.01   # a payment sent again (same payment_id and content)
PAYMENT_INVALID_SHARE = 0.01     # bad amount, from == to, or a missing field
PAYMENT_GARBAGE_SHARE = 0.005    # bytes that are not JSON, sent to `payments`
PAYMENT_OVERDRAFT_SHARE = 0.05   # an amount above what the account is likely to hold
CURRENCIES = ["EUR"]


def _money(cents: int) -> str:
    return f"{Decimal(cents) / 100:.2f}"


def payments(rng: random.Random, count: int, start_ms: int, step_ms: float = 10,
             accounts: int | None = None) -> Iterator[Event]:
    """Deposits first (keyed by account: every account one to three, 10.00-1000.00), then
    ``count`` payments keyed by from_account between random accounts (``accounts`` of them,
    default ``max(10, count // 20)``), mostly 0.01-200.00. Mixed in: about 1 % duplicates (an
    earlier payment sent again unchanged), 1 % INVALID payments (a bad amount, from == to or a
    missing field; amounts include "NaN" and Unicode digits), 0.5 % garbage (bytes that are not
    JSON in UTF-8), and about 5 % overdrafts (an
    amount far above any balance). ``ts`` advances ``step_ms`` per event. Deposit and payment
    ids end with ``-<start_ms>``: a later run (another start) never repeats an earlier run's
    payment_id, which payments would drop as a duplicate."""
    run = f"-{start_ms}"
    n_accounts = max(2, accounts if accounts is not None else max(10, count // 20))
    names = [f"acc{i}" for i in range(n_accounts)]
    i = 0

    def ts() -> int:
        return start_ms + int(i * step_ms)

    for account in names:
        for _ in range(rng.randint(1, 3)):
            yield "deposits", account, {"deposit_id": f"d{i}{run}", "account": account,
                                        "amount": _money(rng.randrange(1_000, 100_001)),
                                        "ts": ts()}
            i += 1
    sent: list[tuple[str, dict[str, Any]]] = []
    for n in range(count):
        roll = rng.random()
        if roll < PAYMENT_DUPLICATE_SHARE and sent:
            key, earlier = rng.choice(sent)
            yield "payments", key, dict(earlier)
            i += 1
            continue
        roll -= PAYMENT_DUPLICATE_SHARE
        if roll < PAYMENT_GARBAGE_SHARE:
            # ... and a well-formed payment in UTF-16: only UTF-8 is JSON on a topic
            utf16 = json_dumps({"payment_id": f"p{n}{run}"}).decode().encode("utf-16")
            garbage = rng.choice([b"not json", b"{\"payment_id\": ", b"\xff\xfe\x00",
                                  b"payment p" + str(n).encode(), utf16])
            yield "payments", rng.choice(names), garbage
            i += 1
            continue
        roll -= PAYMENT_GARBAGE_SHARE
        source, target = rng.sample(names, 2)
        cents = (rng.randrange(500_000, 10_000_000) if rng.random() < PAYMENT_OVERDRAFT_SHARE
                 else rng.randrange(1, 20_001))
        payment: dict[str, Any] = {
            "payment_id": f"p{n}{run}", "from_account": source, "to_account": target,
            "amount": _money(cents), "currency": rng.choice(CURRENCIES), "ts": ts()}
        if roll < PAYMENT_INVALID_SHARE:
            kind = rng.randrange(5)
            if kind == 0:
                payment["amount"] = rng.choice(["-5.00", "0.00", "12.5", "abc", "1e3", "7", "NaN",
                                                "١٠.٠٠", "1e999000"])  # Arabic-Indic digits
            elif kind == 1:
                payment["amount"] = float(cents) / 100  # a float is never money
            elif kind == 2:
                payment["to_account"] = source
            else:
                del payment[rng.choice(["to_account", "amount", "currency", "ts"])]
        sent.append((source, payment))
        yield "payments", source, payment
        i += 1


GENERATORS: dict[str, Callable[..., Iterator[Event]]] = {
    "profile_notifications": profile_views,
    "payments": payments,
    "trip_stats": rides,
    "enrichment": enrichment,
    "fraud_alerts": card_transactions,
    "order_shipments": orders_and_shipments,
}


# The topics each generator writes (what a later run continues after).
GENERATOR_TOPICS: dict[str, tuple[str, ...]] = {
    "profile_notifications": ("profile-views",),
    "payments": ("deposits", "payments"),
    "trip_stats": ("rides",),
    "enrichment": ("users", "products", "transactions"),
    "fraud_alerts": ("card-transactions",),
    "order_shipments": ("orders", "shipments"),
}
TAIL_RECORDS = 2000  # per partition: the newest event times are among the last records


async def latest_event_time(bootstrap: Kafka, topics: list[str], tail: int = TAIL_RECORDS
                            ) -> int | None:
    """The largest event time among the last ``tail`` records of every partition of ``topics``
    (None: no records): the record timestamp, or the value's ``ts`` when that is later (what
    the reference topologies read as event time). Generated events carry their ``ts`` as record
    timestamp; events arrive out of order by far less than ``tail`` records, so the maximum is
    there."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from ..kafka import admin

    parts = await admin.topic_partitions(bootstrap, topics)
    tps = [TopicPartition(t, p) for t, ps in parts.items() for p in ps]
    if not tps:
        return None
    consumer = AIOKafkaConsumer(**client_kwargs(bootstrap), enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        begins, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > begins[tp]}
        for tp in todo:
            consumer.seek(tp, max(begins[tp], ends[tp] - tail))
        latest: int | None = None
        empty_polls = 0
        while todo and empty_polls < 3:  # (a trailing marker may keep a position short)
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            empty_polls = 0 if batch else empty_polls + 1
            for records in batch.values():
                for rec in records:
                    ts = max(rec.timestamp, _value_ts(rec.value))
                    latest = ts if latest is None else max(latest, ts)
            todo = {tp for tp in todo if await consumer.position(tp) < ends[tp]}
        return latest
    finally:
        await consumer.stop()


def _value_ts(value: bytes | None) -> int:
    """The event time a reference topology reads: the value's ``ts`` field (-1: none). Input
    written by others (tests, users' producers) may carry a record timestamp that is not it."""
    try:
        doc = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        return -1
    ts = doc.get("ts") if isinstance(doc, dict) else None
    return ts if isinstance(ts, int) and not isinstance(ts, bool) else -1


async def continued_start(bootstrap: Kafka, name: str, now_ms: int | None = None,
                          topics: list[str] | None = None) -> int:
    """Where the event time of a new run of generator ``name`` starts: just after the latest
    event time already in its topics, or now if that is later. Starting at now regardless
    would put a second run behind the stream time the first one left in the workers (the
    generators run event time ahead of the wall clock), and windows and joins would drop
    almost all of it as late. ``topics``: instead of the generator's own."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if topics is None:
        topics = list(GENERATOR_TOPICS.get(name, ()))
    latest = await latest_event_time(bootstrap, topics)
    return now if latest is None else max(now, latest + 1)


def check_options(name: str, accounts: int | None = None) -> None:
    """LookupError for a topology without a generator, ValueError for an option that does not
    fit its generator."""
    if name not in GENERATORS:
        raise LookupError(f"no generator for topology {name!r} (have: {', '.join(GENERATORS)})")
    if accounts is not None:
        if name != "payments":
            raise ValueError(f"--accounts applies to the payments generator, not {name!r}")
        if accounts < 2:
            raise ValueError(f"--accounts must be at least 2 (payments go between accounts), "
                             f"got {accounts}")


def events(name: str, count: int, seed: int = 42, start_ms: int | None = None,
           rate: float | None = None, step_ms: float | None = None,
           accounts: int | None = None) -> list[Event]:
    """``count`` events of topology ``name``, the same for the same arguments. Event time
    starts at ``start_ms`` (default: now) and advances ``step_ms`` per event (default
    ``1000 / rate`` with a ``rate``, else the generator's own step). ``accounts``: how many
    accounts the payments generator uses (only it takes this option)."""
    check_options(name, accounts)
    start = int(time.time() * 1000) if start_ms is None else start_ms
    if step_ms is None and rate:
        step_ms = 1000 / rate
    extra: dict[str, Any] = {} if step_ms is None else {"step_ms": step_ms}
    if accounts is not None:
        extra["accounts"] = accounts
    return list(GENERATORS[name](random.Random(seed), count, start, **extra))


def record_timestamps(items: list[Event]) -> list[int | None]:
    """The Kafka record timestamp of each event: its ``ts`` field; an event without one (a
    user or product row) gets the ``ts`` of the next event that has one, minus 1 ms, so a
    worker reading in timestamp order applies it just before the events that followed it
    here (None, the producer's clock, when no such event follows).

    >>> record_timestamps([("users", "u1", {}), ("t", "u1", {"ts": 50}), ("users", "u1", {})])
    [49, 50, None]
    """
    out: list[int | None] = [None] * len(items)
    following: int | None = None
    for i in range(len(items) - 1, -1, -1):
        value = items[i][2]
        ts = value.get("ts") if isinstance(value, dict) else None
        if isinstance(ts, int) and not isinstance(ts, bool) and ts >= 0:
            out[i] = following = ts
        elif following is not None:
            out[i] = max(0, following - 1)
    return out


async def produce(bootstrap: Kafka, items: list[Event], rate: float | None = None,
                  progress: Callable[[int], None] | None = None) -> int:
    """Send ``items``; at most ``rate`` events/s if given. Returns the number sent.
    ``progress(n)`` is called with the number handed to the producer so far, every 100."""
    producer = AIOKafkaProducer(**client_kwargs(bootstrap), linger_ms=10, acks="all",
                                max_batch_size=512 * 1024)
    await producer.start()
    try:
        started = time.monotonic()
        futures = []
        stamps = record_timestamps(items)
        for i, (topic, key, value) in enumerate(items):
            # bytes are sent as they are: generators use them for garbage input
            data = value if isinstance(value, bytes) else json_dumps(value)
            futures.append(await producer.send(topic, data, key=key.encode(),
                                               timestamp_ms=stamps[i]))
            if progress is not None and i % 100 == 99:
                progress(i + 1)
            if rate and i % 100 == 99:
                ahead = (i + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*futures)
        return len(items)
    finally:
        await producer.stop()
