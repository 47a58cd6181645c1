"""Poison pills: no record, whatever its bytes, may make ``Task.process`` or the commit raise.
Each goes to the dead letters with a reason ("decode", "timestamp", "processing", "null-key")
and the records around it in the same batch flow on.

Each test docstring says what the code before this change did with the pill; the parameter
lists mark the cases that were already handled (kept as guards) with "guard".
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import Topology
from streams.runtime.processors import MAX_RECORD_BYTES
from streams.testing import TopologyTestDriver
from tests.conftest import examples


GOOD = b'{"ts": 7, "t": "7"}'
LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the latest valid timestamp


def _pipe_between_good_records(topology: Topology, key: bytes, value: bytes,
                               ts: int = 1) -> tuple[list, list]:
    """One batch: good, pill, good. Returns (outputs, dead letters)."""
    with TopologyTestDriver(topology) as driver:
        driver.pipe_batch("in", [(b"g1", GOOD, 1), (key, value, ts), (b"g2", GOOD, 1)])
        driver.commit()
        dead = [(d.source_offset, d.error) for d in driver.read_dead_letters()]
        return driver.read_output("out"), dead


DEEP = b"[" * 100_000 + b"]" * 100_000

FIELD_PILLS = [
    # not standard JSON: refused while decoding, before the timestamp is looked at
    pytest.param(b"k", b'{"ts": NaN}', "decode", "not standard JSON", id="nan"),
    pytest.param(b"k", b'{"ts": 1e400}', "decode", "out of range", id="inf"),
    pytest.param(b"k", b'{"ts": -Infinity}', "decode", "not standard JSON", id="-inf"),
    pytest.param(b"k", b'{"ts": 1e30}', "timestamp", "outside", id="1e30"),
    pytest.param(b"k", b'{"ts": -5}', "timestamp", "outside", id="negative"),
    pytest.param(b"k", b'{"ts": 253402300800000}', "timestamp", "outside", id="year-10000"),
    pytest.param(b"k", DEEP, "decode", "nested too deeply", id="deep-nesting"),
    pytest.param(b"k", b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, "decode", "nested too deeply",
                 id="deep-objects"),
    pytest.param(b"k", b'{"ts": 1, "s": "\xff"}', "decode", "invalid JSON", id="utf8-value-guard"),
    pytest.param(b"\xff\xfe", GOOD, "decode", "UTF-8", id="utf8-key-guard"),
    pytest.param(b"k", b'{"ts": 1' + b"0" * 5000 + b"}", "decode", "invalid JSON",
                 id="5000-digits-guard"),
    pytest.param(b"k", b'{"ts": "soon"}', "timestamp", "timestamp field 'ts'", id="str-ts"),
]


@pytest.mark.parametrize("key,value,reason,message", FIELD_PILLS)
def test_pill_with_a_timestamp_field(key: bytes, value: bytes, reason: str, message: str,
                                     reasons: list[str]) -> None:
    """Formerly NaN and infinity raised ValueError/OverflowError out of ``Task.process`` (the
    whole partition stopped), 1e30 and negative timestamps were accepted (and later broke the
    producer's batch encoding), deep nesting raised RecursionError out of ``Task.process``, and
    a non-numeric timestamp was reason "decode"."""
    t = Topology("pills")
    t.stream("in", timestamp="ts").map(lambda v: v["ts"]).to("out")
    out, dead = _pipe_between_good_records(t, key, value)
    assert out == [("g1", 7), ("g2", 7)]
    ((offset, error),) = dead
    assert offset == 1 and message in error, error
    assert reasons == [reason]


@pytest.mark.parametrize("text,message", [("nan", "not finite"), ("inf", "not finite"),
                                          ("1e30", "outside"), ("-1", "outside")])
def test_pill_through_a_timestamp_function(text: str, message: str, reasons: list[str]) -> None:
    """Formerly a timestamp function returning NaN or infinity raised out of ``Task.process``
    and 1e30 or a negative number was accepted."""
    t = Topology("pills_fn")
    t.stream("in", timestamp=lambda v: float(v["t"])).map(lambda v: v["t"]).to("out")
    out, dead = _pipe_between_good_records(t, b"k", json.dumps({"t": text}).encode())
    assert out == [("g1", "7"), ("g2", "7")]
    ((offset, error),) = dead
    assert offset == 1 and message in error, error
    assert reasons == ["timestamp"]


def test_failing_timestamp_function_is_reason_timestamp(reasons: list[str]) -> None:
    """Formerly counted as reason "decode" although the value decoded fine."""
    t = Topology("pills_fn_raise")
    t.stream("in", timestamp=lambda v: int(v["t"])).map(lambda v: v["t"]).to("out")
    out, dead = _pipe_between_good_records(t, b"k", b'{"t": "x"}')
    assert out == [("g1", "7"), ("g2", "7")]
    ((_offset, error),) = dead
    assert "timestamp function failed" in error and "ValueError" in error
    assert reasons == ["timestamp"]


def test_negative_kafka_record_timestamp(reasons: list[str]) -> None:
    """Formerly a record timestamp of -1 (no timestamp, old message format) was used as is."""
    t = Topology("pills_kts")
    t.stream("in").map(lambda v: v["ts"]).to("out")
    out, dead = _pipe_between_good_records(t, b"k", GOOD, ts=-1)
    assert out == [("g1", 7), ("g2", 7)]
    assert [offset for offset, _ in dead] == [1]
    assert reasons == ["timestamp"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5)
    | st.floats(allow_nan=True, allow_infinity=True),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=8)
record_values = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda ts, extra: json.dumps({"ts": ts, "x": extra}).encode(),
              st.one_of(json_values, st.floats(allow_nan=True, allow_infinity=True),
                        st.integers(min_value=-2**70, max_value=2**70)),
              json_values))


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.one_of(st.none(), st.binary(max_size=4)), record_values),
                min_size=1, max_size=12))
def test_no_input_makes_the_task_raise(records: list[tuple[bytes | None, bytes]]) -> None:
    """Property: for any keys and values, one batch through a timestamp-field stream never
    raises; every record is either output (with a valid timestamp) or a dead letter. Formerly
    NaN/infinite timestamps raised and out-of-range ones were output."""
    t = Topology("fuzz")
    t.stream("in", timestamp="ts").to("out")
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [(k, v, 1) for k, v in records])
        driver.commit()
        out = driver.read_records("out")
        dead = driver.read_records(t.dlq_topic)
    assert len(out) + len(dead) == len(records)
    for rec in out:
        assert 0 <= rec.timestamp <= LAST_MS
        ts = json.loads(rec.value)["ts"]
        assert math.isfinite(ts) and 0 <= ts <= LAST_MS


# -- state values ---------------------------------------------------------------------------------

class Opaque:
    """Not JSON-serializable."""


@pytest.mark.parametrize("bad", [Opaque(), {"xs": {Opaque(), Opaque()}},
                                 {"pad": "x" * MAX_RECORD_BYTES}],
                         ids=["object", "set-of-objects", "oversized"])
def test_aggregate_value_that_cannot_be_stored_is_a_dead_letter(bad: Any,
                                                               reasons: list[str]) -> None:
    """Formerly an unserializable aggregate raised TypeError at the commit (after the record was
    accepted: the task could never commit again), and an oversized one was written to the
    changelog (and failed the producer at the commit). Now the put fails, the record is a dead
    letter and the aggregate keeps its previous value."""
    t = Topology("bad_state")
    (t.stream("in").group_by_key()
     .aggregate(lambda: 0, lambda a, v: bad if v["bad"] else a + 1, name="c").to("out"))
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("a", {"bad": False}, 1), ("a", {"bad": True}, 2),
                                 ("a", {"bad": False}, 3)])
        driver.commit()
        assert driver.read_output("out") == [("a", 1), ("a", 2)]
        assert driver.table("c") == {"a": 2}
        assert [d.source_offset for d in driver.read_dead_letters()] == [1]
        changelog = driver.read_records(t.changelog_topic("c"))
        assert changelog and all(len(r.value) < MAX_RECORD_BYTES for r in changelog)
    assert reasons == ["processing"]


@pytest.mark.parametrize("bad", [Opaque(), "x" * MAX_RECORD_BYTES], ids=["object", "oversized"])
def test_process_store_value_that_cannot_be_stored_is_a_dead_letter(bad: Any,
                                                                   reasons: list[str]) -> None:
    """Formerly the store write was accepted and the commit failed (or wrote an oversized
    changelog record); now ``put`` raises inside the user function: a dead letter."""
    t = Topology("bad_store")
    t.store("s")

    def step(key: str, value: dict, stores: dict) -> list:
        stores["s"].put(key, bad if value["bad"] else value["n"])
        return [(key, value["n"])]

    t.stream("in").process(step, stores=["s"]).to("out")
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("a", {"bad": False, "n": 1}, 1), ("b", {"bad": True, "n": 2}, 2),
                                 ("c", {"bad": False, "n": 3}, 3)])
        driver.commit()
        assert driver.read_output("out") == [("a", 1), ("c", 3)]
        assert driver.table("s") == {"a": 1, "c": 3}
        assert [d.source_offset for d in driver.read_dead_letters()] == [1]
    assert reasons == ["processing"]


def test_table_record_without_key_is_a_dead_letter(reasons: list[str]) -> None:
    """Formerly a null key raised ValueError out of ``Task.process``."""
    t = Topology("table_nullkey")
    t.table("users", name="users").to("out")
    with TopologyTestDriver(t) as driver:
        driver.pipe_raw("users", b"u1", b'{"name": "ann"}')
        driver.pipe_raw("users", None, b'{"name": "nobody"}')
        driver.pipe_raw("users", b"u2", b'{"name": "bob"}')
        driver.pipe_raw("users", b"u1", None)  # guard: a tombstone still deletes
        assert driver.table("users") == {"u2": {"name": "bob"}}
        assert driver.read_output("out") == [("u1", {"name": "ann"}), ("u2", {"name": "bob"}),
                                             ("u1", None)]
        ((offset, error),) = [(d.source_offset, d.error) for d in driver.read_dead_letters()]
    assert offset == 1 and "key" in error
    assert reasons == ["null-key"]


def test_table_record_too_large_for_the_changelog_is_a_dead_letter(reasons: list[str]) -> None:
    """Formerly accepted, and the changelog record then failed the producer at the commit."""
    t = Topology("table_big")
    t.table("users", name="users")
    big = json.dumps({"pad": "x" * MAX_RECORD_BYTES}).encode()
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("users", [(b"u1", b'{"n": 1}', 1), (b"u1", big, 2),
                                    (b"u2", b'{"n": 2}', 3)])
        driver.commit()
        assert driver.table("users") == {"u1": {"n": 1}, "u2": {"n": 2}}
        ((offset, error),) = [(d.source_offset, d.error) for d in driver.read_dead_letters()]
    assert offset == 1 and "exceeds" in error
    assert reasons == ["processing"]
