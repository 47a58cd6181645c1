"""Event time behind a repartition: a watermark over the upstream partitions (Flink's rule).

Within one input partition, stream time is the largest timestamp seen (Kafka Streams). Behind a
repartition topic that rule breaks: partition p of the topic interleaves the records of every
upstream partition at whatever pace the upstream tasks run. Live, they run abreast; on a backlog
one upstream task may be an hour of event time ahead of another, so "max seen" jumps ahead and
the slower upstream partitions' records become late although none of them is out of order by
more than the grace.

So a task reading a repartition topic tracks one **channel** per upstream partition (the
upstream task's partition, from the ``streams-origin`` header of its records) and its stream
time is the **minimum** of the channels' progress (never moving back). A channel's progress is
the largest timestamp of its records and of its **progress markers**: after a batch that
advanced its stream time (and at commit), an upstream task sends to every partition of each
repartition topic it writes a record with no key and no value and the header
``streams-progress: <its partition>:<its stream time>``, so a downstream partition learns an
upstream partition's progress even when none of its records go there. Sources consume markers
(they are never data, never dead letters).

**Idle.** An upstream task whose inputs are caught up (its consumer position is the end of each
input partition) and that processed nothing for ``repartition_idle_ms`` sends an idle marker
(``...:idle``); downstream tasks leave idle channels out of the minimum until they send data or
a progress marker again (Flink's idleness). **Wake hold**: when a channel wakes up (data or a
progress marker after its idle marker, or a first word from a new channel), the other idle
channels count again, at their last progress, for ``repartition_idle_ms`` of wall time: input
after a quiet spell reaches every upstream partition at about the same moment, but the upstream
tasks process it one after the other, and without the hold the first one to wake would carry the
watermark past the records the others are about to send (they would all be late). An upstream
partition that stays quiet is left out again once the hold has passed. When every channel is
idle, the watermark is the largest progress of all: the upstream is caught up, so nothing older
is coming — the same stream time live processing reaches. A channel never heard of (its task
not started, its worker down) is waited for: the watermark stays where it is.

A task that also reads direct (not repartitioned) inputs orders them with the repartitioned one
by timestamp (:mod:`streams.runtime.ordering`); they do not move its watermark.

The channels are saved with the task's state (``channel:`` meta entries and the
``streams-channels`` changelog header), so a restored task resumes with the same watermark.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..state.meta import ORIGIN_HEADER, PROGRESS_HEADER, Channels, header

__all__ = ["Watermark", "is_marker", "marker_header", "parse_marker"]


def marker_header(partition: int, time: int, idle: bool) -> tuple[str, bytes]:
    """The header of a progress marker an upstream task on ``partition`` sends."""
    return PROGRESS_HEADER, f"{partition}:{time}{':idle' if idle else ''}".encode()


def is_marker(raw: Any) -> bool:
    """Whether ``raw`` is a progress marker (sources drop it; a marker on a topic whose reader
    keeps no watermark still is no data)."""
    return raw.value is None and raw.key is None and \
        header(raw.headers, PROGRESS_HEADER) is not None


def parse_marker(raw: Any) -> tuple[int, int, bool] | None:
    """``(upstream partition, time, idle)`` if ``raw`` is a progress marker, else None."""
    if raw.value is not None or raw.key is not None:
        return None
    data = header(raw.headers, PROGRESS_HEADER)
    if data is None:
        return None
    part, time, *rest = data.decode().split(":")
    return int(part), int(time), bool(rest and rest[0] == "idle")


class Watermark:
    """The channels of one task's repartition inputs and their minimum.

    ``upstream``: for each repartition topic the task reads, how many partitions write it (the
    writing sub-topology's task count = the topic's partition count). ``observe`` and
    ``marker`` take the records of a batch in order; ``at`` maps each observed raw record (by
    ``id``) to the watermark with it counted, for :meth:`ProcessorContext.batch_clock`.
    """

    def __init__(self, upstream: Mapping[str, int], channels: Channels | None = None,
                 hold_ms: int = 0, wall_clock: Callable[[], int] | None = None) -> None:
        self.expected = [f"{t}|{p}" for t, n in upstream.items() for p in range(n)]
        self.hold_ms = hold_ms
        self.wall_clock = wall_clock or (lambda: 0)
        self._woke_at: int | None = None  # wall clock of the latest wake (see "Wake hold")
        self._held = False  # the cached value counted idle channels because of the hold
        self.topics = set(upstream)
        # key -> [progress, idle]; lists so that the hot path updates in place
        self._ch: dict[str, list[Any]] = {k: [t, idle] for k, (t, idle) in
                                          (channels or {}).items()
                                          if k.split("|", 1)[0] in self.topics}
        self.at: dict[int, int] = {}
        self._value: int | None = None  # cached; None: recompute

    # -- updates ----------------------------------------------------------------------------------
    def observe(self, topic: str, raw: Any, ts: int) -> None:
        """A data record of ``topic`` with event time ``ts`` (its channel from its origin)."""
        origin = header(raw.headers, ORIGIN_HEADER)
        if origin is not None:
            self._advance(f"{topic}|{int(origin.rsplit(b':', 3)[1])}", ts, False)
        self.at[id(raw)] = self.value()

    def marker(self, topic: str, raw: Any) -> bool:
        """Apply ``raw`` if it is a progress marker; returns whether it was one."""
        parsed = parse_marker(raw)
        if parsed is None:
            return False
        part, time, idle = parsed
        self._advance(f"{topic}|{part}", time, idle)
        return True

    def _advance(self, key: str, ts: int, idle: bool) -> None:
        ch = self._ch.get(key)
        if ch is None:
            self._ch[key] = [ts, idle]
            self._value = None
            if not idle:
                self._wake()
            return
        if ch[1] != idle:
            ch[1] = idle
            self._value = None
            if not idle:
                self._wake()
        if ts > ch[0]:
            if self._value is not None and ch[0] <= self._value:
                self._value = None  # it may have held the minimum
            ch[0] = ts

    # -- reading ----------------------------------------------------------------------------------
    def _wake(self) -> None:
        if self.hold_ms > 0 and any(c[1] for c in self._ch.values()):
            self._woke_at = self.wall_clock()

    def _holding(self) -> bool:
        return self._woke_at is not None and \
            self.wall_clock() - self._woke_at < self.hold_ms

    def value(self) -> int:
        """Min progress over the non-idle channels (and, during a wake hold, the idle ones);
        max over all when every one is idle; -1 while a channel has not been heard of."""
        if self._value is None or (self._held and not self._holding()):
            self._value = self._compute()
        return self._value

    def _compute(self) -> int:
        ch = self._ch
        self._held = False
        if not self.expected or any(k not in ch for k in self.expected):
            return -1
        active = [c[0] for c in ch.values() if not c[1]]
        if not active:
            return max(c[0] for c in ch.values())
        if len(active) < len(ch) and self._holding():
            self._held = True
            return min(c[0] for c in ch.values())
        return min(active)

    def channels(self) -> Channels:
        return {k: (c[0], c[1]) for k, c in self._ch.items()}

    def end_batch(self) -> int:
        """Forget the batch's per-record values; returns the watermark."""
        self.at.clear()
        return self.value()
