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
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

import faust
import orjson


class SerdeError(ValueError):
    """Input that a serde cannot decode; the message is the dead-letter reason."""


class SchemaError(SerdeError):
    """Well-formed input that does not fit the declared schema (a Record's field types); the
    source dead-letters it with reason ``invalid`` rather than ``decode``."""


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
        # "NaN" / "Infinity" would be read back as text by most consumers and poison every sum
        # they enter: a non-finite Decimal is never stored or sent.
        if not obj.is_finite():
            raise ValueError(f"cannot serialize the non-finite Decimal {obj}")
        return str(obj)
    if isinstance(obj, faust.Record):
        return obj.asdict()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


# One encoder for every call: ``json.dumps`` with options builds a new one each time.
_encode = json.JSONEncoder(default=_json_default, separators=(",", ":"), allow_nan=False).encode


def json_dumps(obj: Any) -> bytes:
    """Standard JSON (RFC 8259) as UTF-8: a NaN or infinite float is a ValueError, never the
    non-standard tokens ``NaN`` / ``Infinity`` that other JSON readers reject.

    The bytes are those of the standard encoder (compact, non-ASCII escaped). orjson writes
    them several times faster for values of plain JSON types whose output is the same — see
    :func:`_orjson_safe`; anything else (Decimals, Records, sets, NaN, ...) goes through the
    standard encoder.

    >>> json_dumps({"n": [1, 2.5, None], "ok": True}), json_dumps(3)
    (b'{"n":[1,2.5,null],"ok":true}', b'3')
    """
    if type(obj) is int:  # (counts, sums: the encoder's work for the most common value)
        return b"%d" % obj
    if _orjson_safe(obj, 0):
        try:
            out = orjson.dumps(obj)
        except orjson.JSONEncodeError:
            pass  # an integer beyond 64 bits, a lone surrogate: the standard encoder's turn
        else:
            # non-ASCII text and DEL are escaped by the standard encoder, kept by orjson
            if out.isascii() and b"\x7f" not in out:
                return out
    return _encode(obj).encode()


_PLAIN = frozenset((str, int, bool, type(None)))
# orjson writes these floats exactly as repr() does (below 1e-4 it avoids the exponent), and
# the NaN / infinities it would write as null fail the comparison.
_FLOAT_LOW, _FLOAT_HIGH = 1e-4, 1e16


def _orjson_safe(obj: Any, depth: int) -> bool:
    """Whether ``obj`` holds only exact dicts with str keys, lists, tuples, str, int, bool,
    None and floats that orjson writes as the standard encoder does (no subclass: an IntEnum,
    a str Enum, a datetime or a dataclass is encoded, or refused, by the standard encoder)."""
    cls = obj.__class__
    if cls in _PLAIN:
        return True
    if cls is float:
        return obj == 0.0 or _FLOAT_LOW <= abs(obj) < _FLOAT_HIGH
    if depth > 64:
        return False
    if cls is dict:
        for k, v in obj.items():
            if k.__class__ is not str or (v.__class__ not in _PLAIN
                                          and not _orjson_safe(v, depth + 1)):
                return False
        return True
    if cls is list or cls is tuple:
        for v in obj:
            if v.__class__ not in _PLAIN and not _orjson_safe(v, depth + 1):
                return False
        return True
    return False


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not standard JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):  # 1e999 overflows to infinity
        raise ValueError(f"number {text[:40]} is out of range")
    return value


# 19+ digits in a row may be an integer beyond 64 bits, which orjson would turn into a float.
# Found by mapping every digit to "0" and everything else to a space, then looking for 19
# zeros: two C passes over the bytes, several times faster than a regex search.
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19


def json_loads(data: bytes) -> Any:
    """Standard JSON from strict UTF-8 bytes. ``json.loads`` alone would also accept ``NaN``,
    ``Infinity`` and ``-Infinity`` (and read ``1e999`` as infinity) and guess UTF-16/UTF-32
    (or skip a UTF-8 BOM) from the first bytes; Kafka records of this framework are UTF-8, and
    anything else is a producer bug that must surface as a dead letter, not as a silently
    re-interpreted value.

    orjson decodes several times faster and rejects all of those too. The strict standard
    decoder still reads what orjson would change (integers beyond 64 bits) and whatever orjson
    refuses, so the accepted input and the error messages stay those of the standard decoder.

    >>> json_loads(b'{"id": 123456789012345678901234567890, "x": 1.5}')
    {'id': 123456789012345678901234567890, 'x': 1.5}
    """
    if _LONG_RUN not in data.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the standard decoder below explains it, or accepts what orjson refuses
    return json.loads(data.decode("utf-8"), parse_constant=_reject_constant,
                      parse_float=_finite_float)


def _decode_json(data: bytes) -> Any:
    """:func:`json_loads`, its failures as a :class:`SerdeError` with a readable reason."""
    try:
        return json_loads(data)
    except UnicodeDecodeError as exc:
        raise SerdeError(
            f"invalid JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        raise SerdeError(f"invalid JSON: {exc}") from None
    except RecursionError:
        # the C decoder recurses per nesting level: b"[" * 100000 is a poison pill
        raise SerdeError("invalid JSON: nested too deeply") from None


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
        return None if data is None else _decode_json(data)


class JsonObjectSerde(JsonSerde):
    """A JSON object (dict); anything else is a decode error."""

    roundtrip_types: tuple[type, ...] = ()  # scalars do not decode at all

    def deserialize(self, data: bytes | None) -> Any:
        if data is None:
            return None
        obj = _decode_json(data)
        if obj.__class__ is not dict and not isinstance(obj, dict):
            raise SerdeError(f"expected a JSON object, got {type(obj).__name__}")
        return obj


class RecordSerde:
    """A faust Record class encoded as a JSON object: the Record is the source's schema.

    Decoding checks what the Record declares, so a record that does not fit never reaches an
    operator: a missing required field, and a field of a scalar type holding something else —
    ``str``, ``int`` (not a bool), ``float`` (a finite number), ``bool``, and ``Decimal``: a
    decimal *string* of ASCII digits (``"12.50"``) or an integer, converted to a finite
    ``Decimal`` (a JSON float is refused: it has already lost the cents). ``None`` is accepted
    only for fields with a default. Anything else is a :class:`SchemaError` naming the field
    (dead-letter reason ``invalid``). Fields of other types (lists, nested Records) are left to
    faust. ``check_fields=False`` (state stores: their values were written by the topology's own
    functions, which faust does not hold to the field types) skips the field checks.

    >>> class Ride(faust.Record):
    ...     ride_id: str
    ...     fare: Decimal
    >>> RecordSerde(Ride).deserialize(b'{"ride_id": "r1", "fare": "12.50"}').fare
    Decimal('12.50')
    >>> RecordSerde(Ride).deserialize(b'{"ride_id": "r1", "fare": "abc"}')
    Traceback (most recent call last):
    ...
    streams.serdes.SchemaError: not a valid Ride: field 'fare' must be a decimal string, got 'abc'
    """

    roundtrip_types: tuple[type, ...] = ()

    def __init__(self, record: type[faust.Record], *, check_fields: bool = True) -> None:
        self.record = record
        self._inner = JsonObjectSerde()
        self._fields = _field_checks(record) if check_fields else []

    def serialize(self, obj: Any) -> bytes | None:
        if obj is None:
            return None
        return json_dumps(obj.asdict() if isinstance(obj, faust.Record) else obj)

    def deserialize(self, data: bytes | None) -> Any:
        obj = self._inner.deserialize(data)
        if obj is None:
            return None
        name = self.record.__name__
        for field, required, check in self._fields:
            value = obj.get(field)
            if value is None:
                if required:
                    raise SchemaError(f"not a valid {name}: field {field!r} is missing or null")
                continue
            try:
                obj[field] = check(value)
            except ValueError as exc:
                raise SchemaError(f"not a valid {name}: field {field!r} {exc}") from None
        try:
            return self.record.from_data(obj)
        except Exception as exc:  # noqa: BLE001 - faust raises TypeError, ValidationError, ...
            raise SchemaError(f"not a valid {name}: {describe(exc)}") from None


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _check_str(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {_short(value)}")
    return value


def _check_int(value: Any) -> Any:
    if value.__class__ is not int:
        raise ValueError(f"must be an integer, got {_short(value)}")
    return value


def _check_float(value: Any) -> Any:
    if value.__class__ not in (int, float) or not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {_short(value)}")
    return value


def _check_bool(value: Any) -> Any:
    if value.__class__ is not bool:
        raise ValueError(f"must be true or false, got {_short(value)}")
    return value


def _check_decimal(value: Any) -> Any:
    # ASCII digits only: Decimal() itself also takes "١٠.٠٠", "NaN", "1e999999" and " 1 ".
    if value.__class__ is int:
        return Decimal(value)
    if isinstance(value, str) and len(value) <= 100 and _DECIMAL_TEXT.fullmatch(value):
        return Decimal(value)
    raise ValueError(f"must be a decimal string, got {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_checks(record: type[faust.Record]) -> list[tuple[str, bool, Callable[[Any], Any]]]:
    """(field, required, check) for the Record's fields of a scalar type, once per serde."""
    from faust.models import fields as f

    kinds: list[tuple[type, Callable[[Any], Any]]] = [
        (f.BooleanField, _check_bool), (f.DecimalField, _check_decimal),
        (f.FloatField, _check_float), (f.IntegerField, _check_int), (f.StringField, _check_str)]
    out = []
    for name, descriptor in record._options.descriptors.items():
        for kind, check in kinds:
            if isinstance(descriptor, kind):
                out.append((name, bool(descriptor.required), check))
                break
    return out


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
