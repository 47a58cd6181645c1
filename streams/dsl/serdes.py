"""Serdes: how keys and values become bytes on topics and in state stores.

A serde raises :class:`SerdeError` with a readable reason on input it cannot decode; the
runtime turns that into a dead-letter record.

>>> JsonObjectSerde().deserialize(b'{"a": 1}')
{'a': 1}
>>> StringSerde().serialize("k1")
b'k1'
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Protocol

import faust


class SerdeError(ValueError):
    """Input that a serde cannot decode; the message is the dead-letter reason."""


# Largest record (key + value bytes) the runtime writes: below the producer's max_request_size
# (1 MiB) with room for headers. A larger sink or changelog record would fail the whole commit,
# so the record that produced it becomes a dead letter instead.
MAX_RECORD_BYTES = 1_000_000


class Serde(Protocol):
    """Optional attribute ``roundtrip_types``: exact types whose values ``deserialize`` turns
    back into an equal value of the same type (state stores keep those objects decoded)."""

    def serialize(self, obj: Any) -> bytes | None: ...

    def deserialize(self, data: bytes | None) -> Any: ...


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, faust.Record):
        return obj.asdict()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def json_dumps(obj: Any) -> bytes:
    return json.dumps(obj, default=_json_default, separators=(",", ":")).encode()


class BytesSerde:
    roundtrip_types: tuple[type, ...] = (bytes,)

    def serialize(self, obj: Any) -> bytes | None:
        return obj

    def deserialize(self, data: bytes | None) -> Any:
        return data


class StringSerde:
    roundtrip_types: tuple[type, ...] = (str,)

    def serialize(self, obj: Any) -> bytes | None:
        if obj is None:
            return None
        if isinstance(obj, bytes):
            return obj
        return str(obj).encode()

    def deserialize(self, data: bytes | None) -> Any:
        if data is None:
            return None
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise SerdeError(f"not UTF-8: {exc}") from None


class JsonSerde:
    """Any JSON value. Decimals are written as strings, faust Records as objects."""

    # json gives back exactly these; tuples come back as lists and Decimals as strings.
    roundtrip_types: tuple[type, ...] = (int, float, str, bool)

    def serialize(self, obj: Any) -> bytes | None:
        return None if obj is None else json_dumps(obj)

    def deserialize(self, data: bytes | None) -> Any:
        if data is None:
            return None
        try:
            return json.loads(data)
        except (ValueError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
            raise SerdeError(f"invalid JSON: {exc}") from None
        except RecursionError:
            # the C decoder recurses per nesting level: b"[" * 100000 is a poison pill
            raise SerdeError("invalid JSON: nested too deeply") from None


class JsonObjectSerde(JsonSerde):
    """A JSON object (dict); anything else is a decode error."""

    roundtrip_types: tuple[type, ...] = ()  # scalars do not decode at all

    def deserialize(self, data: bytes | None) -> Any:
        if data is None:
            return None
        obj = super().deserialize(data)
        if not isinstance(obj, dict):
            raise SerdeError(f"expected a JSON object, got {type(obj).__name__}")
        return obj


class RecordSerde:
    """A faust Record class encoded as a JSON object.

    Missing required fields are a decode error (faust itself would raise TypeError later).
    """

    roundtrip_types: tuple[type, ...] = ()

    def __init__(self, record: type[faust.Record]) -> None:
        self.record = record
        self._inner = JsonObjectSerde()

    def serialize(self, obj: Any) -> bytes | None:
        if obj is None:
            return None
        return json_dumps(obj.asdict() if isinstance(obj, faust.Record) else obj)

    def deserialize(self, data: bytes | None) -> Any:
        obj = self._inner.deserialize(data)
        if obj is None:
            return None
        try:
            return self.record.from_data(obj)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise SerdeError(f"not a valid {self.record.__name__}: {exc}") from None


def serde_for(spec: Any) -> Serde:
    """Resolve a user's serde spec: a Serde, a faust Record class, "json", "str" or "bytes"."""
    if spec is None or spec == "json":
        return JsonObjectSerde()
    if spec == "str":
        return StringSerde()
    if spec == "bytes":
        return BytesSerde()
    if spec == "any-json":
        return JsonSerde()
    if isinstance(spec, type) and issubclass(spec, faust.Record):
        return RecordSerde(spec)
    if hasattr(spec, "serialize") and hasattr(spec, "deserialize"):
        return spec
    raise TypeError(f"not a serde: {spec!r}")


class KeySerde(StringSerde):
    """Default key serde: strings as UTF-8; other keys (ints, tuples) as JSON on write."""

    def serialize(self, obj: Any) -> bytes | None:
        if obj is None or isinstance(obj, (str, bytes)):
            return super().serialize(obj)
        return json_dumps(obj)
