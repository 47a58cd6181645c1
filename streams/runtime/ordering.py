"""Records of a task's input partitions in timestamp order (Kafka Streams' ``PartitionGroup``).

A task that reads several co-partitioned partitions (a join's two inputs, a table and a
stream) must see their records roughly in event-time order: the consumer hands out whatever it
fetched, partition by partition, so during a catch-up one input could run hours ahead of the
other, advance stream time, and make the other's records late (a join would lose its pairs).

:class:`PartitionGroup` buffers the task's raw records per input partition and hands them out
as **runs**: consecutive records of one partition, taken from the partition whose next record
has the smallest timestamp, for as long as they are not later than the next record of any other
partition. Runs go through the task's normal batch path (``Task.process``), so the hot path
stays batch-oriented; a task with a single input partition does not use this at all.

**Waiting for an empty partition.** While one partition has no buffered record and another has,
the group does not know what the empty one's next timestamp will be. It waits:

* while the consumer knows the broker holds more records for it (its last fetch's high
  watermark is ahead of its position), up to :data:`LAG_WAIT_CAP_MS` — the catch-up case;
* otherwise for ``max_task_idle_ms`` of wall time (default 0: not at all, as Kafka Streams'
  ``max.task.idle.ms`` = 0), then processes what it has ("enforced processing");
* ``max_task_idle_ms = -1`` never waits, not even for known records (Kafka Streams' -1).

The ordering timestamp is the one the task's source extracts (a value field or the record
timestamp). A value decoded for it is not decoded again: a run carries the decoded values
(:class:`Run`) to that source. A record whose timestamp cannot be extracted, or that is further
ahead of the wall clock than ``max_future_ms`` allows, orders first; its source sends it to the
dead letters (a year-9999 timestamp must not hold back the records behind it in its partition).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..dsl import nodes as n
from .processors.source import UNDECODED, timestamp_extractor

# The longest a task waits for records the broker is known to hold for an empty partition
# (a bound: a high watermark can run ahead of what the consumer may read, e.g. transaction
# markers or records not yet committed).
LAG_WAIT_CAP_MS = 10_000
# The worker pauses fetching a partition with this many buffered records (as Kafka Streams'
# buffered.records.per.partition), so the consumer fetches the input the task is waiting for
# instead of more of the one it already has.
PAUSE_BUFFERED = 20_000
# A partition with this many buffered records is processed without waiting for the others, so
# a stalled input cannot make the buffers grow without bound.
MAX_BUFFERED = 200_000


class Run(list[Any]):
    """A run of raw records of one partition; ``values[i]`` is the value of ``self[i]`` as the
    source ``node`` decodes it (``UNDECODED``: not decoded), or ``values`` is None."""

    __slots__ = ("node", "values")

    def __init__(self, raws: list[Any], node: n.SourceNode | None = None,
                 values: list[Any] | None = None) -> None:
        super().__init__(raws)
        self.node = node
        self.values = values


def ordering_timestamp(sources: Iterable[n.SourceNode], topic: str) -> Callable[[Any], int]:
    """``f(raw) -> ts`` with the timestamp the first source of ``topic`` extracts; -1 when it
    cannot (the source will dead-letter that record)."""
    node = next(s for s in sources if s.topic == topic)
    extract = timestamp_extractor(node.timestamp)

    def from_record(raw: Any) -> int:
        try:
            return extract(None if node.timestamp is None else
                           node.value_serde.deserialize(raw.value), raw)
        except Exception:  # noqa: BLE001 - the source reports it
            return -1
    return from_record


def ordering_decoder(node: n.SourceNode) -> Callable[[Any], tuple[int, Any]] | None:
    """``f(raw) -> (ts, value)`` for a source whose timestamp is a field or function of the
    value: the ordering timestamp (-1 when it cannot be extracted: the source will dead-letter
    that record) and the decoded value (``UNDECODED`` when it does not decode), so the source
    does not decode the value again. None for a source that orders by record timestamp (no
    value is decoded for that)."""
    if node.timestamp is None:
        return None
    extract = timestamp_extractor(node.timestamp)
    decode = node.value_serde.deserialize

    def decoded(raw: Any) -> tuple[int, Any]:
        try:
            value = decode(raw.value)
        except Exception:  # noqa: BLE001 - the source reports it
            return -1, UNDECODED
        try:
            return extract(value, raw), value
        except Exception:  # noqa: BLE001 - the source reports it
            return -1, value
    return decoded


class PartitionGroup:
    """The buffered input of one task with several input partitions (one per topic)."""

    def __init__(self, topics: list[str], timestamps: Mapping[str, Callable[[Any], int]],
                 max_task_idle_ms: int = 0,
                 future_limit: Callable[[], int | None] | None = None,
                 decoders: Mapping[str, tuple[n.SourceNode, Callable[[Any], tuple[int, Any]]]]
                 | None = None) -> None:
        """``timestamps[topic](raw) -> ts``; a topic in ``decoders`` (``(source node,
        ordering_decoder(node))``) is ordered by the decoder's timestamp instead, and its runs
        carry the decoded values to that source."""
        self.topics = list(topics)
        self._future_limit = future_limit
        self.max_idle_ms = max_task_idle_ms
        self._ts_of = dict(timestamps)
        self._decoders = dict(decoders or {})
        self._raws: dict[str, list[Any]] = {t: [] for t in self.topics}
        self._values: dict[str, list[Any]] = {t: [] for t in self.topics}
        self._ts: dict[str, list[int]] = {t: [] for t in self.topics}
        self._head: dict[str, int] = {t: 0 for t in self.topics}
        self._blocked_since: int | None = None

    @classmethod
    def for_sources(cls, sources: list[n.SourceNode], max_task_idle_ms: int = 0,
                    future_limit: Callable[[], int | None] | None = None) -> PartitionGroup:
        """``future_limit()``: the largest timestamp a record may have now (None: any)."""
        topics = list(dict.fromkeys(s.topic for s in sources))
        decoders = {}
        for t in topics:
            node = next(s for s in sources if s.topic == t)
            decoder = ordering_decoder(node)
            if decoder is not None:
                decoders[t] = (node, decoder)
        return cls(topics, {t: ordering_timestamp(sources, t) for t in topics}, max_task_idle_ms,
                   future_limit, decoders)

    def add(self, topic: str, raws: list[Any]) -> None:
        """Buffer a poll's records of ``topic`` (in offset order)."""
        self._raws[topic].extend(raws)
        decoder = self._decoders.get(topic)
        if decoder is None:
            stamps = list(map(self._ts_of[topic], raws))
        else:
            pairs = list(map(decoder[1], raws))
            stamps = [ts for ts, _ in pairs]
            self._values[topic].extend([value for _, value in pairs])
        limit = None if self._future_limit is None else self._future_limit()
        if limit is not None:
            stamps = [ts if ts <= limit else -1 for ts in stamps]
        self._ts[topic].extend(stamps)

    def buffered(self, topic: str | None = None) -> int:
        topics = self.topics if topic is None else [topic]
        return sum(len(self._raws[t]) - self._head[t] for t in topics)

    def drain(self, now_ms: int, more: Mapping[str, bool] | None = None
              ) -> list[tuple[str, list[Any]]]:
        """The runs that may be processed now, in order: ``[(topic, raws)]``. ``more[topic]``
        says the broker is known to hold more records for that partition than were buffered
        (asked for every input: one may run dry during the drain); ``now_ms`` is the wall clock
        for the idle wait."""
        runs: list[tuple[str, list[Any]]] = []
        raws, tss, head, values = self._raws, self._ts, self._head, self._values
        while True:
            live = [t for t in self.topics if head[t] < len(raws[t])]
            if not live:
                self._blocked_since = None
                break
            if len(live) == len(self.topics):
                self._blocked_since = None
            elif not self._may_proceed(live, now_ms, more or {}):
                break
            first = min(live, key=lambda t: tss[t][head[t]])
            limit = min((tss[t][head[t]] for t in live if t is not first), default=None)
            ts, start = tss[first], head[first]
            end = len(ts) if limit is None else start + 1
            if limit is not None:
                while end < len(ts) and ts[end] <= limit:
                    end += 1
            decoder = self._decoders.get(first)
            if decoder is None:
                runs.append((first, raws[first][start:end]))
            else:
                runs.append((first, Run(raws[first][start:end], decoder[0],
                                        values[first][start:end])))
            if end >= len(ts):
                raws[first], tss[first], head[first], values[first] = [], [], 0, []
            else:
                head[first] = end
        return runs

    def _may_proceed(self, live: list[str], now_ms: int, more: Mapping[str, bool]) -> bool:
        if self.max_idle_ms < 0 or any(self.buffered(t) >= MAX_BUFFERED for t in live):
            return True
        empty = [t for t in self.topics if t not in live]
        if self._blocked_since is None:
            self._blocked_since = now_ms
        waited = now_ms - self._blocked_since
        wait = LAG_WAIT_CAP_MS if any(more.get(t, False) for t in empty) else self.max_idle_ms
        return waited >= wait
