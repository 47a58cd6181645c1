"""Helpers for source validators (``topology.stream(..., validate=fn)``): money and fields.

Money is a JSON *string* of ASCII digits with exactly two decimal places, never a float, in
``[0, 10**15)``:

>>> money("12.50")
Decimal('12.50')
>>> money("١٠.٠٠")
Traceback (most recent call last):
...
streams.validation.Invalid: amount must be a decimal string with two places ("12.50"), got '١٠.٠٠'

The bound (15 integer digits, ``MAX_MONEY_DIGITS``) is far above any real payment or fare, and
it keeps sums exact: ``Decimal`` computes with 28 significant digits, and an amount has at most
17, so up to 10**11 amounts add up without rounding. Anything outside it (``"1e999000"``, a
999,003-character total) is refused at the source instead of poisoning every total it enters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

__all__ = ["MAX_MONEY_DIGITS", "Invalid", "money", "require_fields", "require_text"]

MAX_MONEY_DIGITS = 15
# [0-9], not \d: \d also matches Arabic-Indic and other Unicode digits, which Decimal accepts.
_MONEY = re.compile(rf"[0-9]{{1,{MAX_MONEY_DIGITS}}}\.[0-9]{{2}}")


class Invalid(ValueError):
    """A record a validator refuses; the message says what is wrong (the dead letter's error)."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def money(raw: Any, *, field: str = "amount", positive: bool = False) -> Decimal:
    """``raw`` as a Decimal if it is money (see the module), else :class:`Invalid`.
    ``positive``: zero is refused too."""
    if not isinstance(raw, str) or not _MONEY.fullmatch(raw):
        raise Invalid(f"{field} must be a decimal string with two places (\"12.50\"), "
                      f"got {_short(raw)}")
    amount = Decimal(raw)
    if positive and not amount:
        raise Invalid(f"{field} must be positive, got {raw!r}")
    return amount


def require_fields(value: Any, fields: Iterable[str], what: str = "record") -> None:
    """:class:`Invalid` unless ``value`` is a dict with a non-null value for every field."""
    if not isinstance(value, dict):
        raise Invalid(f"{what} must be a JSON object, got {type(value).__name__}")
    missing = [f for f in fields if value.get(f) is None]
    if missing:
        raise Invalid(f"{what} misses field(s) {', '.join(missing)}")


def require_text(value: dict[str, Any], fields: Iterable[str], what: str = "record") -> None:
    """:class:`Invalid` unless every field is a non-empty string."""
    for f in fields:
        if not isinstance(value.get(f), str) or not value[f]:
            raise Invalid(f"{what} field {f} must be a non-empty string, "
                          f"got {_short(value.get(f))}")
