"""Stream-table and stream-global-table joins: the nodes :meth:`Stream.join` wraps.

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
from typing import TYPE_CHECKING, Any

from . import nodes as n
from .versioned import VERSIONED, versioned_join_node

if TYPE_CHECKING:
    from .stream import Stream
    from .table import GlobalTable, Table

JOIN_MODES = ("inner", "left")
# table kinds a stream can be joined with (key -> latest value); windowed stores are not
TABLE_KINDS = ("table", "aggregate", VERSIONED)


def _check_how(how: str) -> None:
    if how not in JOIN_MODES:
        raise ValueError(f"how must be one of {JOIN_MODES}, got {how!r}")


def join_table(stream: Stream, table: Table, joiner: Callable[[Any, Any], Any], *,
               how: str = "inner", name: str | None = None, grace: Any = None) -> n.Node:
    """The output node of ``stream.join(table, joiner, how="inner"|"left", name=None,
    grace=None)``: see the module docstring; a versioned table is joined as of each record's
    time, with an optional ``grace`` (:mod:`streams.dsl.versioned`).

    ``name`` names the join node and, if the stream must be repartitioned first, its
    repartition topic (default ``<table>-join``); with a grace, also the buffer of held-back
    records (``<name>-buffer``), so it is required then.
    """
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
    builder = stream.topology.builder
    head = stream.node
    if stream.rekeyed:
        # The key may differ from the partitioning key: bring each record to the task that holds
        # its row first, as Kafka Streams does before a stream-table join.
        head = builder.grouping(head, name=name, repartition=True).node(f"{table.name}-join")
    node: n.Node
    if versioned:
        node = versioned_join_node(builder, head, table.name, joiner, how, name, grace)
    else:
        node = n.StreamTableJoinNode(name or builder.next_name("join"), table=table.name,
                                     joiner=joiner, how=how)
    return head.add_child(node)


def join_global_table(stream: Stream, table: GlobalTable,
                      key_selector: Callable[[Any, Any], Any],
                      joiner: Callable[[Any, Any], Any], *, how: str = "inner",
                      name: str | None = None) -> n.Node:
    """The output node of ``stream.join(global_table, key_selector, joiner,
    how="inner"|"left")``: each record is joined with the row ``key_selector(key, value)``
    (Kafka Streams' KeyValueMapper: the record's key and value in, the global table's key out).
    See the module docstring."""
    _check_how(how)
    if table.topology is not stream.topology:
        raise ValueError("a stream can only be joined with a global table of its own topology")
    if not callable(key_selector) or not callable(joiner):
        raise TypeError("join with a global table takes key_selector(key, value) and "
                        "joiner(value, table_value): "
                        "stream.join(products, lambda k, v: v['product_id'], joiner)")
    node = n.GlobalTableJoinNode(name or stream.topology.builder.next_name("join"),
                                 table=table.name, key_selector=key_selector, joiner=joiner,
                                 how=how)
    return stream.node.add_child(node)
