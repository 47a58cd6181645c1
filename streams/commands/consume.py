"""``streams consume TOPIC``: print (or count) the records of a topic, for operators.

It reads ``read_committed``, as the workers do: a transaction's commit/abort markers take
offsets but are not records, and records of aborted transactions are never shown or counted.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from ..kafka import admin
from ..kafka.clients import Kafka, client_kwargs
from .options import FiniteFloat, bootstrap, broker_option
from .progress import TerminalProgress

DEFAULT_LIMIT = 10


@dataclass
class Selection:
    """Which records to read: the topic's partitions (or some) from ``offset`` (or each one's
    beginning), up to ``limit`` (None: no limit), stopping at the end unless ``follow``."""

    topic: str
    partitions: tuple[int, ...] = ()
    offset: int | None = None
    limit: int | None = DEFAULT_LIMIT
    follow: bool = False
    timeout: float = 5.0


def record_json(rec: Any, headers: bool) -> str:
    """One record as a JSON line: partition, offset, timestamp (epoch ms), key, value (UTF-8
    text, undecodable bytes replaced) and, with ``headers``, the headers as an object."""
    def text(b: bytes | None) -> str | None:
        return b.decode(errors="replace") if b is not None else None

    out: dict[str, Any] = {"partition": rec.partition, "offset": rec.offset,
                           "timestamp": rec.timestamp, "key": text(rec.key),
                           "value": text(rec.value)}
    if headers:
        out["headers"] = {k: text(v) for k, v in (rec.headers or ())}
    return json.dumps(out)


async def _partitions(kafka: Kafka, topic: str, wanted: tuple[int, ...]) -> list[int]:
    parts = (await admin.topic_partitions(kafka, [topic])).get(topic)
    if not parts:
        raise LookupError(f"topic {topic!r} does not exist")
    missing = sorted(set(wanted) - set(parts))
    if missing:
        raise LookupError(f"topic {topic!r} has no partition {missing[0]} (it has partitions "
                          f"{parts[0]}-{parts[-1]})")
    return sorted(set(wanted)) if wanted else parts


async def read(kafka: Kafka, sel: Selection, emit: Callable[[Any], None],
               progress: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """Hand each selected record to ``emit``; return (records, offsets read). Stops at the end
    offsets found at the start (last stable offsets: markers and aborted records included),
    at ``limit`` records, or after ``timeout`` seconds without any progress; never with
    ``follow`` (until interrupted or ``limit``)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    parts = await _partitions(kafka, sel.topic, sel.partitions)
    consumer = AIOKafkaConsumer(**client_kwargs(kafka), enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(sel.topic, p) for p in parts]
        consumer.assign(tps)
        if sel.offset is None:
            await consumer.seek_to_beginning(*tps)
        else:
            for tp in tps:
                consumer.seek(tp, sel.offset)
        starts = {tp: await consumer.position(tp) for tp in tps}
        ends = await consumer.end_offsets(tps)
        total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
        records = 0
        loop = asyncio.get_running_loop()
        last_progress, seen = loop.time(), 0
        while sel.limit is None or records < sel.limit:
            positions = {tp: await consumer.position(tp) for tp in tps}
            seen = sum(max(0, min(positions[tp], ends[tp]) - starts[tp]) for tp in tps)
            if progress is not None:  # offsets read of the total, or records of the limit
                limited = sel.limit is not None and sel.limit < total
                progress(*((records, sel.limit) if limited else (seen, total)))
            if not sel.follow and all(positions[tp] >= ends[tp] for tp in tps):
                break
            if not sel.follow and loop.time() - last_progress > sel.timeout:
                break  # (the end moved back: a topic deleted and created again meanwhile)
            batch = await consumer.getmany(*tps, timeout_ms=300)
            if batch:
                last_progress = loop.time()
            for tp in tps:  # partition by partition, each in offset order
                for rec in batch.get(tp, ()):
                    if sel.limit is not None and records >= sel.limit:
                        break
                    emit(rec)
                    records += 1
        return records, seen
    finally:
        await consumer.stop()


@click.command("consume")
@click.argument("topic")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help=f"at most this many records (default: {DEFAULT_LIMIT}; with --follow: no "
                   "limit)")
@click.option("--timeout", type=FiniteFloat(), default=5.0, show_default=True,
              help="give up after this many seconds without new records (not with --follow)")
@click.option("--count", "count_only", is_flag=True,
              help="only print how many records TOPIC holds (transaction markers and aborted "
                   "records are not records)")
@click.option("--follow", "-f", is_flag=True,
              help="keep printing records as they arrive, until Ctrl-C")
@click.option("--headers", "with_headers", is_flag=True,
              help="include each record's headers (dead letters carry their reason there)")
@click.option("--partition", "-p", "partitions", type=click.IntRange(min=0), multiple=True,
              help="only this partition (repeatable; default: all)")
@click.option("--offset", type=click.IntRange(min=0), default=None,
              help="start at this offset in each partition read (default: the beginning)")
@broker_option
def consume_cmd(topic: str, limit: int | None, timeout: float, count_only: bool, follow: bool,
                with_headers: bool, partitions: tuple[int, ...], offset: int | None,
                broker: str | None) -> None:
    """Print records of TOPIC from the beginning as JSON lines: partition, offset, timestamp
    (epoch ms), key, value (and headers). Reads committed records only (read_committed)."""
    kafka = bootstrap(broker)
    if count_only and follow:
        raise click.UsageError("--count and --follow do not go together")
    if limit is None and not follow and not count_only:
        limit = DEFAULT_LIMIT
    sel = Selection(topic, partitions, offset, None if count_only else limit, follow, timeout)
    # Progress (stderr, on a terminal) unless records go to that same terminal or it follows.
    bar = TerminalProgress("read", None)
    with_progress = count_only or not (follow or sys.stdout.isatty())

    def show(done: int, total: int) -> None:
        bar.total = total
        bar.update(done)

    def emit(rec: Any) -> None:
        if not count_only:
            click.echo(record_json(rec, with_headers))

    try:
        records, offsets = asyncio.run(read(kafka, sel, emit, show if with_progress else None))
    finally:
        bar.close()
    if count_only:
        where = (f"partition {', '.join(map(str, sorted(set(partitions))))}" if partitions else
                 f"{len(asyncio.run(admin.topic_partitions(kafka, [topic]))[topic])} partitions")
        skipped = offsets - records
        note = (f" ({offsets} offsets: {skipped} are transaction markers or aborted records)"
                if skipped else "")
        click.echo(f"{topic}: {records} records in {where}{note}")
