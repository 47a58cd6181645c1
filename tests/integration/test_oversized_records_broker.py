"""Oversized records against the real broker, under both guarantees: no record stops the
worker; dead letters are truncated to fit; an oversized result is a dead letter with its
record's state change rolled back; the producer names a record the broker refuses."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streams import Topology
from streams.kafka import admin
from streams.runtime.context import Output
from streams.runtime.transport import KafkaTransport
from streams.runtime.record_limits import MAX_RECORD_BYTES, RecordTooLarge, headers_bytes

from .eos_support import (InProcessWorker, create_topics, delete_topics, eos_settings, read_all,
                          wait_for)

# invalid JSON just below the broker's default batch limit (1048588): what crash-looped trip_stats
# (at-least-once) and payments (exactly-once)
BIG_INVALID = b"{" + b"x" * (1_048_450 - 1)
BIG_VALID = json.dumps({"k": "a", "pad": "x" * 1_040_000}).encode()  # too large to repartition


def _topology() -> tuple[Topology, str, str]:
    """in -> repartition by ``k`` -> count per key (a huge value when ``huge``) -> out."""
    name = f"big_{uuid.uuid4().hex[:8]}"
    t = Topology(name)
    (t.stream(f"{name}-in").group_by(lambda v: v["k"], name="by-k")
     .aggregate(lambda: 0, lambda n, v: "x" * MAX_RECORD_BYTES if v.get("huge") else n + 1,
                name="counts")
     .to(f"{name}-out"))
    return t, f"{name}-in", f"{name}-out"


async def _produce(kafka: str, topic: str, records: list[bytes]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=kafka, max_request_size=2_000_000, acks="all")
    await p.start()
    try:
        for value in records:  # in order, into one partition
            await (await p.send(topic, value, key=b"a", partition=0))
    finally:
        await p.stop()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_oversized_records_never_stop_the_worker(kafka: str, tmp_path: Path,
                                                 guarantee: str) -> None:
    """Formerly the first record's dead letter (the whole value plus headers) was refused by
    the broker: at-least-once stopped with ``fatal: MessageSizeTooLargeError``, exactly-once
    with ``CommitFailed``, and again after every restart."""
    topology, source, sink = _topology()
    create_topics(kafka, topology, 1)
    settings = eos_settings(kafka, tmp_path / "state", partitions=1,
                            processing_guarantee=guarantee)
    records = [BIG_INVALID, BIG_VALID, b'{"k": "a", "huge": true}', b'{"k": "a"}']

    async def run() -> tuple[list, list]:
        await _produce(kafka, source, records)
        async with InProcessWorker(topology, settings) as worker:
            async def done() -> bool:
                return (worker._fatal is not None  # noqa: SLF001 - fail fast
                        or (len(await read_all(kafka, sink)) >= 1
                            and len(await read_all(kafka, topology.dlq_topic)) >= 3))
            await wait_for(done, 60, "the output and three dead letters")
            assert worker._fatal is None, worker._fatal  # noqa: SLF001
        return await read_all(kafka, sink), await read_all(kafka, topology.dlq_topic)

    try:
        out, dead = asyncio.run(run())
    finally:
        delete_topics(kafka, topology)
    # only the last record counted: the failed ones changed no state
    assert [(r.key, json.loads(r.value)) for r in out] == [(b"a", 1)]
    letters = sorted(dead, key=lambda r: int(dict(r.headers)["source-offset"]))
    assert [dict(r.headers)["source-offset"] for r in letters] == [b"0", b"1", b"2"]
    assert [dict(r.headers)["reason"] for r in letters] == [b"decode", b"processing",
                                                            b"processing"]
    for letter, original in zip(letters[:2], records[:2], strict=True):
        h = dict(letter.headers)
        assert h["truncated"] == b"true"
        assert h["original-value-size"] == str(len(original)).encode()
        assert h["source-topic"] == source.encode() and h["source-partition"] == b"0"
        assert original.startswith(letter.value)
        assert (len(letter.key or b"") + len(letter.value) + headers_bytes(letter.headers)
                <= MAX_RECORD_BYTES)
    assert f"from input {source}[0]@1" in dict(letters[1].headers)["error"].decode()
    assert "counts" in dict(letters[2].headers)["error"].decode()  # the table refused it
    assert "truncated" not in dict(letters[2].headers)


def test_broker_refusal_names_the_record(kafka: str) -> None:
    """A topic configured below the runtime's record limit: the flush fails naming the
    refused record and the input it came from, not with a bare MessageSizeTooLargeError."""
    topic = f"small-{uuid.uuid4().hex[:8]}"
    admin.run(admin.ensure_topics(kafka, [admin.TopicSpec(topic, 1,
                                                          {"max.message.bytes": "2000"})]))

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all")
        await producer.start()
        try:
            transport = KafkaTransport(producer, None)
            await transport.send([Output(topic, 0, b"k", b"x" * 5000, None,
                                         [("source-topic", b"rides"),
                                          ("source-partition", b"1"),
                                          ("source-offset", b"9")])])
            await transport.flush()
        finally:
            await producer.stop()

    try:
        with pytest.raises(RecordTooLarge, match=rf"{topic}\[0\].*from input rides\[1\]@9"):
            asyncio.run(send())
    finally:
        admin.run(admin.delete_topics(kafka, [topic]))
