"""Sinks: serialize and send records to a topic."""

from __future__ import annotations

from ...dsl import nodes as n
from ...serdes import MAX_RECORD_BYTES
from ...state.meta import ORIGIN_HEADER, encode_origin
from ..context import ProcessorContext
from ..record_limits import headers_bytes, too_large
from .base import Processor, Rec

__all__ = ["SinkProc"]


class SinkProc(Processor):
    """Writes each record to the node's topic; a record that does not serialize, or would be
    larger than ``MAX_RECORD_BYTES`` (key, value and headers), is a dead letter. Records to a
    repartition topic carry their input record's position (the origin header) so the
    downstream task can skip replays."""

    def __init__(self, node: n.Node, ctx: ProcessorContext) -> None:
        super().__init__(node, ctx)
        self._last_origin: tuple[str, int, int] | None = None
        self._index = 0

    def on_batch(self, recs: list[Rec]) -> None:
        node: n.SinkNode = self.node  # type: ignore[assignment]
        ks, vs = node.key_serde.serialize, node.value_serde.serialize
        send, topic, internal = self.ctx.send, node.topic, node.internal
        for rec in recs:
            try:
                key, value = ks(rec.key), vs(rec.value)
                headers = rec.headers
                size = len(key or b"") + len(value or b"")
                if headers:
                    size += headers_bytes(headers)
                if size > MAX_RECORD_BYTES:
                    raise too_large(size, f"output record for {topic!r}", rec.raw)
            except Exception as exc:  # noqa: BLE001
                self.fail(rec, exc)
                continue
            if internal:
                headers = [(ORIGIN_HEADER, self._origin(rec)), *(headers or ())]
            send(topic, key, value, rec.ts, headers)

    def _origin(self, rec: Rec) -> bytes:
        """``topic:partition:offset:index`` of the input record; index numbers the records one
        input fans out to, so a replay is recognised record by record downstream. The
        downstream task skips positions at or below the highest it applied per (topic,
        partition), so positions must only grow and be the same on a replay: a result emitted
        when a window closes has the window's close time as its offset (its raw names the
        store's changelog), and all results of one close reach the sink together, in a
        deterministic order, so their indexes are too (:mod:`streams.state.meta`)."""
        raw = rec.raw
        origin = (raw.topic, raw.partition, raw.offset)
        if origin == self._last_origin:
            self._index += 1
        else:
            self._last_origin, self._index = origin, 0
        return encode_origin(raw.topic, raw.partition, raw.offset, self._index)
