"""JSON through orjson for speed, with the standard library's results: json_loads falls back to
the standard decoder wherever orjson would read a number differently (19+ digits in a row:
maybe an integer beyond 64 bits); json_dumps writes byte for byte what the standard encoder
writes (and refuses what it refuses)."""

from __future__ import annotations

import enum
import json
from datetime import datetime, UTC
from decimal import Decimal
from typing import Any

import faust
import pytest
from hypothesis import given, settings, strategies as st

from streams.serdes import json_dumps, json_loads
from tests.conftest import examples


@pytest.mark.parametrize("text", [
    b"-9223372036854775809",                       # 19 digits, below the signed 64-bit range
    b"18446744073709551616",                       # 20 digits, above the unsigned range
    b'{"id": 123456789012345678901234567890, "x": [1, 99999999999999999999]}',
    b'{"a": "x", "n": 1000000000000000000000}',
])
def test_integers_beyond_64_bits_decode_exactly(text: bytes) -> None:
    value = json_loads(text)
    assert value == json.loads(text)
    assert repr(value) == repr(json.loads(text))  # ints, not floats


@pytest.mark.parametrize("text", [
    b'{"ts": 1700000000000, "fare": "12.50", "id": "ride-000000001-0123456789ab"}',
    b'[9223372036854775807, -9223372036854775808, 18446744073709551615, 0.1]',
    '{"city": "Zürich", "n": 1e5}'.encode(),
])
def test_short_numbers_decode_as_the_standard_decoder_does(text: bytes) -> None:
    assert json_loads(text) == json.loads(text)


# -- json_dumps: orjson where its bytes are the standard encoder's, the standard encoder elsewhere
class Fare(faust.Record):
    ride_id: str
    fare: Decimal


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


def standard(obj: Any) -> bytes:
    """The specification: the standard library's compact encoder, non-ASCII escaped, NaN and
    infinities refused, Decimals as strings, Records as objects, sets sorted."""
    def default(o: Any) -> Any:
        if isinstance(o, Decimal):
            if not o.is_finite():
                raise ValueError("non-finite Decimal")
            return str(o)
        if isinstance(o, faust.Record):
            return o.asdict()
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        raise TypeError(type(o).__name__)
    return json.dumps(obj, default=default, separators=(",", ":"), allow_nan=False).encode()


scalars = (st.none() | st.booleans() | st.integers() | st.integers(-2**70, 2**70)
           | st.floats() | st.text() | st.sampled_from(["\x7f", "\u2028", "\ud800", "é", "\x00"])
           | st.decimals(allow_nan=True, allow_infinity=True)
           | st.sampled_from([Color.RED, Level.HIGH, datetime(2026, 1, 2, tzinfo=UTC),
                              Fare(ride_id="r1", fare=Decimal("1.50")), {1, 3, 2}]))
values = st.recursive(scalars, lambda inner: (
    st.lists(inner, max_size=4) | st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    | st.dictionaries(st.integers(0, 3), inner, max_size=2)), max_leaves=12)


def outcome(encode: Any, obj: Any) -> Any:
    try:
        return encode(obj)
    except (ValueError, TypeError) as exc:
        return type(exc)


@settings(max_examples=examples(600), deadline=None)
@given(values)
def test_json_dumps_writes_exactly_what_the_standard_encoder_writes(obj: Any) -> None:
    assert outcome(json_dumps, obj) == outcome(standard, obj)


@pytest.mark.parametrize("obj", [
    {"rides": 3, "fare_total": "12.50", "window_start": 0, "window_end": 60000},
    {"x": [1.5, 0.0001, 1e-05, 1e16, 9999999999999998.0, -0.0, 5e-324, 1.7976931348623157e308]},
    {"big": 2**64, "neg": -2**63 - 1, "text": "Zürich \u2028 \x7f \ud83d\ude00"},
    {"del": "a\x7fb"}, {"nested": [{"e": "\u00e9"}]},
    [float("nan")], {"t": float("-inf")}, {"d": Decimal("NaN")},
])
def test_json_dumps_corpus_matches_the_standard_encoder(obj: Any) -> None:
    assert outcome(json_dumps, obj) == outcome(standard, obj)


def test_non_finite_floats_are_refused_not_written_as_null() -> None:
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError):
            json_dumps({"total": bad})
