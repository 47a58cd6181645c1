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
from typing import TYPE_CHECKING, Any

import faust

from . import nodes as n
from ..serdes import JsonSerde, KeySerde, RecordSerde, Serde, serde_for

if TYPE_CHECKING:
    from .table_joins import GlobalTable, GlobalTableSpec
    from .window_ops import WindowedStream

_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


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


class Topology:
    """A named dataflow: sources, operators, tables and sinks.

    >>> t = Topology("demo")
    >>> _ = t.stream("in").filter(lambda v: v["n"] > 1).to("out")
    >>> t.input_topics(), t.output_topics()
    (['in'], ['out'])

    Table keys are compared as their serialized bytes (the default key serde writes a str as
    UTF-8 and any other key as JSON): ``7`` and ``"7"`` are the same key of a table, and after a
    repartition both arrive as ``"7"``. Use one key type per table.

    Mistakes that would silently lose or mix data are refused while the topology is built, with
    a ``ValueError``: two repartitions with the same name, a table declared twice, reading one of
    the topology's own repartition or changelog topics as an input.
    """

    def __init__(self, name: str, description: str = "", *, late_topic: str | None = None,
                 version: str = "") -> None:
        """``late_topic``: where windowed aggregations write the records they drop as late
        (none by default: late records are only counted).

        ``version``: yours to declare (``Topology("trip_stats", version="2")``). It is part of
        the topology's fingerprint, with its nodes, tables and topics: workers whose
        fingerprints differ never run in one consumer group (the later one refuses to start);
        see "Rolling out a new version" in the README."""
        if not _NAME.match(name):
            raise ValueError(f"topology name {name!r} may only use letters, digits, '.', '_', '-'")
        self.name = name
        self.description = description
        self.version = version
        self.sources: list[n.SourceNode] = []
        self.stores: dict[str, StoreSpec] = {}
        self.late_topic = late_topic
        self._counter = 0
        self._repartition_names: set[str] = set()
        self.global_tables: dict[str, GlobalTableSpec] = {}  # see streams.dsl.table_joins
        # Faust-style agents (streams.dsl.agents): agents, their tables, topics they send to
        self.agents: dict[str, Any] = {}
        self.agent_tables: dict[str, Any] = {}
        self.send_topics: dict[str, Any] = {}
        self.internal_sends: dict[str, Any] = {}  # internal_topic(): agent -> agent

    # -- naming ---------------------------------------------------------------------------------
    def _next_name(self, kind: str) -> str:
        # Node names only label the graph (describe, dead-letter reasons); no topic or state is
        # named from this counter, so inserting an operator renames nothing persistent.
        self._counter += 1
        return f"{kind}-{self._counter:04d}"

    @property
    def dlq_topic(self) -> str:
        return f"{self.name}-dlq"

    def repartition_topic(self, name: str) -> str:
        return f"{self.name}-{name}-repartition"

    def changelog_topic(self, store: str) -> str:
        return f"{self.name}-{store}-changelog"

    def _claim_repartition(self, name: str) -> str:
        """Reserve the repartition ``name``; one name, one topic, one writer."""
        if not _NAME.match(name) or name.startswith("__"):
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

    def _check_input(self, topic: str) -> None:
        # A source on an internal topic would see the topology's own writes as input (and, on a
        # repartition topic, the origin headers would make them look like replays).
        claimed = [self.repartition_topic(name) for name in self._repartition_names]
        if topic in self.internal_topics() or topic in claimed:
            raise ValueError(f"topic {topic!r} is an internal topic of topology {self.name!r} "
                             "(repartition or changelog) and cannot be read as an input")
        if any(g.topic == topic for g in self.global_tables.values()):
            raise ValueError(f"topic {topic!r} is a global table of topology {self.name!r}; "
                             "it cannot also be read as a stream, table or another global table")

    # -- sources --------------------------------------------------------------------------------
    def stream(self, topic: str, *, key: Any = "str", value: Any = "json",
               timestamp: str | Callable[[Any], int] | None = None,
               validate: Callable[..., Any] | None = None) -> Stream:
        """Read ``topic`` as a stream.

        ``value``: a faust Record class, "json" (a JSON object as dict) or a Serde. A Record is
        the source's schema: a value missing a required field or with a field of the wrong
        type (see :class:`~streams.serdes.RecordSerde`) is refused at the source.
        ``timestamp``: a field name (epoch ms), a function of the value, or None for the
        Kafka record timestamp. A record without a usable timestamp goes to the dead letters.
        ``validate``: ``fn(value)``, or ``fn(key, value)`` if it takes two parameters, called
        on every decoded record; it rejects the record by raising (the message says what is
        wrong) or by returning ``False``.
        A record that does not decode, fit the schema or pass ``validate`` becomes exactly one
        dead letter (reasons ``decode`` / ``invalid``, header ``node`` = this source) before any
        operator sees it: a stream that fans out to many operators never half-counts it, and
        replaying fixed dead letters cannot apply a record twice.
        A topic may be read several times (and as a table too): every reader gets every record.

        ``clicks = topology.stream("clicks", value=Click, timestamp="ts")``

        >>> from streams.testing import TopologyTestDriver
        >>> def fare_is_money(ride):
        ...     if not isinstance(ride.get("fare"), str) or not ride["fare"].isascii():
        ...         raise ValueError(f"fare must be a decimal string, got {ride.get('fare')!r}")
        >>> t = Topology("doc_validate")
        >>> rides = t.stream("rides", validate=fare_is_money)
        >>> _ = rides.to("all-rides")
        >>> _ = rides.filter(lambda r: r["fare"] > "50").to("big-rides")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("rides", "berlin", {"fare": "12.50"})
        ...     driver.pipe("rides", "berlin", {"fare": 12.5})
        ...     outputs = driver.read_output("all-rides")
        ...     [(d.reason, d.node, d.error) for d in driver.read_dead_letters()]
        [('invalid', 'source-0001', 'fare must be a decimal string, got 12.5')]
        >>> outputs
        [('berlin', {'fare': '12.50'})]
        """
        self._check_input(topic)
        if validate is not None and not callable(validate):
            raise TypeError(f"validate= must be a function, got {validate!r}")
        node = n.SourceNode(self._next_name("source"), topic, serde_for(key), serde_for(value),
                            timestamp, validate=validate)
        self.sources.append(node)
        return Stream(self, node)

    def table(self, topic: str, *, name: str | None = None, key: Any = "str",
              value: Any = "json", versioned: Any = None) -> Table:
        """Materialize ``topic`` as a table (latest value per key, a null value deletes).

        ``versioned=timedelta(...)`` keeps every version of each key for that long (history
        retention) instead of only the latest, so that a stream joined with the table gets the
        row *as of each stream record's timestamp* and the join can take a ``grace``
        (Kafka Streams' versioned tables; rules in :mod:`streams.dsl.versioned`). A version's
        time is its Kafka record timestamp (a tombstone's too).

        ``users = topology.table("users", value=User)``
        ``tiers = topology.table("users", versioned=timedelta(days=1))``
        """
        self._check_input(topic)
        name = name or topic
        if versioned is not None:
            from .versioned import add_versioned_table

            return add_versioned_table(self, topic, name, key=key, value=value,
                                       history=versioned)
        spec = self._add_store(name, serde_for(value), "table")
        source = n.SourceNode(self._next_name("source"), topic, serde_for(key), spec.value_serde,
                              None)
        self.sources.append(source)
        node = source.add_child(n.TableSourceNode(self._next_name("table"), name, spec.value_serde))
        return Table(self, node, spec)

    def global_table(self, topic: str, *, key: Any = "str", value: Any = "json",
                     name: str | None = None) -> GlobalTable:
        """Materialize all of ``topic`` in every worker (latest value per key, a null value
        deletes), for :meth:`Stream.join` by a key computed from each record. No
        co-partitioning needed; the topic itself is the changelog. ``name`` defaults to the
        topic. Semantics in :mod:`streams.dsl.table_joins`.

        ``products = topology.global_table("products", value=Product)``
        """
        from .table_joins import add_global_table

        return add_global_table(self, topic, key=key, value=value, name=name)

    def store(self, name: str, *, value: Any = "any-json") -> StoreSpec:
        """Declare a keyed state store for :meth:`Stream.process`.

        ``balances = topology.store("balances")``
        """
        return self._add_store(name, serde_for(value), "store")

    # -- agents (streams.dsl.agents) -----------------------------------------------------------
    def agent(self, source: Any, *, name: str | None = None, key: Any = "str",
              value: Any = "json", timestamp: Any = None,
              group_by: Callable[[Any], Any] | None = None, sink: Iterable[Any] = (),
              tables: Iterable[Any] | None = None,
              validate: Callable[..., Any] | None = None) -> Callable[[Callable[..., Any]], Any]:
        """Decorate a Faust-style agent reading ``source`` (a topic name, a Stream or a
        GroupedStream); ``yield`` sends to ``sink`` with the current key. ``group_by=fn``
        re-keys and repartitions first (topic ``<topology>-<agent>-repartition``).
        ``tables``: the table_stores the agent uses, if it does not name them itself.
        ``value``, ``timestamp`` and ``validate`` (a topic source only) are those of
        :meth:`stream`: a record the source refuses is one dead letter and the agent never sees
        it (``@topology.agent("payments", validate=has_payment_id)``).
        Semantics (one event = all or nothing, ...) in :mod:`streams.dsl.agents`.

        ``@topology.agent("payments", value=Payment, sink=["payment-results"])``
        """
        from .agents import define_agent

        return define_agent(self, source, name=name, key=key, value=value, timestamp=timestamp,
                            group_by=group_by, sink=sink, tables=tables, validate=validate)

    def table_store(self, name: str, *, default: Callable[[], Any] | None = None,
                    value: Any = "any-json") -> Any:
        """A table for agents, used like a dict (faust's ``app.Table``), in RocksDB with a
        changelog. ``seen = topology.table_store("seen", default=int)``"""
        from .agents import AgentTable

        table = AgentTable(self, self._add_store(name, serde_for(value), "store"), default)
        self.agent_tables[name] = table
        return table

    def topic(self, name: str, *, key: Any = None, value: Any = "any-json",
              config: dict[str, str] | None = None) -> Any:
        """A topic agents send to: ``await topology.topic("audit").send(key=k, value=v)``.
        ``config``: topic configs applied when the topic is created, e.g.
        ``{"cleanup.policy": "compact"}`` (an existing topic is left as it is)."""
        from .agents import TopicRef

        if name in self.internal_topics() or any(
                r.name == name for r in self.internal_sends.values()):
            raise ValueError(f"topic {name!r} is an internal topic of topology {self.name!r}; "
                             "send to it through its internal_topic() object")
        ref = self.send_topics.get(name)
        if ref is None:
            ref = self.send_topics[name] = TopicRef(self, name, key, value, config)
        elif config is not None and dict(config) != ref.config:
            raise ValueError(f"topic {name!r} is declared with two different configs")
        return ref

    def internal_topic(self, name: str, *, key: Any = None, value: Any = "any-json") -> Any:
        """An internal topic from one agent to another, re-keying on the way: agents send to
        it (``await hop.send(key=k, value=v)``) and one agent reads it
        (``@topology.agent(hop)``), each record in the task of its new key. The topic is
        ``<topology>-<name>-repartition``, sized and replay-protected like a repartition; see
        :class:`streams.dsl.agents.InternalTopic`.

        ``credits = topology.internal_topic("credits")``
        """
        from .agents import InternalTopic

        ref = self.internal_sends.get(name)
        if ref is None:
            topic = self._claim_repartition(name)
            if topic in self.send_topics:
                raise ValueError(f"topic {topic!r} is already an output of topology "
                                 f"{self.name!r}")
            ref = self.internal_sends[name] = InternalTopic(self, name, topic, key, value)
        return ref

    def _check_table_name(self, name: str) -> None:
        if not _NAME.match(name) or name.startswith("__"):
            raise ValueError(f"invalid table name {name!r}")
        if name in self.stores or name in self.global_tables:
            raise ValueError(f"table {name!r} is declared twice in topology {self.name!r}")

    def _add_store(self, name: str, value_serde: Serde, kind: str, window: Any = None) -> StoreSpec:
        self._check_table_name(name)
        if isinstance(value_serde, RecordSerde) and kind != "table":
            # Input is checked against its Record at the source; a store's values come from the
            # topology's own functions, and refusing to read them back would wedge the key.
            value_serde = RecordSerde(value_serde.record, check_fields=False)
        changelog = self.changelog_topic(name)
        if changelog in self.input_topics():
            raise ValueError(f"topic {changelog!r} is an input of topology {self.name!r} and "
                             f"cannot also be the changelog of table {name!r}")
        spec = StoreSpec(name, value_serde, changelog, kind, KeySerde(), window)
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
        """Topics the topology reads: its sources', then its global tables'."""
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

    def describe(self, fmt: str = "text") -> str:
        from .describe import describe

        return describe(self, fmt)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


class Stream:
    """A keyed record stream. Operators return new streams; nothing runs until a worker starts.

    ``rekeyed`` is True when the key may differ from the partitioning key (after ``select_key``
    or ``process`` since the source or the last repartition): ``group_by_key`` then repartitions.
    """

    def __init__(self, topology: Topology, node: n.Node, *, rekeyed: bool = False) -> None:
        self.topology = topology
        self.node = node
        self.rekeyed = rekeyed

    def _then(self, node: n.Node, *, rekeys: bool = False) -> Stream:
        self.node.add_child(node)
        return Stream(self.topology, node, rekeyed=self.rekeyed or rekeys)

    def _name(self, kind: str, name: str | None) -> str:
        return name or self.topology._next_name(kind)

    def map(self, fn: Callable[[Any], Any], *, name: str | None = None) -> Stream:
        """New value per record, same key. ``s.map(lambda v: {**v, "fare": str(v["fare"])})``"""
        return self._then(n.MapNode(self._name("map", name), fn))

    def filter(self, predicate: Callable[[Any], bool], *, name: str | None = None) -> Stream:
        """Keep the records whose value satisfies ``predicate``.

        ``s.filter(lambda v: v["fare"] > 0)``
        """
        return self._then(n.FilterNode(self._name("filter", name), predicate))

    def flat_map(self, fn: Callable[[Any], Iterable[Any]], *, name: str | None = None) -> Stream:
        """Zero or more values per record, each with the record's key and timestamp.

        ``s.flat_map(lambda v: v["items"])``
        """
        return self._then(n.FlatMapNode(self._name("flatmap", name), fn))

    def select_key(self, fn: Callable[[Any], Any], *, name: str | None = None) -> Stream:
        """Re-key each record by ``fn(value)``. Nothing is repartitioned here: ``to()``
        partitions by the new key, and a later ``group_by_key()`` repartitions first.

        ``s.select_key(lambda v: v["profile_id"])``
        """
        return self._then(n.SelectKeyNode(self._name("selectkey", name), fn), rekeys=True)

    def peek(self, fn: Callable[[Any, Any], None], *, name: str | None = None) -> Stream:
        """Call ``fn(key, value)`` for its side effect; records pass through unchanged.

        ``s.peek(lambda k, v: print(k, v))``
        """
        return self._then(n.PeekNode(self._name("peek", name), fn))

    def agent(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Run a Faust-style agent over this stream (see :meth:`Topology.agent`); after
        ``select_key`` the records are repartitioned first, as for ``group_by_key``.

        ``@rides.filter(is_paid).agent(sink=["paid"])``
        """
        decorate = self.topology.agent(self, **options)
        return decorate if fn is None else decorate(fn)

    def branch(self, *predicates: Callable[[Any], bool], default: bool = False) -> list[Stream]:
        """Split by the first matching predicate: one stream per predicate.

        Records matching no predicate are dropped (as in Kafka Streams' ``split()``) unless
        ``default=True``, which adds a last stream that receives them.

        ``premium, regular, other = s.branch(is_premium, is_regular, default=True)``
        """
        preds: list[Callable[[Any], bool] | None] = list(predicates) + ([None] if default else [])
        node = n.BranchNode(self.topology._next_name("branch"), preds)
        self.node.add_child(node)
        out = []
        for i in range(len(preds)):
            out.append(Stream(self.topology, node.add_child(
                n.MapNode(f"{node.name}-{i}", _identity, passthrough=True)),
                rekeyed=self.rekeyed))
        return out

    def to(self, topic: str, *, key: Any = None, value: Any = "any-json") -> Stream:
        """Write every record to ``topic`` (partitioned by key, Kafka's default partitioner).

        ``s.to("out")``
        """
        key_serde = KeySerde() if key is None else serde_for(key)
        self.node.add_child(n.SinkNode(self.topology._next_name("sink"), topic, key_serde,
                                       serde_for(value)))
        return self

    def group_by(self, key: Callable[[Any], Any], *, name: str | None = None) -> GroupedStream:
        """Re-key by ``key(value)`` and repartition through an internal topic, so that all
        records of a key meet in one task.

        The topic is ``<topology>-<name>-repartition``; without ``name`` it is named after the
        first aggregation's table (as Kafka Streams does), so it stays the same when operators
        are added elsewhere. Each name may be used once per topology.

        ``rides.group_by(lambda r: r["driver_id"], name="by-driver").count(name="rides")``
        """
        if name is not None:
            self.topology._claim_repartition(name)
        return GroupedStream(self.topology, self.node, key=key, name=name, repartition=True,
                             value_type=_value_type(self.node))

    def group_by_key(self, *, name: str | None = None) -> GroupedStream:
        """Group by the current key. If the key may have changed since the source or the last
        repartition (``select_key``, ``process``), the records are repartitioned first, exactly
        as by ``group_by`` (``name`` then names the repartition topic).

        ``s.select_key(lambda v: v["user"]).group_by_key().count(name="per-user")``
        """
        if self.rekeyed and name is not None:
            self.topology._claim_repartition(name)
        return GroupedStream(self.topology, self.node, key=None, name=name,
                             repartition=self.rekeyed, value_type=_value_type(self.node))

    def process(self, fn: Callable[..., Iterable[tuple[Any, Any]] | None], *,
                stores: Iterable[str | StoreSpec] = (), name: str | None = None) -> Stream:
        """A stateful step: ``fn(key, value, stores)`` reads and writes the named stores
        (``stores["balances"].get(k)`` / ``.put(k, v)``) and returns the (key, value) pairs to
        emit downstream (or None). Store writes are committed atomically with the input offsets.
        The emitted keys may differ from the input's, so a later ``group_by_key`` repartitions.

        ``s.process(lambda k, v, st: [(k, v)], stores=["balances"])``
        """
        names = [s.name if isinstance(s, StoreSpec) else s for s in stores]
        for s in names:
            if s not in self.topology.stores:
                raise ValueError(f"process() uses undeclared store {s!r}; declare it with "
                                 "topology.store(name)")
        return self._then(n.ProcessNode(self._name("process", name), fn, names), rekeys=True)

    def join(self, other: Any, *args: Any, **kwargs: Any) -> Stream:
        """Join this stream with ``other``; what that means depends on what ``other`` is.

        * a :class:`Stream`: a windowed stream-stream join,
          ``join(other, joiner, JoinWindows(before, after, grace), how="inner"|"left"|"outer",
          name=...)`` (semantics and bounds in :mod:`streams.dsl.joins`);
        * a :class:`Table`: ``join(table, joiner, how="inner"|"left")``, the co-partitioned
          table's row of the record's key; emits ``joiner(value, row)`` (``row`` None for a
          left join miss). A versioned table gives the row as of the record's timestamp, and
          takes ``grace=timedelta(...)`` and ``name=`` to hold records back for late table
          updates (:mod:`streams.dsl.versioned`);
        * a :class:`~streams.dsl.table_joins.GlobalTable`: ``join(global_table, key_selector,
          joiner, how="inner"|"left")``, the row of ``key_selector(key, value)``.

        Only stream records produce output from table joins; table updates never do
        (semantics in :mod:`streams.dsl.table_joins`).

        ``orders.join(shipments, merge, JoinWindows(0, 7 * 86_400_000, 3_600_000),
        name="order-shipments")``
        ``orders.join(users, lambda order, user: {**order, "tier": user["tier"]})``
        ``txns.join(tiers, add_tier, grace=timedelta(seconds=30), name="txn-tier")``
        """
        from .table_joins import GlobalTable

        if isinstance(other, Stream):
            from .joins import stream_stream_join

            return stream_stream_join(self, other, *args, **kwargs)
        if isinstance(other, GlobalTable):
            return self._join_global_table(other, *args, **kwargs)
        if isinstance(other, Table):
            return self._join_table(other, *args, **kwargs)
        raise TypeError(f"cannot join a Stream with {type(other).__name__}: expected a Stream, "
                        "Table or GlobalTable")

    def _join_table(self, table: Table, *args: Any, **kwargs: Any) -> Stream:
        from .table_joins import join_table

        return join_table(self, table, *args, **kwargs)

    def _join_global_table(self, table: GlobalTable, *args: Any, **kwargs: Any) -> Stream:
        from .table_joins import join_global_table

        return join_global_table(self, table, *args, **kwargs)


def _identity(value: Any) -> Any:
    return value


def _value_type(node: n.Node | None) -> Any:
    """The faust Record class of the values ``node`` emits, or None if unknown / not a Record."""
    while node is not None:
        record = node.value_record()
        if record is not n.INHERIT:
            return record
        node = node.parents[0] if node.parents else None
    return None


class GroupedStream:
    """A stream grouped by key, ready for aggregation into a table.

    When the grouping needs a repartition, it is built on the first aggregation (see
    :meth:`_grouped`) and shared by every later aggregation of this grouped stream.

    Table keys are compared as their serialized bytes: ``7`` and ``"7"`` are the same key
    (use one key type per table).
    """

    def __init__(self, topology: Topology, node: n.Node, *,
                 key: Callable[[Any], Any] | None = None, name: str | None = None,
                 repartition: bool = False, value_type: Any = None) -> None:
        self.topology = topology
        self.upstream = node
        self.key = key  # None: keep the record's key
        self.name = name
        self.repartition = repartition
        self.value_type = value_type
        self._source: n.SourceNode | None = None

    def _grouped(self, table: str) -> n.Node:
        """The node whose records are partitioned by the grouping key, building the repartition
        on first use. Its name is ``group_by(name=)`` if given, else ``table``: the first
        aggregation's table, so the topic does not depend on operator order elsewhere."""
        if not self.repartition:
            return self.upstream
        if self._source is None:
            name = self.name if self.name is not None else table
            topic = (self.topology.repartition_topic(name) if self.name is not None
                     else self.topology._claim_repartition(name))
            sink = n.SinkNode(f"{name}-sink", topic, KeySerde(), JsonSerde(), internal=True)
            head = self.upstream
            if self.key is not None:
                head = head.add_child(n.SelectKeyNode(f"{name}-key", self.key))
            head.add_child(sink)
            # Repartitioned values travel as JSON; decode them back into the user's Record type.
            value_serde = JsonSerde() if self.value_type is None else serde_for(self.value_type)
            self._source = n.SourceNode(f"{name}-source", topic, KeySerde(), value_serde, None,
                                        internal=True)
            self.topology.sources.append(self._source)
        return self._source

    def _value_serde(self) -> Serde:
        """The serde of the grouped values (how a store would keep them as they are)."""
        return serde_for(self.value_type) if self.value_type is not None else JsonSerde()

    def window(self, spec: Any) -> WindowedStream:
        """Aggregate per window of event time: ``spec`` is a :class:`~streams.TumblingWindows`,
        :class:`~streams.HoppingWindows` or :class:`~streams.SessionWindows` (see
        :mod:`streams.dsl.window_ops` for the semantics).

        ``rides.group_by(city, name="by-city").window(TumblingWindows(60_000, grace=30_000))``
        """
        from .window_ops import WindowedStream

        return WindowedStream(self, spec)

    def aggregate(self, initializer: Callable[[], Any], adder: Callable[[Any, Any], Any], *,
                  name: str, value: Any = None) -> Table:
        """Fold each key's values: ``agg = adder(agg, value)`` starting from ``initializer()``.

        ``value`` is the serde of the table's values. Without it, ``initializer()`` is called
        once while the topology is built: if it returns a faust Record, the table stores that
        Record class (so the adder gets a Record back after a commit), else any JSON value.

        ``g.aggregate(lambda: {"rides": 0}, lambda a, v: {"rides": a["rides"] + 1}, name="t")``
        """
        if value is None:
            initial = initializer()
            value = type(initial) if isinstance(initial, faust.Record) else "any-json"
        spec = self.topology._add_store(name, serde_for(value), "aggregate")
        node = n.AggregateNode(f"{name}-aggregate", table=name, value_serde=spec.value_serde,
                               initializer=initializer, adder=adder)
        self._grouped(name).add_child(node)
        return Table(self.topology, node, spec)

    def count(self, *, name: str) -> Table:
        """Number of records per key. ``g.count(name="rides-per-driver")``"""
        return self.aggregate(lambda: 0, lambda agg, _v: agg + 1, name=name, value="any-json")

    def reduce(self, reducer: Callable[[Any, Any], Any], *, name: str,
               value: Any = None) -> Table:
        """Combine values per key; the first value of a key is its initial aggregate.

        The reducer must return the stream's value type: the table stores values with the
        stream's Record class when the source declared one (``value=`` overrides), so the
        reducer gets Records back after a commit too, not dicts.

        ``g.reduce(lambda a, v: v if v.ts > a.ts else a, name="latest")``
        """
        first = object()

        def adder(agg: Any, value: Any) -> Any:
            return value if agg is first else reducer(agg, value)

        if value is None:
            value = self.value_type if self.value_type is not None else "any-json"
        return self.aggregate(lambda: first, adder, name=name, value=value)


class Table:
    """A keyed table materialized in RocksDB (one column family per task) with a changelog.

    Keys are compared as their serialized bytes: ``7`` and ``"7"`` are the same key.
    """

    def __init__(self, topology: Topology, node: n.Node, spec: StoreSpec) -> None:
        self.topology = topology
        self.node = node
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    def to_stream(self) -> Stream:
        """The table's updates as a stream of (key, new value).

        ``table.to_stream().filter(lambda v: v["rides"] > 100).to("busy-drivers")``
        """
        return Stream(self.topology, self.node)

    def to(self, topic: str, **kwargs: Any) -> Table:
        """Write every update to ``topic``. ``table.to("driver-totals")``"""
        self.to_stream().to(topic, **kwargs)
        return self
