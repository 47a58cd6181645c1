"""What a task remembers next to its state, and how it is written down.

* In RocksDB's ``__meta`` column family, written in the same WriteBatch as the state:
  - ``offset:<topic>:<partition>`` -> the next input offset the state reflects;
  - ``upstream:<repartition topic>|<topic>:<partition>`` -> ``offset,index``: the highest
    upstream position applied per repartition source (replay detection);
  - ``changelog:<topic>`` -> the end offset of the task's changelog partition right after the
    commit that wrote this state. On open, this tells whether local state is current (equal to
    the changelog's end), behind (someone else wrote after it: restore the difference) or from
    another incarnation of the changelog (end below it: wipe);
  - ``shape`` -> the sub-topology's source topics and stores, so that state written by a
    different topology shape is never opened as this one;
  - ``streamtime`` -> the task's stream time (:mod:`streams.runtime.watermarks`);
  - ``channel:<repartition topic>|<upstream partition>`` -> ``time`` or ``time,idle``: the
    event-time progress of each upstream partition behind a repartition topic.
* In changelog headers: ``streams-offsets`` (the input offsets as JSON ``{"topic:p": offset}``)
  and ``streams-upstream`` (the upstream positions as JSON ``{key: "offset,index"}``), so a
  restore can tell finished commits from unfinished ones, ``streams-time`` (the task's
  stream time), so restored windows close when they would have, and ``streams-channels`` (the
  upstream partitions' progress as JSON ``{key: [time, idle]}``), so a restored task's
  watermark neither moves back nor jumps ahead.
* ``streams-progress`` on progress markers (null key and value) on repartition topics:
  ``<upstream partition>:<stream time>`` or ``...:idle`` (:mod:`streams.runtime.watermarks`).
* ``streams-origin`` on repartition records: ``topic:partition:offset:index`` of the input
  record they derive from, ``index`` numbering the records one origin fans out to. A result no
  one input record is behind (a final window result, an unmatched stream-stream join result, a
  record released by a versioned join's grace) names its store's changelog and partition, and
  its ``offset`` is the stream time at which its window closed (its close time, a function of
  the window: the same on a replay, larger for every later close of that store and partition,
  across restarts and rebalances), ``index`` numbering the results of one close in their emit
  order. Dead letters of such results say the same: ``source-topic`` the changelog,
  ``source-offset`` the close time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

OFFSETS_HEADER = "streams-offsets"
UPSTREAM_HEADER = "streams-upstream"
STREAM_TIME_HEADER = "streams-time"
ORIGIN_HEADER = "streams-origin"
CHANNELS_HEADER = "streams-channels"
PROGRESS_HEADER = "streams-progress"

Offsets = dict[tuple[str, int], int]
Positions = dict[str, tuple[int, int]]
# "<repartition topic>|<upstream partition>" -> (progress, idle)
Channels = dict[str, tuple[int, bool]]


class TaskId(NamedTuple):
    """A task: one sub-topology (by its stable id) on one partition; ``str()`` is its directory
    name ``<sub>_<partition>``."""

    sub: str
    partition: int

    def __str__(self) -> str:
        return f"{self.sub}_{self.partition}"

    @classmethod
    def parse(cls, text: str) -> TaskId:
        sub, _, part = text.rpartition("_")
        if not sub or not part.isdigit():
            raise ValueError(f"not a task id: {text!r}")
        return cls(sub, int(part))


@dataclass
class TaskMeta:
    offsets: Offsets = field(default_factory=dict)
    upstream: Positions = field(default_factory=dict)
    stream_time: int = -1
    changelog: dict[str, int] = field(default_factory=dict)
    shape: str | None = None
    channels: Channels = field(default_factory=dict)

    def encode(self) -> dict[str, str]:
        meta = {f"offset:{t}:{p}": str(o) for (t, p), o in self.offsets.items()}
        meta.update({f"upstream:{k}": f"{o},{i}" for k, (o, i) in self.upstream.items()})
        meta.update({f"changelog:{t}": str(o) for t, o in self.changelog.items()})
        if self.stream_time >= 0:
            meta["streamtime"] = str(self.stream_time)
        if self.shape is not None:
            meta["shape"] = self.shape
        meta.update({f"channel:{k}": f"{t},idle" if idle else str(t)
                     for k, (t, idle) in self.channels.items()})
        return meta

    @classmethod
    def decode(cls, entries: dict[str, str]) -> TaskMeta:
        meta = cls()
        for key, value in entries.items():
            kind, _, rest = key.partition(":")
            if kind == "offset":
                topic, _, part = rest.rpartition(":")
                meta.offsets[(topic, int(part))] = int(value)
            elif kind == "upstream":
                off, idx = value.split(",")
                meta.upstream[rest] = (int(off), int(idx))
            elif kind == "changelog":
                meta.changelog[rest] = int(value)
            elif kind == "streamtime":
                meta.stream_time = int(value)
            elif kind == "shape":
                meta.shape = value
            elif kind == "channel":
                t, _, idle = value.partition(",")
                meta.channels[rest] = (int(t), idle == "idle")
        return meta

    @property
    def empty(self) -> bool:
        return not (self.offsets or any(self.changelog.values()))


def shape_of(topics: list[str], stores: list[str]) -> str:
    return json.dumps({"topics": sorted(topics), "stores": sorted(stores)},
                      separators=(",", ":"))


def encode_offsets(offsets: Offsets) -> bytes:
    return json.dumps({f"{t}:{p}": o for (t, p), o in offsets.items()},
                      separators=(",", ":")).encode()


def encode_upstream(upstream: Positions) -> bytes:
    return json.dumps({k: f"{o},{i}" for k, (o, i) in upstream.items()},
                      separators=(",", ":")).encode()


def decode_upstream(data: bytes) -> Positions:
    return {k: (int(o), int(i)) for k, v in json.loads(data).items() for o, i in [v.split(",")]}


def encode_channels(channels: Channels) -> bytes:
    return json.dumps({k: [t, idle] for k, (t, idle) in channels.items()},
                      separators=(",", ":")).encode()


def decode_channels(data: bytes) -> Channels:
    return {k: (int(t), bool(idle)) for k, (t, idle) in json.loads(data).items()}


class Origin(NamedTuple):
    """Where a repartitioned record came from (its ``streams-origin`` header)."""

    topic: str
    partition: int
    offset: int
    output_index: int  # the n-th record sent for that input position (``tuple.index`` is taken)


def encode_origin(topic: str, partition: int, offset: int, index: int) -> bytes:
    return f"{topic}:{partition}:{offset}:{index}".encode()


def decode_origin(data: bytes) -> Origin:
    topic, part, off, idx = data.decode().rsplit(":", 3)
    return Origin(topic, int(part), int(off), int(idx))


def header(headers: Any, name: str) -> bytes | None:
    for k, v in headers or ():
        if k == name:
            return v
    return None


def source_headers(raw: Any) -> list[tuple[str, bytes]]:
    """``source-topic``/``-partition``/``-offset`` of the input record ``raw`` derives from:
    after a repartition, the original input (from its origin header) and ``via-topic`` naming
    the internal topic."""
    topic, partition, offset = raw.topic, raw.partition, raw.offset
    headers: list[tuple[str, bytes]] = []
    origin = header(raw.headers, ORIGIN_HEADER)
    if origin is not None:
        try:
            o = decode_origin(origin)
        except ValueError:
            pass
        else:
            headers.append(("via-topic", raw.topic.encode()))
            topic, partition, offset = o.topic, o.partition, o.offset
    return headers + [("source-topic", topic.encode()),
                      ("source-partition", str(partition).encode()),
                      ("source-offset", str(offset).encode())]
