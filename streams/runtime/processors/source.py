"""Sources: raw consumer records in, decoded ``Rec``s with timestamps out."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ...dsl import nodes as n
from ...serdes import SchemaError, SerdeError
from ..context import ProcessorContext
from ..watermarks import is_marker
from .base import MAX_TIMESTAMP_MS, Processor, Rec, describe_error, what
from .validate import value_validator

__all__ = ["UNDECODED", "SourceProc", "timestamp_extractor"]

#: in a batch's decoded values: a value not decoded yet (the source decodes it itself)
UNDECODED: Any = object()


class SourceProc(Processor):
    """Decodes raw consumer records into ``Rec``s. A record whose key or value does not decode
    (whatever the serde raises) is a dead letter "decode"; one that decodes but does not fit
    the source's schema (a Record's field types) or fails its ``validate`` function a dead
    letter "invalid"; one without a valid timestamp a dead letter "timestamp", and so is one
    whose timestamp is further ahead of the wall clock than the ``max_future_ms`` setting
    allows (it would move stream time years ahead and make every later record late) — each one
    dead letter, at the source, before any fan-out. Nothing a record contains can make
    ``on_raw_batch`` raise. Advances stream time to the batch's largest timestamp once its
    records went through the graph; behind a repartition it feeds the task's watermark
    instead, record by record, and consumes the upstream tasks' progress markers
    (:mod:`streams.runtime.watermarks`)."""

    def __init__(self, node: n.Node, ctx: ProcessorContext) -> None:
        super().__init__(node, ctx)
        self._timestamp = timestamp_extractor(node.timestamp)  # type: ignore[attr-defined]
        self._problem = value_validator(node.validate, node.name)  # type: ignore[attr-defined]

    def on_raw_batch(self, raws: list[Any], values: list[Any] | None = None) -> None:
        """``values``: the raws' values as this source's serde decodes them, where the task
        decoded them already (to order its inputs by event time); ``UNDECODED`` for one that
        did not decode (decoded again here, for the dead letter's reason)."""
        node: n.SourceNode = self.node  # type: ignore[assignment]
        kd, vd = node.key_serde.deserialize, node.value_serde.deserialize
        timestamp = self._timestamp
        out: list[Rec] = []
        append = out.append
        ctx = self.ctx
        dead_letter = ctx.dead_letter
        name = node.name
        problem = self._problem
        watermark = None
        internal = node.internal
        if internal:
            fresh = ctx.skip_replayed(node.topic, raws)
            if len(fresh) != len(raws):
                values = None
            raws = fresh
            watermark = ctx.watermark_of(node.topic)
        future = ctx.future_limit()
        decoded = iter(values) if values is not None else None
        for raw in raws:
            if decoded is not None:
                value = next(decoded)
            if internal and raw.value is None and is_marker(raw):
                if watermark is not None:
                    watermark.marker(node.topic, raw)
                continue
            try:
                if decoded is None or value is UNDECODED:
                    value = vd(raw.value)
                key = kd(raw.key)
            except SerdeError as exc:
                dead_letter(raw, str(exc), reason="invalid" if isinstance(exc, SchemaError)
                            else "decode", node=name)
                continue
            except Exception as exc:  # noqa: BLE001 - RecursionError, a custom serde's bug...
                dead_letter(raw, f"cannot decode: {describe_error(exc)}", reason="decode",
                            node=name)
                continue
            if problem is not None:
                error = problem(key, value)
                if error is not None:
                    dead_letter(raw, error, reason="invalid", node=name)
                    continue
            try:
                ts = timestamp(value, raw)
            except Exception as exc:  # noqa: BLE001 - SerdeError, or a bug in a custom extractor
                dead_letter(raw, str(exc) if isinstance(exc, SerdeError)
                            else describe_error(exc), reason="timestamp", node=name)
                continue
            if future is not None and ts > future:
                dead_letter(raw, f"timestamp {ts} is more than max_future_ms "
                            f"({ctx.max_future_ms}) ahead of the wall clock", reason="timestamp",
                            node=name)
                continue
            append(Rec(key, value, ts, raw))
            if watermark is not None:
                watermark.observe(node.topic, raw, ts)
        self.emit(out)
        # After the graph: window operators advance stream time record by record themselves.
        if out:
            ctx.observe_time(max(r.ts for r in out))

    def on_batch(self, recs: list[Rec]) -> None:  # pragma: no cover - sources take raw input
        self.emit(recs)


def timestamp_extractor(spec: str | Callable[[Any], int] | None) -> Callable[[Any, Any], int]:
    """Build, once per source, ``f(value, raw) -> epoch ms``: the record timestamp (spec None),
    a function of the value, or a field of a dict or Record.

    A timestamp must be a finite number in ``[0, MAX_TIMESTAMP_MS]``; anything else (NaN,
    infinity, 1e30, negative, not a number) is a SerdeError saying what was wrong.
    """

    def checked(ts: Any, what_: str) -> int:
        if isinstance(ts, bool) or not isinstance(ts, (int, float)):
            raise SerdeError(f"{what_}: got {what(ts)}")
        if not 0 <= ts <= MAX_TIMESTAMP_MS:  # False for NaN too
            kind = "not finite" if isinstance(ts, float) and not math.isfinite(ts) else (
                f"outside [0, {MAX_TIMESTAMP_MS}] (epoch ms up to year 9999)")
            raise SerdeError(f"{what_}: {ts!r} is {kind}")
        return int(ts)

    if spec is None:
        def from_record(_value: Any, raw: Any) -> int:
            ts = raw.timestamp
            # Kafka timestamps are already ints in range: check cheaply, explain otherwise
            if ts.__class__ is int and 0 <= ts <= MAX_TIMESTAMP_MS:
                return ts
            return checked(ts, "invalid record timestamp")
        return from_record

    if callable(spec):
        def from_function(value: Any, _raw: Any) -> int:
            try:
                ts = spec(value)
            except Exception as exc:  # noqa: BLE001 - user code
                raise SerdeError(f"timestamp function failed: {describe_error(exc)}") from None
            return checked(ts, "invalid timestamp from the timestamp function")
        return from_function

    field = spec

    def from_field(value: Any, _raw: Any) -> int:
        ts = value.get(field) if isinstance(value, dict) else getattr(value, field, None)
        if ts.__class__ is int and 0 <= ts <= MAX_TIMESTAMP_MS:  # the usual case, checked fast
            return ts
        if ts is None:
            raise SerdeError(f"missing or non-numeric timestamp field {field!r}")
        return checked(ts, f"invalid timestamp field {field!r}")
    return from_field
