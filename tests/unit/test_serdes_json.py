"""json_loads: orjson for speed, the standard decoder wherever orjson would read a number
differently (19+ digits in a row: maybe an integer beyond 64 bits)."""

from __future__ import annotations

import json

import pytest

from streams.serdes import json_loads


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
