"""Records too large for the broker: a copy of an input (dead letter, late record) is truncated
to fit, with headers saying so; an oversized result is a dead letter naming its input; the
producer refuses, naming the record, anything that would still exceed the broker's limit.

Each test docstring says what the code did before."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import Topology, TumblingWindows
from streams.runtime.context import Output
from streams.runtime.transport import KafkaTransport
from streams.runtime.record_limits import (BROKER_MAX_MESSAGE_BYTES, MAX_ERROR_BYTES,
                                           MAX_RECORD_BYTES, RecordTooLarge, fit_copy,
                                           headers_bytes)
from streams.testing import TopologyTestDriver
from tests.conftest import examples

#: what the reproduction of the fault sent: invalid JSON just below the broker's batch limit
BIG_INVALID = b"{" + b"x" * (1_048_450 - 1)


def _size(rec: object) -> int:
    return (len(rec.key or b"") + len(rec.value or b"")  # type: ignore[attr-defined]
            + headers_bytes(rec.headers))  # type: ignore[attr-defined]


@settings(max_examples=examples(200), deadline=None)
@given(klen=st.integers(0, 9000), vlen=st.integers(0, 9000), none_value=st.booleans(),
       error=st.integers(0, 4000), limit=st.integers(2500, 8000))
def test_fit_copy_always_fits_and_says_what_it_cut(klen: int, vlen: int, none_value: bool,
                                                   error: int, limit: int) -> None:
    key, value = b"k" * klen, None if none_value else b"v" * vlen
    headers = [("error", b"e" * error), ("reason", b"decode"), ("source-offset", b"7")]
    k, v, h = fit_copy(key, value, headers, limit=limit)
    size = len(k or b"") + len(v or b"") + headers_bytes(h)
    assert size <= limit
    hd = dict(h)
    assert len(hd["error"]) <= MAX_ERROR_BYTES + 3 and hd["source-offset"] == b"7"
    assert key.startswith(k or b"") and (value is None) == (v is None)
    if value is not None:
        assert value.startswith(v)
    if "truncated" in hd:
        assert hd["truncated"] == b"true"
        assert int(hd["original-key-size"]) == klen
        assert int(hd["original-value-size"]) == len(value or b"")
        assert (len(k or b""), len(v or b"")) != (klen, len(value or b""))
    else:
        assert (k, v) == (key, value)


def test_oversized_invalid_input_is_a_truncated_dead_letter(reasons: list[str]) -> None:
    """Formerly the dead letter copied the whole 1,048,450-byte value: with its headers the
    broker refused it, the commit failed and the worker stopped, again on every restart."""
    t = Topology("big_in")
    t.stream("in").map(lambda v: v["n"]).to("out")
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [(b"a", b'{"n": 1}', 1), (b"b", BIG_INVALID, 2),
                                 (b"c", b'{"n": 3}', 3)])
        driver.commit()
        assert driver.read_output("out") == [("a", 1), ("c", 3)]
        (dead,) = driver.read_records(t.dlq_topic)
    h = dict(dead.headers)
    assert _size(dead) <= MAX_RECORD_BYTES
    assert h["truncated"] == b"true" and h["original-value-size"] == b"1048450"
    assert h["original-key-size"] == b"1" and dead.key == b"b"
    assert (h["source-topic"], h["source-partition"], h["source-offset"]) == (b"in", b"0", b"1")
    assert BIG_INVALID.startswith(dead.value) and len(dead.value) > 900_000
    assert reasons == ["decode"]


def test_small_dead_letter_is_not_marked_truncated() -> None:
    """Guard: a dead letter within the limit is the original record, without truncation
    headers."""
    t = Topology("small_in")
    t.stream("in").to("out")
    with TopologyTestDriver(t) as driver:
        driver.pipe_raw("in", b"k", b"{not json")
        (dead,) = driver.read_records(t.dlq_topic)
    assert dead.value == b"{not json" and "truncated" not in dict(dead.headers)


def test_valid_input_too_large_to_repartition_names_its_input() -> None:
    """Formerly the repartition record was refused (a dead letter) and then the dead letter,
    a copy of the ~1 MB input plus headers, failed the commit. Now the dead letter is
    truncated and its error names the destination and the input's coordinates."""
    t = Topology("big_valid")
    t.stream("in").group_by(lambda v: v["k"], name="by-k").count(name="c").to("out")
    big = json.dumps({"k": "a", "pad": "x" * 1_040_000}).encode()
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [(b"a", b'{"k": "a"}', 1), (b"a", big, 2),
                                 (b"a", b'{"k": "a"}', 3)])
        driver.commit()
        assert driver.read_output("out") == [("a", 1), ("a", 2)]
        (dead,) = driver.read_records(t.dlq_topic)
    h = dict(dead.headers)
    assert _size(dead) <= MAX_RECORD_BYTES and h["truncated"] == b"true"
    assert h["original-value-size"] == str(len(big)).encode()
    error = h["error"].decode()
    assert "exceeds" in error and "from input in[0]@1" in error, error


def test_late_copy_of_a_large_record_is_truncated() -> None:
    """Formerly the late topic got the whole record plus its headers (window bounds, node,
    source): just under the broker's limit as input, over it as a late copy."""
    t = Topology("big_late", late_topic="big-late")
    (t.stream("in", timestamp="ts").group_by_key()
     .window(TumblingWindows(size=timedelta(seconds=10), grace=timedelta(0)))
     .count(name="c").to("out"))
    late = json.dumps({"ts": 1_000, "pad": "x" * (BROKER_MAX_MESSAGE_BYTES - 200)}).encode()
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [(b"a", b'{"ts": 60000}', 1), (b"a", late, 2)])
        driver.commit()
        (copy,) = driver.read_records("big-late")
    h = dict(copy.headers)
    assert _size(copy) <= MAX_RECORD_BYTES
    assert h["reason"] == b"late" and h["truncated"] == b"true"
    assert h["original-value-size"] == str(len(late)).encode() and h["source-offset"] == b"1"


def test_agent_send_with_huge_headers_is_a_dead_letter_and_rolls_back() -> None:
    """Formerly only key + value were checked: a record with ~1 MB of headers was accepted
    and then refused by the broker at the commit."""
    t = Topology("big_headers")
    seen = t.table_store("seen", default=int)
    audit = t.topic("audit")

    @t.agent("in")
    async def note(stream):  # noqa: ANN001
        async for key, value in stream.items():
            seen[key] += 1
            await audit.send(key=key, value=value,
                             headers=[("pad", b"x" * value["pad"])] if value["pad"] else None)

    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("a", {"pad": 0}, 1), ("a", {"pad": MAX_RECORD_BYTES}, 2),
                                 ("a", {"pad": 0}, 3)])
        driver.commit()
        assert len(driver.read_records("audit")) == 2
        assert driver.table("seen") == {"a": 2}  # the failed event's write rolled back
        (dead,) = driver.read_dead_letters()
    assert dead.source_offset == 1 and "exceeds" in dead.error and "in[0]@1" in dead.error


def test_producer_refuses_a_record_over_the_broker_limit_naming_it() -> None:
    """Formerly the record went to the broker and the commit failed with a bare
    ``MessageSizeTooLargeError``, naming nothing."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")  # never started: no I/O
        try:
            await KafkaTransport(producer, None).send([
                Output("out", 0, b"k", b"x" * BROKER_MAX_MESSAGE_BYTES, 1,
                       [("source-topic", b"rides"), ("source-partition", b"3"),
                        ("source-offset", b"42")])])
        finally:
            await producer.stop()

    with pytest.raises(RecordTooLarge, match=r"out\[0\].*from input rides\[3\]@42"):
        # (bounded: without the check the unstarted producer would wait for metadata forever)
        asyncio.run(asyncio.wait_for(send(), 20))
