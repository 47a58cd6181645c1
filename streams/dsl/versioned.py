"""Versioned tables and as-of stream-table joins with a grace period.

Kafka Streams' versioned state stores and stream-table join grace, with the same rules:

**Versioned table** (``topology.table(topic, versioned=timedelta(...))``): every version of a
key is kept, at its record's timestamp, for the history retention ``R``.

* The table's stream time ``T`` is the largest timestamp written to it. A record older than
  ``T - R`` is dropped (counted in ``streams_dropped_records_total{reason="expired"}``).
* A null value is a tombstone, and a version too: as of a time at or after it the key has no
  row; a later record makes the key live again.
* Two records of a key with the same timestamp: the later one replaces the earlier.
* The table's updates as a stream (``to_stream()``) carry only records that became the key's
  latest version: an out-of-order record only fills in history (as in Kafka Streams).

**Stream-table join** with a versioned table: each stream record is joined with the table's
row *as of the stream record's timestamp* (the version with the largest timestamp at or before
it), not with the row current when it is processed. A stream record older than ``T - R`` gets
the key's latest version if that is not later than the record, else no row.

**Grace** (``stream.join(table, joiner, grace=timedelta(...), name=...)``, versioned tables
only): stream records are held back in a buffer (a changelogged store, so nothing held is lost
on a restart) until the task's stream time reaches ``ts + grace``, then joined in timestamp
order, so table updates that arrive late, up to ``grace``, still count. A stream record that
is already older than ``stream time - grace`` when it arrives is joined at once. Outputs keep
the stream record's key and timestamp; ``how``, null keys/values and dead letters as for every
table join (:mod:`streams.dsl.table_joins`).

>>> from datetime import timedelta
>>> from streams import Topology
>>> from streams.testing import TopologyTestDriver
>>> t = Topology("tiers")
>>> users = t.table("users", versioned=timedelta(hours=1))
>>> _ = (t.stream("txns")
...       .join(users, lambda txn, user: {**txn, "tier": user["tier"]},
...             grace=timedelta(seconds=10), name="txn-tier")
...       .to("out"))
>>> with TopologyTestDriver(t) as d:
...     d.pipe("users", "u1", {"tier": "GOLD"}, timestamp=1_000)
...     d.pipe("users", "u1", {"tier": "BASIC"}, timestamp=5_000)
...     d.pipe("txns", "u1", {"id": 1}, timestamp=4_000)    # held back: within grace
...     d.pipe("txns", "u1", {"id": 2}, timestamp=20_000)   # stream time passes 4_000 + grace
...     d.read_output("out")
[('u1', {'id': 1, 'tier': 'GOLD'})]

Deviations from Kafka Streams: grace is measured against the task's stream time (all its
input partitions, the table's included, as windows are), and held records are released at the
end of the batch in which stream time passed their ``ts + grace`` whatever moved it, not only
when the next stream record arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from ..serdes import Serde
from . import nodes as n
from .builder import InternalBuilder, StoreSpec, value_serde_of

VERSIONED = "versioned"  # the StoreSpec kind of a versioned table


def duration_ms(d: timedelta | int, what: str) -> int:
    """``d`` (a timedelta or int milliseconds) in ms; a negative one is refused.

    >>> duration_ms(timedelta(seconds=1), "grace")
    1000
    """
    if isinstance(d, bool) or not isinstance(d, (timedelta, int)):
        raise TypeError(f"{what} must be a timedelta or int milliseconds, got {d!r}")
    ms = int(d.total_seconds() * 1000) if isinstance(d, timedelta) else d
    if ms < 0:
        raise ValueError(f"{what} must not be negative, got {d!r}")
    return ms


def add_versioned_table(builder: InternalBuilder, topic: str, name: str, *, key_serde: Serde,
                        value_serde: Serde, history: timedelta | int
                        ) -> tuple[StoreSpec, n.Node]:
    """Declare the versioned table ``name`` on ``topic`` (see :meth:`Topology.table`): its
    store and the node whose records are its updates."""
    history_ms = duration_ms(history, "versioned (history retention)")
    spec = builder.add_store(name, value_serde, VERSIONED, history_ms=history_ms)
    source = builder.add_source(topic, key_serde, spec.value_serde)
    node = source.add_child(n.VersionedTableSourceNode(builder.next_name("table"), name,
                                                       spec.value_serde, history_ms=history_ms))
    return spec, node


def versioned_join_node(builder: InternalBuilder, head: n.Node, table: str,
                        joiner: Callable[[Any, Any], Any], how: str, name: str | None,
                        grace: timedelta | int | None) -> n.Node:
    """The join node of ``stream.join(table, ..., grace=...)`` when ``table`` is versioned;
    declares the grace buffer (``<name>-buffer``, with a changelog) when there is a grace."""
    grace_ms = 0 if grace is None else duration_ms(grace, "grace")
    buffer = None
    if grace_ms > 0:
        if name is None:
            raise TypeError("a stream-table join with a grace needs name= (it names the buffer "
                            "of held-back records and its changelog, which must stay the same "
                            "across versions)")
        buffer = f"{name}-buffer"
        builder.add_store(buffer, value_serde_of(head), "grace-buffer")
    return n.VersionedTableJoinNode(name or builder.next_name("join"), table=table,
                                    joiner=joiner, how=how, grace_ms=grace_ms, buffer=buffer)
