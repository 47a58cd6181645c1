"""The user-facing DSL: ``Topology``, ``Stream``, ``GroupedStream`` and ``Table``.

A topology file reads top to bottom like the data flows::

    topology = Topology("profile_notifications")
    views = topology.stream("profile-views", timestamp="ts")
    (views.filter(lambda v: "CEO" in v["viewer_title"])
          .select_key(lambda v: v["profile_id"])
          .to("profile-view-notifications"))

Functions passed to operators receive the record *value* (a dict, or a faust Record when the
source declares ``value=SomeRecord``); ``select_key``/``group_by`` return the new key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import nodes as n
from .serdes import JsonSerde, KeySerde, Serde, serde_for

_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class StoreSpec:
    """A keyed state store (a RocksDB column family per task, plus a compacted changelog)."""

    name: str
    value_serde: Serde
    changelog: str
    kind: str  # "aggregate", "table", "store"
    key_serde: Serde


class Topology:
    """A named dataflow: sources, operators, tables and sinks.

    >>> t = Topology("demo")
    >>> _ = t.stream("in").filter(lambda v: v["n"] > 1).to("out")
    >>> t.input_topics(), t.output_topics()
    (['in'], ['out'])
    """

    def __init__(self, name: str, description: str = "") -> None:
        if not _NAME.match(name):
            raise ValueError(f"topology name {name!r} may only use letters, digits, '.', '_', '-'")
        self.name = name
        self.description = description
        self.sources: list[n.SourceNode] = []
        self.stores: dict[str, StoreSpec] = {}
        self.exactly_once = False
        self._counter = 0

    # -- naming ---------------------------------------------------------------------------------
    def _next_name(self, kind: str) -> str:
        self._counter += 1
        return f"{kind}-{self._counter:04d}"

    @property
    def dlq_topic(self) -> str:
        return f"{self.name}-dlq"

    def repartition_topic(self, name: str) -> str:
        return f"{self.name}-{name}-repartition"

    def changelog_topic(self, store: str) -> str:
        return f"{self.name}-{store}-changelog"

    # -- sources --------------------------------------------------------------------------------
    def stream(self, topic: str, *, key: Any = "str", value: Any = "json",
               timestamp: str | Callable[[Any], int] | None = None) -> Stream:
        """Read ``topic`` as a stream.

        ``value``: a faust Record class, "json" (a JSON object as dict) or a Serde.
        ``timestamp``: a field name (epoch ms), a function of the value, or None for the
        Kafka record timestamp. A record without a usable timestamp goes to the dead letters.
        """
        node = n.SourceNode(self._next_name("source"), topic, serde_for(key), serde_for(value),
                            timestamp)
        self.sources.append(node)
        return Stream(self, node)

    def table(self, topic: str, *, name: str | None = None, key: Any = "str",
              value: Any = "json") -> Table:
        """Materialize ``topic`` as a table (latest value per key, a null value deletes)."""
        name = name or topic
        spec = self._add_store(name, serde_for(value), "table")
        source = n.SourceNode(self._next_name("source"), topic, serde_for(key), spec.value_serde,
                              None)
        self.sources.append(source)
        node = source.add_child(n.TableSourceNode(self._next_name("table"), name, spec.value_serde))
        return Table(self, node, spec)

    def store(self, name: str, *, value: Any = "any-json") -> StoreSpec:
        """Declare a keyed state store for :meth:`Stream.process`."""
        return self._add_store(name, serde_for(value), "store")

    def _add_store(self, name: str, value_serde: Serde, kind: str) -> StoreSpec:
        if not _NAME.match(name) or name.startswith("__"):
            raise ValueError(f"invalid table name {name!r}")
        if name in self.stores:
            raise ValueError(f"table {name!r} is declared twice in topology {self.name!r}")
        spec = StoreSpec(name, value_serde, self.changelog_topic(name), kind, KeySerde())
        self.stores[name] = spec
        return spec

    # -- introspection --------------------------------------------------------------------------
    def nodes(self) -> list[n.Node]:
        seen: dict[int, n.Node] = {}
        stack: list[n.Node] = list(reversed(self.sources))
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen[id(node)] = node
            stack.extend(reversed(node.children))
        return list(seen.values())

    def input_topics(self) -> list[str]:
        return _unique(s.topic for s in self.sources if not s.internal)

    def output_topics(self) -> list[str]:
        return _unique(x.topic for x in self.nodes() if isinstance(x, n.SinkNode) and not x.internal)

    def repartition_topics(self) -> list[str]:
        return _unique(s.topic for s in self.sources if s.internal)

    def changelog_topics(self) -> list[str]:
        return [s.changelog for s in self.stores.values()]

    def internal_topics(self) -> list[str]:
        return self.repartition_topics() + self.changelog_topics()

    def describe(self, fmt: str = "text") -> str:
        from .describe import describe

        return describe(self, fmt)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


class Stream:
    """A keyed record stream. Operators return new streams; nothing runs until a worker starts."""

    def __init__(self, topology: Topology, node: n.Node) -> None:
        self.topology = topology
        self.node = node

    def _then(self, node: n.Node) -> Stream:
        self.node.add_child(node)
        return Stream(self.topology, node)

    def _name(self, kind: str, name: str | None) -> str:
        return name or self.topology._next_name(kind)

    def map(self, fn: Callable[[Any], Any], *, name: str | None = None) -> Stream:
        """New value per record, same key. ``s.map(lambda v: {**v, "fare": str(v["fare"])})``"""
        return self._then(n.MapNode(self._name("map", name), fn))

    def filter(self, predicate: Callable[[Any], bool], *, name: str | None = None) -> Stream:
        """Keep the records whose value satisfies ``predicate``."""
        return self._then(n.FilterNode(self._name("filter", name), predicate))

    def flat_map(self, fn: Callable[[Any], Iterable[Any]], *, name: str | None = None) -> Stream:
        """Zero or more values per record, each with the record's key and timestamp."""
        return self._then(n.FlatMapNode(self._name("flatmap", name), fn))

    def select_key(self, fn: Callable[[Any], Any], *, name: str | None = None) -> Stream:
        """Re-key each record by ``fn(value)`` (no repartition; ``to()`` partitions by it)."""
        return self._then(n.SelectKeyNode(self._name("selectkey", name), fn))

    def peek(self, fn: Callable[[Any, Any], None], *, name: str | None = None) -> Stream:
        """Call ``fn(key, value)`` for its side effect; records pass through unchanged."""
        return self._then(n.PeekNode(self._name("peek", name), fn))

    def branch(self, *predicates: Callable[[Any], bool], default: bool = False) -> list[Stream]:
        """Split by the first matching predicate (records matching none are dropped, unless
        ``default=True`` adds a last branch for them).

        ``premium, regular, other = s.branch(is_premium, is_regular, default=True)``
        """
        preds: list[Callable[[Any], bool] | None] = list(predicates) + ([None] if default else [])
        node = n.BranchNode(self.topology._next_name("branch"), preds)
        self.node.add_child(node)
        out = []
        for i in range(len(preds)):
            out.append(Stream(self.topology, node.add_child(
                n.MapNode(f"{node.name}-{i}", _identity))))
        return out

    def to(self, topic: str, *, key: Any = None, value: Any = "any-json") -> Stream:
        """Write every record to ``topic`` (partitioned by key, Kafka's default partitioner)."""
        key_serde = KeySerde() if key is None else serde_for(key)
        self.node.add_child(n.SinkNode(self.topology._next_name("sink"), topic, key_serde,
                                       serde_for(value)))
        return self

    def group_by(self, key: Callable[[Any], Any], *, name: str | None = None) -> GroupedStream:
        """Re-key by ``key(value)`` and repartition through an internal topic, so that all
        records of a key meet in one task.

        ``rides.group_by(lambda r: r["driver_id"], name="by-driver").count(name="rides")``
        """
        name = self._name("groupby", name)
        topic = self.topology.repartition_topic(name)
        sink = n.SinkNode(f"{name}-sink", topic, KeySerde(), JsonSerde(), internal=True)
        self.node.add_child(n.SelectKeyNode(f"{name}-key", key)).add_child(sink)
        source = n.SourceNode(f"{name}-source", topic, KeySerde(), JsonSerde(), None,
                              internal=True)
        self.topology.sources.append(source)
        return GroupedStream(self.topology, source, value_type=_value_type(self))

    def group_by_key(self) -> GroupedStream:
        """Group by the current key without repartitioning (the key must already be the
        partitioning key)."""
        return GroupedStream(self.topology, self.node, value_type=_value_type(self))

    def process(self, fn: Callable[..., Iterable[tuple[Any, Any]] | None], *,
                stores: Iterable[str | StoreSpec] = (), name: str | None = None) -> Stream:
        """A stateful step: ``fn(key, value, stores)`` reads and writes the named stores
        (``stores["balances"].get(k)`` / ``.put(k, v)``) and returns the (key, value) pairs to
        emit downstream (or None). Store writes are committed atomically with the input offsets.
        """
        names = [s.name if isinstance(s, StoreSpec) else s for s in stores]
        for s in names:
            if s not in self.topology.stores:
                raise ValueError(f"process() uses undeclared store {s!r}; declare it with "
                                 "topology.store(name)")
        return self._then(n.ProcessNode(self._name("process", name), fn, names))


def _identity(value: Any) -> Any:
    return value


def _value_type(stream: Stream) -> Any:
    node: n.Node | None = stream.node
    while node is not None:
        if isinstance(node, (n.SourceNode, n.AggregateNode, n.TableSourceNode)):
            # A table's updates carry the table's values (aggregates), not its input's type.
            return getattr(node.value_serde, "record", None)
        if isinstance(node, (n.MapNode, n.FlatMapNode, n.ProcessNode)) and node.parents and \
                not isinstance(node.parents[0], n.BranchNode):
            return None
        node = node.parents[0] if node.parents else None
    return None


class GroupedStream:
    """A stream grouped by key, ready for aggregation into a table."""

    def __init__(self, topology: Topology, node: n.Node, value_type: Any = None) -> None:
        self.topology = topology
        self.node = node
        self.value_type = value_type
        if value_type is not None and isinstance(node, n.SourceNode) and node.internal:
            # Repartitioned values travel as JSON; turn them back into the user's Record type.
            node.value_serde = serde_for(value_type)

    def aggregate(self, initializer: Callable[[], Any], adder: Callable[[Any, Any], Any], *,
                  name: str, value: Any = "any-json") -> Table:
        """Fold each key's values: ``agg = adder(agg, value)`` starting from ``initializer()``.

        ``g.aggregate(lambda: {"rides": 0}, lambda a, v: {"rides": a["rides"] + 1}, name="t")``
        """
        spec = self.topology._add_store(name, serde_for(value), "aggregate")
        node = n.AggregateNode(f"{name}-aggregate", name, initializer, adder, spec.value_serde)
        self.node.add_child(node)
        return Table(self.topology, node, spec)

    def count(self, *, name: str) -> Table:
        """Number of records per key."""
        return self.aggregate(lambda: 0, lambda agg, _v: agg + 1, name=name)

    def reduce(self, reducer: Callable[[Any, Any], Any], *, name: str) -> Table:
        """Combine values per key; the first value of a key is its initial aggregate."""
        first = object()

        def adder(agg: Any, value: Any) -> Any:
            return value if agg is first else reducer(agg, value)

        return self.aggregate(lambda: first, adder, name=name)


class Table:
    """A keyed table materialized in RocksDB (one column family per task) with a changelog."""

    def __init__(self, topology: Topology, node: n.Node, spec: StoreSpec) -> None:
        self.topology = topology
        self.node = node
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    def to_stream(self) -> Stream:
        """The table's updates as a stream of (key, new value)."""
        return Stream(self.topology, self.node)

    def to(self, topic: str, **kwargs: Any) -> Table:
        """Write every update to ``topic``."""
        self.to_stream().to(topic, **kwargs)
        return self
