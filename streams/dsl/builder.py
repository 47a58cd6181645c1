"""The registry behind a :class:`~streams.dsl.topology.Topology`: what the public DSL builds into.

Like Kafka Streams' ``InternalStreamsBuilder``: it owns the graph's sources, the state stores,
the repartition topics and the names, and refuses the mistakes that would silently lose or mix
data (a table declared twice, a repartition name used twice, an internal topic read as an
input). The public classes (``Topology``, ``Stream``, ``GroupedStream``, ``Table``) and the
operator modules call it; users never need to.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..serdes import JsonSerde, KeySerde, RecordSerde, Serde, serde_for
from . import nodes as n

NAME = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class StoreSpec:
    """A keyed state store (a RocksDB column family per task, plus a compacted changelog)."""

    name: str
    value_serde: Serde
    changelog: str
    kind: str  # "aggregate", "table", "store"; "window", "session", "join-buffer" (state.views)
    key_serde: Serde
    window: Any = None  # the window spec of a windowed aggregate's store
    history_ms: int | None = None  # a versioned table's history retention (state.versioned_store)


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


class InternalBuilder:
    """Sources, stores, repartitions, global tables and agents of one topology, and the checks
    that keep their names and topics apart."""

    def __init__(self, name: str, late_topic: str | None) -> None:
        self.name = name
        self.late_topic = late_topic
        self.sources: list[n.SourceNode] = []
        self.stores: dict[str, StoreSpec] = {}
        self.global_tables: dict[str, GlobalTableSpec] = {}
        # Faust-style agents (streams.dsl.agents): agents, their tables, topics they send to
        self.agents: dict[str, n.AgentNode] = {}
        self.agent_tables: dict[str, Any] = {}
        self.send_topics: dict[str, Any] = {}
        self.internal_sends: dict[str, Any] = {}  # internal_topic(): agent -> agent
        self._counter = 0
        self._repartition_names: set[str] = set()

    # -- names ----------------------------------------------------------------------------------
    def next_name(self, kind: str) -> str:
        """A node name ``<kind>-NNNN``. Node names only label the graph (describe, dead-letter
        reasons); no topic or state is named from this counter, so inserting an operator
        renames nothing persistent."""
        self._counter += 1
        return f"{kind}-{self._counter:04d}"

    def repartition_topic(self, name: str) -> str:
        return f"{self.name}-{name}-repartition"

    def changelog_topic(self, store: str) -> str:
        return f"{self.name}-{store}-changelog"

    def claim_repartition(self, name: str) -> str:
        """Reserve the repartition ``name``; one name, one topic, one writer."""
        if not NAME.match(name) or name.startswith("__"):
            raise ValueError(f"invalid repartition name {name!r}")
        topic = self.repartition_topic(name)
        if name in self._repartition_names:
            raise ValueError(f"repartition {name!r} (topic {topic}) is used twice in topology "
                             f"{self.name!r}; give each group_by a distinct name=")
        if topic in self.input_topics():
            raise ValueError(f"topic {topic!r} is an input of topology {self.name!r} and cannot "
                             f"also be its repartition topic")
        self._repartition_names.add(name)
        return topic

    # -- checks ---------------------------------------------------------------------------------
    def check_input(self, topic: str) -> None:
        """Refuse ``topic`` as a source if the topology writes it or holds it as a global table."""
        # A source on an internal topic would see the topology's own writes as input (and, on a
        # repartition topic, the origin headers would make them look like replays).
        claimed = [self.repartition_topic(name) for name in self._repartition_names]
        if topic in self.internal_topics() or topic in claimed:
            raise ValueError(f"topic {topic!r} is an internal topic of topology {self.name!r} "
                             "(repartition or changelog) and cannot be read as an input")
        if any(g.topic == topic for g in self.global_tables.values()):
            raise ValueError(f"topic {topic!r} is a global table of topology {self.name!r}; "
                             "it cannot also be read as a stream, table or another global table")

    def check_table_name(self, name: str) -> None:
        if not NAME.match(name) or name.startswith("__"):
            raise ValueError(f"invalid table name {name!r}")
        if name in self.stores or name in self.global_tables:
            raise ValueError(f"table {name!r} is declared twice in topology {self.name!r}")

    # -- graph and state ------------------------------------------------------------------------
    def add_source(self, topic: str, key_serde: Serde, value_serde: Serde,
                   timestamp: str | Callable[[Any], int] | None = None, *,
                   validate: Callable[..., Any] | None = None) -> n.SourceNode:
        """A source node on the input ``topic`` (which the caller has checked with
        :meth:`check_input` before declaring anything else for it)."""
        node = n.SourceNode(self.next_name("source"), topic, key_serde, value_serde, timestamp,
                            validate=validate)
        self.sources.append(node)
        return node

    def add_internal_source(self, name: str, topic: str, key_serde: Serde,
                            value_serde: Serde) -> n.SourceNode:
        """The reading end of the repartition topic ``topic`` (node ``<name>-source``)."""
        node = n.SourceNode(f"{name}-source", topic, key_serde, value_serde, None, internal=True)
        self.sources.append(node)
        return node

    def add_store(self, name: str, value_serde: Serde, kind: str, window: Any = None,
                  history_ms: int | None = None) -> StoreSpec:
        """Declare the state store ``name`` with its changelog ``<topology>-<name>-changelog``."""
        self.check_table_name(name)
        if isinstance(value_serde, RecordSerde) and kind != "table":
            # Input is checked against its Record at the source; a store's values come from the
            # topology's own functions, and refusing to read them back would wedge the key.
            value_serde = RecordSerde(value_serde.record, check_fields=False)
        changelog = self.changelog_topic(name)
        if changelog in self.input_topics():
            raise ValueError(f"topic {changelog!r} is an input of topology {self.name!r} and "
                             f"cannot also be the changelog of table {name!r}")
        spec = StoreSpec(name, value_serde, changelog, kind, KeySerde(), window, history_ms)
        self.stores[name] = spec
        return spec

    def window_agent_table(self, name: str, window: Any, table: Any) -> StoreSpec:
        """Make the agent table ``name`` a window store (``table_store(...).tumbling(...)``);
        ``table`` is its windowed handle."""
        old = self.stores[name]
        spec = StoreSpec(old.name, old.value_serde, old.changelog, "window", old.key_serde,
                         window)
        self.stores[name] = spec
        self.agent_tables[name] = table
        return spec

    def add_global_table(self, spec: GlobalTableSpec) -> None:
        self.check_input(spec.topic)
        if spec.topic in [s.topic for s in self.sources]:
            raise ValueError(f"topic {spec.topic!r} is already read as a stream or table of "
                             f"topology {self.name!r}; a global table must have its own topic")
        self.check_table_name(spec.name)
        self.global_tables[spec.name] = spec

    def grouping(self, upstream: n.Node, *, key: Callable[[Any], Any] | None = None,
                 name: str | None = None, repartition: bool = False) -> Grouping:
        return Grouping(self, upstream, key=key, name=name, repartition=repartition)

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
        return _unique([*(s.topic for s in self.sources if not s.internal),
                        *(g.topic for g in self.global_tables.values())])

    def output_topics(self) -> list[str]:
        sinks = [x.topic for x in self.nodes() if isinstance(x, n.SinkNode) and not x.internal]
        return _unique([*sinks, *self.send_topics])

    def repartition_topics(self) -> list[str]:
        return _unique(s.topic for s in self.sources if s.internal)

    def changelog_topics(self) -> list[str]:
        return [s.changelog for s in self.stores.values()]

    def internal_topics(self) -> list[str]:
        return self.repartition_topics() + self.changelog_topics()


def value_serde_of(node: n.Node) -> Serde:
    """How the values ``node`` emits are written to a repartition topic or kept in a store as
    they are: with their faust Record class if known, else as JSON."""
    record = n.value_type(node)
    return JsonSerde() if record is None else serde_for(record)


class Grouping:
    """The records of ``upstream`` partitioned by a key, for aggregations, joins and agents.

    Without ``repartition`` that is ``upstream`` itself. With it, :meth:`node` builds, on
    first use, ``upstream`` → (select the key) → sink → repartition topic → source, and every
    later use shares it. The topic is ``<topology>-<name>-repartition``; without ``name`` it is
    named after the first user (an aggregation's table, as Kafka Streams does), so it stays the same
    when operators are added elsewhere. A ``name`` is claimed at once, so a duplicate fails
    where it is written.
    """

    def __init__(self, builder: InternalBuilder, upstream: n.Node, *,
                 key: Callable[[Any], Any] | None = None, name: str | None = None,
                 repartition: bool = False) -> None:
        self.builder = builder
        self.upstream = upstream
        self.key = key  # None: keep the record's key
        self.name = name
        self.repartition = repartition
        self.value_type = n.value_type(upstream)
        self._source: n.SourceNode | None = None
        if repartition and name is not None:
            builder.claim_repartition(name)

    def node(self, default_name: str) -> n.Node:
        """The node whose records are partitioned by the grouping key; ``default_name`` names
        the repartition if the grouping has no ``name`` and this is its first use."""
        if not self.repartition:
            return self.upstream
        if self._source is None:
            builder = self.builder
            name = self.name if self.name is not None else default_name
            topic = (builder.repartition_topic(name) if self.name is not None
                     else builder.claim_repartition(name))
            head = self.upstream
            if self.key is not None:
                head = head.add_child(n.SelectKeyNode(f"{name}-key", self.key))
            head.add_child(n.SinkNode(f"{name}-sink", topic, KeySerde(), JsonSerde(),
                                      internal=True))
            # Repartitioned values travel as JSON; decode them back into the user's Record type.
            self._source = builder.add_internal_source(name, topic, KeySerde(),
                                                       self.value_serde())
        return self._source

    def value_serde(self) -> Serde:
        """The serde of the grouped values (how a store would keep them as they are)."""
        return serde_for(self.value_type) if self.value_type is not None else JsonSerde()


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
