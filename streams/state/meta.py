"""What a task remembers next to its state, and how it is written down.

* In RocksDB's ``__meta`` column family: input offsets (``offset:<topic>:<partition>`` -> next
  offset), the highest upstream position applied per repartition source
  (``upstream:<repartition topic>|<topic>:<partition>`` -> ``offset,index``) and stream time.
* In changelog headers: ``streams-offsets`` (the input offsets as JSON ``{"topic:p": offset}``)
  and ``streams-upstream`` (the upstream positions as JSON ``{key: "offset,index"}``), so a
  restore can tell finished commits from unfinished ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

OFFSETS_HEADER = "streams-offsets"
UPSTREAM_HEADER = "streams-upstream"

Offsets = dict[tuple[str, int], int]
Positions = dict[str, tuple[int, int]]


@dataclass
class TaskMeta:
    offsets: Offsets = field(default_factory=dict)
    upstream: Positions = field(default_factory=dict)
    stream_time: int = -1

    def encode(self) -> dict[str, str]:
        meta = {f"offset:{t}:{p}": str(o) for (t, p), o in self.offsets.items()}
        meta.update({f"upstream:{k}": f"{o},{i}" for k, (o, i) in self.upstream.items()})
        if self.stream_time >= 0:
            meta["streamtime"] = str(self.stream_time)
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
            elif kind == "streamtime":
                meta.stream_time = int(value)
        return meta


def encode_offsets(offsets: Offsets) -> bytes:
    return json.dumps({f"{t}:{p}": o for (t, p), o in offsets.items()},
                      separators=(",", ":")).encode()


def encode_upstream(upstream: Positions) -> bytes:
    return json.dumps({k: f"{o},{i}" for k, (o, i) in upstream.items()},
                      separators=(",", ":")).encode()


def decode_upstream(data: bytes) -> Positions:
    return {k: (int(o), int(i)) for k, v in json.loads(data).items() for o, i in [v.split(",")]}
