"""``Topology``: the public entry point of the DSL.

A topology file reads top to bottom like the data flows::

    topology = Topology("profile_notifications")
    views = topology.stream("profile-views", timestamp="ts")
    (views.filter(lambda v: "CEO" in v["viewer_title"])
          .select_key(lambda v: v["profile_id"])
          .to("profile-view-notifications"))

``Topology`` is a facade: what it declares is registered in its
:class:`~streams.dsl.builder.InternalBuilder` (``topology.builder``), which the runtime reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..serdes import serde_for
from . import nodes as n
from .agent_tables import AgentTable
from .agent_topics import InternalTopic, TopicRef
from .agents import Agent, define_agent
from .builder import NAME, GlobalTableSpec, InternalBuilder, StoreSpec
from .describe import describe
from .stream import Stream
from .table import GlobalTable, Table
from .versioned import add_versioned_table

__all__ = ["StoreSpec", "Topology"]


class Topology:
    """A named dataflow: sources, operators, tables and sinks.

    >>> t = Topology("demo")
    >>> _ = t.stream("in").filter(lambda v: v["n"] > 1).to("out")
    >>> t.input_topics(), t.output_topics(), t.dlq_topic
    (['in'], ['out'], 'demo-dlq')

    Table keys are compared as their serialized bytes (the default key serde writes a str as
    UTF-8 and any other key as JSON): ``7`` and ``"7"`` are the same key of a table, and after a
    repartition both arrive as ``"7"``. Use one key type per table.

    Mistakes that would silently lose or mix data are refused while the topology is built, with
    a ``ValueError``: two repartitions with the same name, a table declared twice, reading one of
    the topology's own repartition or changelog topics as an input.

    >>> _ = t.stream("in").group_by_key().count(name="n")
    >>> t.store("n")
    Traceback (most recent call last):
    ...
    ValueError: table 'n' is declared twice in topology 'demo'
    """

    def __init__(self, name: str, description: str = "", *, late_topic: str | None = None,
                 version: str = "") -> None:
        """``late_topic``: where windowed aggregations write the records they drop as late
        (none by default: late records are only counted).

        ``version``: yours to declare (``Topology("trip_stats", version="2")``). It is part of
        the topology's fingerprint, with its nodes, tables and topics: workers whose
        fingerprints differ never run in one consumer group (the later one refuses to start);
        see "Rolling out a new version" in the README.

        >>> t = Topology("trip_stats", "rides per city", version="2")
        >>> t.name, t.description, t.version
        ('trip_stats', 'rides per city', '2')
        """
        if not NAME.match(name):
            raise ValueError(f"topology name {name!r} may only use letters, digits, '.', '_', '-'")
        self.name = name
        self.description = description
        self.version = version
        self.builder = InternalBuilder(name, late_topic)

    # -- what the builder holds (read by the runtime) ------------------------------------------
    @property
    def late_topic(self) -> str | None:
        """Where windowed operators write the records they drop as late (None: only counted).

        >>> Topology("doc_late", late_topic="rides-late").late_topic
        'rides-late'
        """
        return self.builder.late_topic

    @property
    def sources(self) -> list[n.SourceNode]:
        """The graph's source nodes (inputs and repartition topics), in declaration order."""
        return self.builder.sources

    @property
    def stores(self) -> dict[str, StoreSpec]:
        """The state stores by name (tables, aggregations, windows, join buffers, agents').

        >>> t = Topology("doc_stores")
        >>> _ = t.table("users")
        >>> [(spec.name, spec.kind) for spec in t.stores.values()]
        [('users', 'table')]
        """
        return self.builder.stores

    @property
    def global_tables(self) -> dict[str, GlobalTableSpec]:
        """The global tables by name (example in :meth:`global_table`)."""
        return self.builder.global_tables

    @property
    def agents(self) -> dict[str, n.AgentNode]:
        """The agents' graph nodes by name (example in :meth:`agent`)."""
        return self.builder.agents

    @property
    def agent_tables(self) -> dict[str, Any]:
        """The agents' tables by name (example in :meth:`table_store`)."""
        return self.builder.agent_tables

    @property
    def send_topics(self) -> dict[str, TopicRef]:
        """The topics agents send to by name (example in :meth:`topic`)."""
        return self.builder.send_topics

    @property
    def internal_sends(self) -> dict[str, InternalTopic]:
        """The agent-to-agent internal topics by name (example in :meth:`internal_topic`)."""
        return self.builder.internal_sends

    @property
    def dlq_topic(self) -> str:
        """Where records that cannot be processed go: ``<name>-dlq``.

        >>> Topology("shop").dlq_topic
        'shop-dlq'
        """
        return f"{self.name}-dlq"

    def repartition_topic(self, name: str) -> str:
        """The topic of the repartition ``name``.

        >>> Topology("shop").repartition_topic("by-user")
        'shop-by-user-repartition'
        """
        return self.builder.repartition_topic(name)

    def changelog_topic(self, store: str) -> str:
        """The changelog topic of the state store ``store``.

        >>> Topology("shop").changelog_topic("carts")
        'shop-carts-changelog'
        """
        return self.builder.changelog_topic(store)

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
        self.builder.check_input(topic)
        if validate is not None and not callable(validate):
            raise TypeError(f"validate= must be a function, got {validate!r}")
        node = self.builder.add_source(topic, serde_for(key), serde_for(value), timestamp,
                                       validate=validate)
        return Stream(self, node)

    def table(self, topic: str, *, name: str | None = None, key: Any = "str",
              value: Any = "json", versioned: Any = None) -> Table:
        """Materialize ``topic`` as a table (latest value per key, a null value deletes).

        ``versioned=timedelta(...)`` keeps every version of each key for that long (history
        retention) instead of only the latest, so that a stream joined with the table gets the
        row *as of each stream record's timestamp* and the join can take a ``grace``
        (Kafka Streams' versioned tables; rules in :mod:`streams.dsl.versioned`). A version's
        time is its Kafka record timestamp (a tombstone's too).

        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_table_source")
        >>> users = t.table("users")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("users", "u1", {"tier": "GOLD"})
        ...     driver.pipe("users", "u2", {"tier": "BASIC"})
        ...     driver.pipe("users", "u2", None)                # a tombstone deletes u2
        ...     driver.table("users")
        {'u1': {'tier': 'GOLD'}}
        """
        builder = self.builder
        builder.check_input(topic)
        name = name or topic
        if versioned is not None:
            spec, node = add_versioned_table(builder, topic, name, key_serde=serde_for(key),
                                             value_serde=serde_for(value), history=versioned)
            return Table(Stream(self, node), spec)
        spec = builder.add_store(name, serde_for(value), "table")
        source = builder.add_source(topic, serde_for(key), spec.value_serde)
        node = source.add_child(n.TableSourceNode(builder.next_name("table"), name,
                                                  spec.value_serde))
        return Table(Stream(self, node), spec)

    def global_table(self, topic: str, *, key: Any = "str", value: Any = "json",
                     name: str | None = None) -> GlobalTable:
        """Materialize all of ``topic`` in every worker (latest value per key, a null value
        deletes), for :meth:`Stream.join` by a key computed from each record. No
        co-partitioning needed; the topic itself is the changelog. ``name`` defaults to the
        topic. Semantics in :mod:`streams.dsl.table_joins`.

        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_global_table")
        >>> products = t.global_table("products")
        >>> _ = t.stream("orders").join(products, lambda _k, o: o["sku"],
        ...                             lambda o, p: {**o, "price": p["price"]}).to("priced")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("products", "sku-1", {"price": "4.20"})
        ...     driver.pipe("orders", "ann", {"sku": "sku-1"})
        ...     driver.read_output("priced")
        [('ann', {'sku': 'sku-1', 'price': '4.20'})]
        """
        spec = GlobalTableSpec(name or topic, topic, serde_for(key), serde_for(value))
        self.builder.add_global_table(spec)
        return GlobalTable(self, spec)

    def store(self, name: str, *, value: Any = "any-json") -> StoreSpec:
        """Declare a keyed state store for :meth:`Stream.process` (example there).

        >>> Topology("doc_store").store("balances").changelog
        'doc_store-balances-changelog'
        """
        return self.builder.add_store(name, serde_for(value), "store")

    # -- agents (streams.dsl.agents) -----------------------------------------------------------
    def agent(self, source: Any, *, name: str | None = None, key: Any = "str",
              value: Any = "json", timestamp: Any = None,
              group_by: Callable[[Any], Any] | None = None, sink: Iterable[Any] = (),
              tables: Iterable[Any] | None = None,
              validate: Callable[..., Any] | None = None) -> Callable[[Callable[..., Any]], Agent]:
        """Decorate a Faust-style agent reading ``source`` (a topic name, a Stream, a
        GroupedStream or an internal_topic); ``yield`` sends to ``sink`` with the current key.
        ``group_by=fn`` re-keys and repartitions first (topic
        ``<topology>-<agent>-repartition``). ``tables``: the table_stores the agent uses, if it
        does not name them itself. ``value``, ``timestamp`` and ``validate`` (a topic source
        only) are those of :meth:`stream`: a record the source refuses is one dead letter and
        the agent never sees it. Semantics (one event = all or nothing, ...) in
        :mod:`streams.dsl.agents`.

        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_agent")
        >>> @t.agent("rides", group_by=lambda r: r["city"], sink=["city-rides"])
        ... async def tag(stream):
        ...     async for city, ride in stream.items():
        ...         yield {"city": city, "ride": ride["id"]}
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("rides", "r1", {"id": "r1", "city": "oslo"})
        ...     driver.read_output("city-rides")
        [('oslo', {'city': 'oslo', 'ride': 'r1'})]
        """
        return define_agent(self, source, name=name, key=key, value=value, timestamp=timestamp,
                            group_by=group_by, sink=sink, tables=tables, validate=validate)

    def table_store(self, name: str, *, default: Callable[[], Any] | None = None,
                    value: Any = "any-json") -> AgentTable:
        """A table for agents, used like a dict (faust's ``app.Table``), in RocksDB with a
        changelog (:class:`~streams.dsl.agent_tables.AgentTable`).

        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_table_store")
        >>> visits = t.table_store("visits", default=int)
        >>> @t.agent("pages")
        ... async def count(stream):
        ...     async for page, _view in stream.items():
        ...         visits[page] += 1
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("pages", "home", {})
        ...     driver.pipe("pages", "home", {})
        ...     driver.table("visits")
        {'home': 2}
        """
        table = AgentTable(self.builder, self.builder.add_store(name, serde_for(value), "store"),
                           default)
        self.builder.agent_tables[name] = table
        return table

    def topic(self, name: str, *, key: Any = None, value: Any = "any-json",
              config: dict[str, str] | None = None) -> TopicRef:
        """A topic agents send to (:class:`~streams.dsl.agent_topics.TopicRef`).
        ``config``: topic configs applied when the topic is created, e.g.
        ``{"cleanup.policy": "compact"}`` (an existing topic is left as it is).

        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_topic")
        >>> audit = t.topic("audit")
        >>> @t.agent("payments")
        ... async def log(stream):
        ...     async for key, payment in stream.items():
        ...         await audit.send(key=key, value={"seen": payment["id"]})
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("payments", "acc", {"id": "p1"})
        ...     driver.read_output("audit")
        [('acc', {'seen': 'p1'})]
        """
        if name in self.internal_topics() or any(
                r.name == name for r in self.internal_sends.values()):
            raise ValueError(f"topic {name!r} is an internal topic of topology {self.name!r}; "
                             "send to it through its internal_topic() object")
        ref = self.send_topics.get(name)
        if ref is None:
            ref = self.send_topics[name] = TopicRef(name, key, value, config)
        elif config is not None and dict(config) != ref.config:
            raise ValueError(f"topic {name!r} is declared with two different configs")
        return ref

    def internal_topic(self, name: str, *, key: Any = None,
                       value: Any = "any-json") -> InternalTopic:
        """An internal topic from one agent to another, re-keying on the way: agents send to
        it (``await hop.send(key=k, value=v)``) and one agent reads it
        (``@topology.agent(hop)``), each record in the task of its new key. The topic is
        ``<topology>-<name>-repartition``, sized and replay-protected like a repartition; see
        :class:`~streams.dsl.agent_topics.InternalTopic` (an example runs there).

        >>> Topology("doc_internal_topic").internal_topic("credits").name
        'doc_internal_topic-credits-repartition'
        """
        ref = self.internal_sends.get(name)
        if ref is None:
            topic = self.builder.claim_repartition(name)
            if topic in self.send_topics:
                raise ValueError(f"topic {topic!r} is already an output of topology "
                                 f"{self.name!r}")
            ref = self.internal_sends[name] = InternalTopic(self, name, topic, key, value)
        return ref

    # -- introspection --------------------------------------------------------------------------
    def nodes(self) -> list[n.Node]:
        """Every node of the graph, sources first, each once.

        >>> t = Topology("doc_nodes")
        >>> _ = t.stream("in").map(lambda v: v, name="copy").to("out")
        >>> [node.label() for node in t.nodes()]
        ['source in', 'map copy', 'sink out']
        """
        return self.builder.nodes()

    def input_topics(self) -> list[str]:
        """Topics the topology reads: its sources', then its global tables'.

        >>> t = Topology("doc_inputs")
        >>> _ = t.stream("orders"), t.table("users"), t.global_table("products")
        >>> t.input_topics()
        ['orders', 'users', 'products']
        """
        return self.builder.input_topics()

    def output_topics(self) -> list[str]:
        """Topics the topology writes (sinks, then agents' topics), not its internal ones.

        >>> t = Topology("doc_outputs")
        >>> _ = t.stream("in").to("out")
        >>> t.output_topics()
        ['out']
        """
        return self.builder.output_topics()

    def repartition_topics(self) -> list[str]:
        """The internal topics records are re-keyed through (example in :meth:`Stream.group_by`).

        >>> Topology("doc_no_repartition").repartition_topics()
        []
        """
        return self.builder.repartition_topics()

    def changelog_topics(self) -> list[str]:
        """One compacted changelog per state store.

        >>> t = Topology("doc_changelogs")
        >>> _ = t.stream("clicks").group_by_key().count(name="clicks")
        >>> t.changelog_topics()
        ['doc_changelogs-clicks-changelog']
        """
        return self.builder.changelog_topics()

    def internal_topics(self) -> list[str]:
        """Repartition and changelog topics: the topology owns them (``tables reset``
        recreates them).

        >>> t = Topology("doc_internals")
        >>> _ = t.stream("rides").group_by(lambda r: r["city"], name="by-city").count(name="n")
        >>> t.internal_topics()
        ['doc_internals-by-city-repartition', 'doc_internals-n-changelog']
        """
        return self.builder.internal_topics()

    def describe(self, fmt: str = "text") -> str:
        """The topology as text (``fmt="text"``), a mermaid flowchart or a dot graph.

        >>> t = Topology("doc_describe")
        >>> _ = t.stream("in").to("out")
        >>> print(t.describe("mermaid"))
        flowchart LR
          n0["source in"]
          n1["sink out"]
          n0 --> n1
        """
        return describe(self, fmt)
