"""How large a record the runtime writes, and how a copy of an oversized input still fits.

Kafka refuses a record batch larger than the topic's ``max.message.bytes`` (the broker's
``message.max.bytes``, 1048588 by default), and the refusal fails the producer's flush, so
the whole commit: one record would stop the worker, and again after every restart. So:

* outputs and changelog values are checked when they are made (``MAX_RECORD_BYTES``, key +
  value + headers): a record whose result is too large is a dead letter, its state changes
  rolled back like any other per-record failure;
* a *copy* of an input record (a dead letter, a late record) must always be written, so it is
  cut to fit (:func:`fit_copy`): its headers say it was truncated and how large the original
  was, and its ``source-*`` headers tell where to fetch the original;
* the producer side (:func:`check_batch_size`) refuses, with the record's coordinates, any
  record that would still exceed the broker's default limit (a bug, not bad input).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..serdes import MAX_RECORD_BYTES
from ..state.meta import ORIGIN_HEADER

__all__ = ["BROKER_MAX_MESSAGE_BYTES", "MAX_ERROR_BYTES", "MAX_RECORD_BYTES",
           "ORIGINAL_KEY_SIZE_HEADER", "ORIGINAL_VALUE_SIZE_HEADER", "RecordTooLarge",
           "TRUNCATED_HEADER", "describe_output", "fit_copy", "headers_bytes", "too_large"]

#: Kafka's default ``message.max.bytes`` / ``max.message.bytes``: the largest record batch a
#: broker accepts unless configured otherwise.
BROKER_MAX_MESSAGE_BYTES = 1_048_588
#: A dead letter's ``error`` header is cut to this many bytes (a user exception's message may
#: hold the whole value).
MAX_ERROR_BYTES = 2_000

TRUNCATED_HEADER = "truncated"
ORIGINAL_KEY_SIZE_HEADER = "original-key-size"
ORIGINAL_VALUE_SIZE_HEADER = "original-value-size"
# the headers fit_copy adds (names, "true" and two sizes of up to 7 digits), and Kafka's
# per-header length varints
_TRUNCATION_HEADERS_BYTES = 100
_PER_HEADER_OVERHEAD = 10

Headers = Sequence[tuple[str, bytes]]


class RecordTooLarge(ValueError):
    """A record the broker would refuse for its size."""


def headers_bytes(headers: Headers | None) -> int:
    """The bytes ``headers`` add to a record (names, values and their length prefixes)."""
    if not headers:
        return 0
    return sum(len(k) + len(v or b"") + _PER_HEADER_OVERHEAD for k, v in headers)


def too_large(size: int, what: str, raw: object) -> RecordTooLarge:
    """The error for a record of ``size`` bytes made from input ``raw``: names where it was
    going (``what``) and the input record's coordinates."""
    return RecordTooLarge(f"{what} of {size} bytes exceeds {MAX_RECORD_BYTES} (from input "
                          f"{_coordinates(raw)})")


def _coordinates(raw: object) -> str:
    topic = getattr(raw, "topic", "?")
    return f"{topic}[{getattr(raw, 'partition', '?')}]@{getattr(raw, 'offset', '?')}"


def _cut_error(headers: Headers) -> list[tuple[str, bytes]]:
    out = []
    for k, v in headers:
        if k == "error" and v is not None and len(v) > MAX_ERROR_BYTES:
            # (cut on a UTF-8 boundary: the header stays readable text)
            v = v[:MAX_ERROR_BYTES].decode(errors="ignore").encode() + b"..."
        out.append((k, v))
    return out


def fit_copy(key: bytes | None, value: bytes | None, headers: Headers,
             limit: int = MAX_RECORD_BYTES
             ) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """``(key, value, headers)`` of a copy of an input record, at most ``limit`` bytes in all.

    Within the limit the copy is unchanged. Beyond it the value keeps its first bytes and the
    key too if it is itself large (the key keeps at least half the room when both are large),
    and headers ``truncated: true``, ``original-key-size`` and ``original-value-size`` (bytes,
    decimal) are added. The ``error`` header is cut to :data:`MAX_ERROR_BYTES` in any case
    (so the runtime's headers stay far below ``limit``).

    >>> k, v, h = fit_copy(b"k", b"x" * 5000, [("reason", b"decode")], limit=1000)
    >>> len(v) < 1000, dict(h)["truncated"], dict(h)["original-value-size"]
    (True, b'true', b'5000')
    """
    headers = _cut_error(headers)
    klen, vlen = len(key or b""), len(value or b"")
    room = limit - headers_bytes(headers)
    if klen + vlen <= room:
        return key, value, headers
    room = max(0, room - _TRUNCATION_HEADERS_BYTES)
    key_keep = min(klen, max(room - vlen, room // 2))
    value_keep = min(vlen, room - key_keep)
    headers += [(TRUNCATED_HEADER, b"true"),
                (ORIGINAL_KEY_SIZE_HEADER, str(klen).encode()),
                (ORIGINAL_VALUE_SIZE_HEADER, str(vlen).encode())]
    return (None if key is None else key[:key_keep],
            None if value is None else value[:value_keep], headers)


def describe_output(topic: str, partition: int | None, key: bytes | None,
                    value: bytes | None, headers: Headers | None) -> str:
    """One record's destination, sizes and, where its headers tell, the input it came from."""
    h = dict(headers or ())
    source = ""
    if "source-topic" in h:
        source = (f"; from input {h['source-topic'].decode(errors='replace')}"
                  f"[{h.get('source-partition', b'?').decode(errors='replace')}]"
                  f"@{h.get('source-offset', b'?').decode(errors='replace')}")
    elif ORIGIN_HEADER in h:
        source = f"; from input {h[ORIGIN_HEADER].decode(errors='replace')}"
    return (f"record for {topic}[{'?' if partition is None else partition}] (key "
            f"{len(key or b'')} bytes, value {len(value or b'')} bytes, headers "
            f"{headers_bytes(headers)} bytes{source})")
