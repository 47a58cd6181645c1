"""Stream-stream joins: ``left.join(right, joiner, JoinWindows(...), how=..., name=...)``.

Semantics are Kafka Streams' 4.0 (``KStreamKStreamJoin`` and its outer-join store); times are
epoch ms, bounds inclusive, ``retention = before + after + grace``:

* Two records **match** when they have the same key (compared as serialized bytes) and
  ``l.ts - before <= r.ts <= l.ts + after``; mirrored, a right record at ``r.ts`` matches the
  left records in ``[r.ts - after, r.ts + before]``. A match is emitted once, when its second
  record arrives, as ``joiner(left_value, right_value)`` keyed by the key, with timestamp
  ``max(l.ts, r.ts)``; the partners of one record in the order of (timestamp, arrival).
* **Stream time** is the task's (both inputs share it; committed with the state). Each side
  **keeps** a record while ``ts + retention >= stream time`` and an arriving record joins every
  kept partner in its range, even if the record itself is behind its own window (it is out of
  order, not late). A record with ``ts + retention < stream time`` on arrival is **late**:
  dropped, counted in ``streams_late_events_total{node}`` and written to the topology's
  ``late_topic`` if it has one (Kafka Streams would still join it with partners it keeps).
* ``how="inner"``: only matches. ``how="left"``: also each left record that found no partner,
  as ``joiner(left_value, None)``; ``how="outer"``: also each such right record, as
  ``joiner(None, right_value)``; both at the unmatched record's timestamp. Such a record is held
  until its **window closes** (stream time > ``l.ts + after + grace``, right: ``r.ts + before +
  grace``) and emitted then, unless a partner arrived before (no spurious results). A record
  that finds no partner and whose window end (``l.ts + after``, right: ``r.ts + before``) is
  already behind stream time is emitted unmatched at once. As in Kafka Streams, a partner
  arriving later (within the retention) still pairs with a record emitted unmatched.
* **Order**: the unmatched results that a record's arrival closes are emitted *before* that
  record's own results, by (timestamp, right side first, key bytes, arrival), as Kafka Streams
  does; so are those closed when stream time moves without a join record (end of a batch, idle
  close).
* Records with a null key or value are skipped and counted as dropped. A joiner that raises, or
  returns ``None``, sends the arriving record to the dead letters with its effects on the join
  state rolled back (an unmatched record whose joiner fails at close time is a dead letter too).
* Both sides are buffered in RocksDB join buffers ``<name>-left`` / ``<name>-right`` (and
  ``<name>-left-unmatched`` / ``<name>-right-unmatched`` markers for left/outer joins), each
  with a changelog, committed in the task's one WriteBatch. Buffered records are deleted once
  past the retention, so state stays bounded by ``before + after + grace`` of input.
* Both inputs must be co-partitioned (same partition count; the worker refuses to start
  otherwise). A side whose key may have changed (after ``select_key`` or ``process``) is first
  repartitioned through ``<topology>-<name>-left-repartition`` (or ``-right-``), as Kafka
  Streams does.

The deviations from Kafka Streams (late records, an inclusive retention bound, stream time that
survives restarts) and why are in the README's join section.

>>> from streams import Topology, JoinWindows
>>> t = Topology("shop")
>>> orders, shipments = t.stream("orders", timestamp="ts"), t.stream("shipments", timestamp="ts")
>>> _ = orders.join(shipments, lambda o, s: {**o, "carrier": s["carrier"]},
...                 JoinWindows(before=0, after=7 * 86_400_000, grace=3_600_000),
...                 how="left", name="order-shipments").to("shipped")
>>> sorted(t.stores)
['order-shipments-left', 'order-shipments-left-unmatched', 'order-shipments-right']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import nodes as n
from .builder import value_serde_of
from .window_specs import JoinWindows

if TYPE_CHECKING:
    from .stream import Stream

JOIN_KINDS = ("inner", "left", "outer")


def stream_stream_join(left: Stream, right: Stream, joiner: Callable[[Any, Any], Any],
                       windows: JoinWindows, *, how: str = "inner",
                       name: str | None = None) -> n.Node:
    """The output node of ``left.join(right, joiner, windows, how=, name=)`` (see the module
    docstring for the semantics).

    ``name`` is required: it names the join buffers, their changelogs and any repartition
    topic, so it must stay the same across versions of the topology.
    """
    if not isinstance(windows, JoinWindows):
        raise TypeError(f"a stream-stream join needs JoinWindows, got {windows!r}")
    if how not in JOIN_KINDS:
        raise ValueError(f"how must be one of {JOIN_KINDS}, got {how!r}")
    if not callable(joiner):
        raise TypeError(f"joiner must be a function (left_value, right_value) -> value, "
                        f"got {joiner!r}")
    if name is None:
        raise TypeError("a stream-stream join needs name= (it names the join buffers and their "
                        "changelogs, which must stay the same across versions)")
    if left.topology is not right.topology:
        raise ValueError("cannot join streams of different topologies")
    builder = left.topology.builder
    inputs = {"left": left, "right": right}
    for side, stream in inputs.items():
        builder.add_store(f"{name}-{side}", value_serde_of(stream.node), "join-buffer", windows)
    sides = {side: n.StreamJoinSideNode(f"{name}-{side}-join", side, joiner, windows, how, name,
                                        builder.late_topic) for side in inputs}
    for side, stream in inputs.items():
        marker = sides[side].unmatched(side)
        if marker:
            builder.add_store(marker, value_serde_of(stream.node), "join-buffer", windows)
    output = n.JoinOutputNode(f"{name}-output")
    for side, stream in inputs.items():
        # A side whose key may have changed is repartitioned by its key first (co-partitioning).
        upstream = builder.grouping(stream.node, repartition=stream.rekeyed).node(f"{name}-{side}")
        upstream.add_child(sides[side]).add_child(output)
    return output
