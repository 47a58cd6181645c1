"""Source validation: the check a source runs on each decoded value before any operator.

A source declared with ``validate=fn`` (:meth:`streams.Topology.stream`) calls ``fn(value)`` —
or ``fn(key, value)`` if it takes two parameters — on every decoded record. A validator that
raises, or returns ``False``, rejects the record: it becomes ONE dead letter (reason
``invalid``, the exception's message as ``error``, header ``node`` = the source) and no
operator sees it, however many branches the stream fans out to.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .base import describe_error

__all__ = ["Problem", "value_validator"]

Problem = Callable[[Any, Any], "str | None"]  # (key, value) -> what is wrong, or None


def takes_key(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is called ``fn(key, value)`` (two positional parameters) rather than
    ``fn(value)``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: called with the value
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.default is p.empty]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def value_validator(fn: Callable[..., Any] | None, node_name: str) -> Problem | None:
    """``problem(key, value)``: None for a valid record, else the dead letter's error text."""
    if fn is None:
        return None
    with_key = takes_key(fn)

    def problem(key: Any, value: Any) -> str | None:
        try:
            ok = fn(key, value) if with_key else fn(value)
        except Exception as exc:  # noqa: BLE001 - the validator's verdict, or its bug
            text = str(exc) if isinstance(exc, (ValueError, TypeError, KeyError)) else ""
            return (text or describe_error(exc))[:1000]
        if ok is False:
            return f"rejected by the validator of {node_name}"
        return None
    return problem
