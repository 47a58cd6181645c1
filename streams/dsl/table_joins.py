"""Stream-table and stream-global-table joins, and global tables.

Semantics (Kafka Streams' KStream-KTable and KStream-GlobalKTable joins):

* **Only stream records produce output.** A stream record is joined with the table row that is
  current when the record is processed; a later table update (or tombstone) changes the table
  silently and never emits a join result for earlier stream records. A **versioned** table
  (``topology.table(topic, versioned=timedelta(...))``) is joined as of the stream record's
  timestamp instead, optionally after a ``grace`` (:mod:`streams.dsl.versioned`).
* ``how="inner"``: a stream record whose row is missing produces nothing. ``how="left"``: it
  produces ``joiner(value, None)``.
* A stream record with a **null key** (table joins) or a **null value**, and a global join whose
  ``key_selector`` returns **None**, is skipped and counted in
  ``streams_dropped_records_total{node,reason}`` (reasons ``null-key``, ``null-value``,
  ``null-foreign-key``), for inner and left joins alike: in a key-value model a null value is
  "no message" and a null key matches no row.
* The output keeps the stream record's key and timestamp; its value is what ``joiner`` returns
  (``None`` is passed on as a null value, as Kafka Streams does).
* A ``joiner`` or ``key_selector`` that raises sends the stream record to the dead letters
  (reason ``processing``); one that returns something that cannot be a value or key (a
  coroutine, a generator; a key selector's dict, set, float...) with reason ``shape``.

**Table joins** need the stream and the table's topic **co-partitioned** (same partition count,
same key and partitioner): the join runs in the task that holds both, so the stream topic and
the table's topic form one sub-topology, and a worker refuses to start when their partition
counts differ. A stream whose key may have changed (``select_key``, ``process``) is
repartitioned by its key first, through ``<topology>-<name>-repartition``.

**Global tables** hold every partition of their topic in every worker: no co-partitioning, any
key can be looked up from any task. The topic is the table's changelog (nothing else is
written); each worker keeps a local RocksDB copy with the topic offsets it reflects, loads it to
the topic's end before processing anything, and keeps it current while running.

>>> from streams import Topology
>>> t = Topology("shop")
>>> users = t.table("users")
>>> products = t.global_table("products")
>>> _ = (t.stream("orders")
...       .join(users, lambda order, user: {**order, "tier": user["tier"]})
...       .join(products, lambda _key, order: order["product_id"],
...             lambda order, product: {**order, "price": product and product["price"]},
...             how="left")
...       .to("enriched-orders"))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import nodes as n
from ..serdes import KeySerde, Serde, serde_for

if TYPE_CHECKING:
    from .topology import Stream, Table, Topology

JOIN_MODES = ("inner", "left")
# table kinds a stream can be joined with (key -> latest value); windowed stores are not
TABLE_KINDS = ("table", "aggregate", "versioned")


@dataclass(frozen=True)
class GlobalTableSpec:
    """A global table: the whole of ``topic`` in every worker, keyed as the default key serde
    writes keys (so lookups compare serialized keys, as for other tables)."""

    name: str
    topic: str
    source_key_serde: Serde  # how the topic's keys are decoded
    value_serde: Serde       # how its values are decoded (and checked before they are stored)
    key_serde: Serde = KeySerde()
    kind: str = "global"


class GlobalTable:
    """A table holding every partition of its topic in every worker; join a stream with it by a
    key computed from each record (:meth:`~streams.Stream.join`).

    ``products = topology.global_table("products", value=Product)``
    """

    def __init__(self, topology: Topology, spec: GlobalTableSpec) -> None:
        self.topology = topology
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def topic(self) -> str:
        return self.spec.topic


def add_global_table(topology: Topology, topic: str, *, key: Any = "str", value: Any = "json",
                     name: str | None = None) -> GlobalTable:
    """Declare a global table on ``topic`` (see :meth:`Topology.global_table`)."""
    name = name or topic
    topology._check_input(topic)
    if topic in [s.topic for s in topology.sources]:
        raise ValueError(f"topic {topic!r} is already read as a stream or table of topology "
                         f"{topology.name!r}; a global table must have its own topic")
    topology._check_table_name(name)
    spec = GlobalTableSpec(name, topic, serde_for(key), serde_for(value))
    topology.global_tables[name] = spec
    return GlobalTable(topology, spec)


# -- nodes ------------------------------------------------------------------------------------------
@dataclass(eq=False)
class StreamTableJoinNode(n.Node):
    """Joins each stream record with the current row of its key in ``table`` (a store of the
    same sub-topology)."""

    table: str
    joiner: Callable[[Any, Any], Any]
    how: str

    def store_names(self) -> list[str]:
        return [self.table]

    def label(self) -> str:
        return f"join {self.name} ({self.how}) with table {self.table}"

    def value_record(self) -> Any:
        return None


@dataclass(eq=False)
class GlobalTableJoinNode(n.Node):
    """Joins each stream record with the row of ``key_selector(key, value)`` in the global
    table ``table``."""

    table: str
    key_selector: Callable[[Any, Any], Any]
    joiner: Callable[[Any, Any], Any]
    how: str

    def label(self) -> str:
        return f"join {self.name} ({self.how}) with global table {self.table}"

    def value_record(self) -> Any:
        return None


# -- Stream.join cases ------------------------------------------------------------------------------
def _check_how(how: str) -> None:
    if how not in JOIN_MODES:
        raise ValueError(f"how must be one of {JOIN_MODES}, got {how!r}")


def join_table(stream: Stream, table: Table, joiner: Callable[[Any, Any], Any], *,
               how: str = "inner", name: str | None = None, grace: Any = None) -> Stream:
    """``stream.join(table, joiner, how="inner"|"left", name=None, grace=None)``: see the
    module docstring; a versioned table is joined as of each record's time, with an optional
    ``grace`` (:mod:`streams.dsl.versioned`).

    ``name`` names the join node and, if the stream must be repartitioned first, its
    repartition topic (default ``<table>-join``); with a grace, also the buffer of held-back
    records (``<name>-buffer``), so it is required then.
    """
    from .versioned import VERSIONED, versioned_join_node

    from .topology import GroupedStream, Stream, _value_type

    _check_how(how)
    if table.topology is not stream.topology:
        raise ValueError("a stream can only be joined with a table of its own topology")
    if table.spec.kind not in TABLE_KINDS:
        raise TypeError(f"table {table.name!r} ({table.spec.kind}) cannot be joined with a "
                        "stream: only key-value tables (topology.table, aggregations) can")
    if not callable(joiner):
        raise TypeError(f"joiner must be a function joiner(value, table_value), got {joiner!r}")
    versioned = table.spec.kind == VERSIONED
    if grace is not None and not versioned:
        raise ValueError(f"a grace needs a versioned table (as Kafka Streams): declare "
                         f"{table.name!r} with topology.table(..., versioned=timedelta(...))")
    topology = stream.topology
    head = stream.node
    if stream.rekeyed:
        # The key may differ from the partitioning key: bring each record to the task that holds
        # its row first, as Kafka Streams does before a stream-table join.
        grouped = GroupedStream(topology, head, name=name, repartition=True,
                                value_type=_value_type(head))
        if name is not None:
            topology._claim_repartition(name)
        head = grouped._grouped(f"{table.name}-join")
    node: n.Node
    if versioned:
        node = versioned_join_node(head, table, joiner, how, name, grace)
    else:
        node = StreamTableJoinNode(name or topology._next_name("join"), table=table.name,
                                   joiner=joiner, how=how)
    head.add_child(node)
    return Stream(topology, node)


def join_global_table(stream: Stream, table: GlobalTable,
                      key_selector: Callable[[Any, Any], Any],
                      joiner: Callable[[Any, Any], Any], *, how: str = "inner",
                      name: str | None = None) -> Stream:
    """``stream.join(global_table, key_selector, joiner, how="inner"|"left")``: each record is
    joined with the row ``key_selector(key, value)`` (Kafka Streams' KeyValueMapper: the
    record's key and value in, the global table's key out). See the module docstring."""
    from .topology import Stream

    _check_how(how)
    if table.topology is not stream.topology:
        raise ValueError("a stream can only be joined with a global table of its own topology")
    if not callable(key_selector) or not callable(joiner):
        raise TypeError("join with a global table takes key_selector(key, value) and "
                        "joiner(value, table_value): "
                        "stream.join(products, lambda k, v: v['product_id'], joiner)")
    node = GlobalTableJoinNode(name or stream.topology._next_name("join"), table=table.name,
                               key_selector=key_selector, joiner=joiner, how=how)
    # Lookups change nothing about keys or partitioning: the stream stays as (re)keyed as it was.
    stream.node.add_child(node)
    return Stream(stream.topology, node, rekeyed=stream.rekeyed)
