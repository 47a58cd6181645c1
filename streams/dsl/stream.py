"""``Stream``: a keyed record stream and its operators.

Functions passed to operators receive the record *value* (a dict, or a faust Record when the
source declares ``value=SomeRecord``); ``select_key``/``group_by`` return the new key. The
examples run against the :class:`~streams.testing.TopologyTestDriver`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..serdes import KeySerde, serde_for
from . import nodes as n
from .builder import StoreSpec
from .grouped import GroupedStream
from .joins import stream_stream_join
from .table import GlobalTable, Table
from .table_joins import join_global_table, join_table

if TYPE_CHECKING:
    from .topology import Topology


class Stream:
    """A keyed record stream. Operators return new streams; nothing runs until a worker starts.

    ``rekeyed`` is True when the key may differ from the partitioning key (after ``select_key``
    or ``process`` since the source or the last repartition): ``group_by_key`` then repartitions.

    >>> from streams import Topology
    >>> t = Topology("doc_stream")
    >>> clicks = t.stream("clicks")
    >>> clicks.rekeyed, clicks.select_key(lambda v: v["user"]).rekeyed
    (False, True)
    """

    def __init__(self, topology: Topology, node: n.Node, *, rekeyed: bool = False) -> None:
        self.topology = topology
        self.node = node
        self.rekeyed = rekeyed

    def derived(self, node: n.Node, *, rekeyed: bool = False) -> Stream:
        """The stream of ``node``'s records, a node an operator has put in this stream's graph
        (for the DSL's operator modules; user code chains operators instead).

        >>> from streams import Topology
        >>> from streams.dsl import nodes
        >>> s = Topology("doc_derived").stream("in")
        >>> s.derived(s.node.add_child(nodes.MapNode("double", lambda v: 2 * v))).node.label()
        'map double'
        """
        return Stream(self.topology, node, rekeyed=rekeyed)

    def _then(self, node: n.Node, *, rekeys: bool = False) -> Stream:
        self.node.add_child(node)
        return Stream(self.topology, node, rekeyed=self.rekeyed or rekeys)

    def _name(self, kind: str, name: str | None) -> str:
        return name or self.topology.builder.next_name(kind)

    def map(self, fn: Callable[[Any], Any], *, name: str | None = None) -> Stream:
        """New value per record, same key.

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_map")
        >>> _ = t.stream("in").map(lambda v: {**v, "fare": str(v["fare"])}).to("out")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("in", "k", {"fare": 12})
        ...     driver.read_output("out")
        [('k', {'fare': '12'})]
        """
        return self._then(n.MapNode(self._name("map", name), fn))

    def filter(self, predicate: Callable[[Any], bool], *, name: str | None = None) -> Stream:
        """Keep the records whose value satisfies ``predicate``.

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_filter")
        >>> _ = t.stream("in").filter(lambda v: v["fare"] > 0).to("out")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("in", "a", {"fare": 0})
        ...     driver.pipe("in", "b", {"fare": 5})
        ...     driver.read_output("out")
        [('b', {'fare': 5})]
        """
        return self._then(n.FilterNode(self._name("filter", name), predicate))

    def flat_map(self, fn: Callable[[Any], Iterable[Any]], *, name: str | None = None) -> Stream:
        """Zero or more values per record, each with the record's key and timestamp.

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_flat_map")
        >>> _ = t.stream("orders").flat_map(lambda v: v["items"]).to("items")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("orders", "o1", {"items": ["tea", "cake"]})
        ...     driver.read_output("items")
        [('o1', 'tea'), ('o1', 'cake')]
        """
        return self._then(n.FlatMapNode(self._name("flatmap", name), fn))

    def select_key(self, fn: Callable[[Any], Any], *, name: str | None = None) -> Stream:
        """Re-key each record by ``fn(value)``. Nothing is repartitioned here: ``to()``
        partitions by the new key, and a later ``group_by_key()`` repartitions first.

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_select_key")
        >>> _ = t.stream("views").select_key(lambda v: v["profile_id"]).to("by-profile")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("views", "viewer-1", {"profile_id": "p7"})
        ...     driver.read_output("by-profile")
        [('p7', {'profile_id': 'p7'})]
        """
        return self._then(n.SelectKeyNode(self._name("selectkey", name), fn), rekeys=True)

    def peek(self, fn: Callable[[Any, Any], None], *, name: str | None = None) -> Stream:
        """Call ``fn(key, value)`` for its side effect; records pass through unchanged.

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_peek")
        >>> _ = t.stream("in").peek(lambda k, v: print("saw", k, v)).to("out")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("in", "k", {"n": 1})
        saw k {'n': 1}
        """
        return self._then(n.PeekNode(self._name("peek", name), fn))

    def agent(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Run a Faust-style agent over this stream (options of :meth:`Topology.agent`);
        after ``select_key`` the records are repartitioned first, as for ``group_by_key``.

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_stream_agent")
        >>> @t.stream("rides").filter(lambda r: r["paid"]).agent(sink=["paid"])
        ... async def receipts(stream):
        ...     async for ride in stream:
        ...         yield {"receipt": ride["id"]}
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("rides", "r1", {"id": "r1", "paid": True})
        ...     driver.pipe("rides", "r2", {"id": "r2", "paid": False})
        ...     driver.read_output("paid")
        [('r1', {'receipt': 'r1'})]
        """
        decorate = self.topology.agent(self, **options)
        return decorate if fn is None else decorate(fn)

    def branch(self, *predicates: Callable[[Any], bool], default: bool = False) -> list[Stream]:
        """Split by the first matching predicate: one stream per predicate.

        Records matching no predicate are dropped (as in Kafka Streams' ``split()``) unless
        ``default=True``, which adds a last stream that receives them.

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_branch")
        >>> big, other = t.stream("txns").branch(lambda v: v["amount"] > 100, default=True)
        >>> _ = big.to("big"), other.to("other")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("txns", "t1", {"amount": 500})
        ...     driver.pipe("txns", "t2", {"amount": 5})
        ...     driver.read_output("big"), driver.read_output("other")
        ([('t1', {'amount': 500})], [('t2', {'amount': 5})])
        """
        preds: list[Callable[[Any], bool] | None] = list(predicates) + ([None] if default else [])
        node = n.BranchNode(self.topology.builder.next_name("branch"), preds)
        self.node.add_child(node)
        return [self.derived(node.add_child(n.MapNode(f"{node.name}-{i}", _identity,
                                                      passthrough=True)), rekeyed=self.rekeyed)
                for i in range(len(preds))]

    def to(self, topic: str, *, key: Any = None, value: Any = "any-json") -> Stream:
        """Write every record to ``topic`` (partitioned by key, Kafka's default partitioner);
        ``key``/``value``: serdes (default: the key as text, the value as JSON).

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_to")
        >>> _ = t.stream("in").to("out")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("in", "k", {"n": 1})
        ...     driver.read_output("out")
        [('k', {'n': 1})]
        """
        key_serde = KeySerde() if key is None else serde_for(key)
        self.node.add_child(n.SinkNode(self.topology.builder.next_name("sink"), topic,
                                       key_serde, serde_for(value)))
        return self

    def group_by(self, key: Callable[[Any], Any], *, name: str | None = None) -> GroupedStream:
        """Re-key by ``key(value)`` and repartition through an internal topic, so that all
        records of a key meet in one task.

        The topic is ``<topology>-<name>-repartition``; without ``name`` it is named after the
        first aggregation's table (as Kafka Streams does), so it stays the same when operators
        are added elsewhere. Each name may be used once per topology.

        >>> from streams import Topology
        >>> t = Topology("doc_group_by")
        >>> _ = t.stream("rides").group_by(lambda r: r["driver_id"], name="by-driver").count(
        ...     name="rides")
        >>> t.repartition_topics()
        ['doc_group_by-by-driver-repartition']
        """
        grouping = self.topology.builder.grouping(self.node, key=key, name=name,
                                                  repartition=True)
        return GroupedStream(self, grouping)

    def group_by_key(self, *, name: str | None = None) -> GroupedStream:
        """Group by the current key. If the key may have changed since the source or the last
        repartition (``select_key``, ``process``), the records are repartitioned first, exactly
        as by ``group_by`` (``name`` then names the repartition topic).

        >>> from streams import Topology
        >>> t = Topology("doc_group_by_key")
        >>> _ = t.stream("clicks").group_by_key().count(name="per-page")
        >>> _ = t.stream("views").select_key(lambda v: v["user"]).group_by_key().count(
        ...     name="per-user")
        >>> t.repartition_topics()
        ['doc_group_by_key-per-user-repartition']
        """
        grouping = self.topology.builder.grouping(self.node, name=name,
                                                  repartition=self.rekeyed)
        return GroupedStream(self, grouping)

    def process(self, fn: Callable[..., Iterable[tuple[Any, Any]] | None], *,
                stores: Iterable[str | StoreSpec] = (), name: str | None = None) -> Stream:
        """A stateful step: ``fn(key, value, stores)`` reads and writes the named stores
        (``stores["balances"].get(k)`` / ``.put(k, v)``) and returns the (key, value) pairs to
        emit downstream (or None). Store writes are committed atomically with the input offsets.
        The emitted keys may differ from the input's, so a later ``group_by_key`` repartitions.

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_process")
        >>> _ = t.store("balances")
        >>> def credit(key, value, stores):
        ...     balance = stores["balances"].get(key, 0) + value["amount"]
        ...     stores["balances"].put(key, balance)
        ...     return [(key, {"balance": balance})]
        >>> _ = t.stream("deposits").process(credit, stores=["balances"]).to("balances")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("deposits", "acc", {"amount": 5})
        ...     driver.pipe("deposits", "acc", {"amount": 7})
        ...     driver.read_output("balances")
        [('acc', {'balance': 5}), ('acc', {'balance': 12})]
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
        * a :class:`~streams.dsl.table.GlobalTable`: ``join(global_table, key_selector,
          joiner, how="inner"|"left")``, the row of ``key_selector(key, value)``.

        Only stream records produce output from table joins; table updates never do
        (semantics in :mod:`streams.dsl.table_joins`).

        >>> from streams import JoinWindows, Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_join")
        >>> users = t.table("users")
        >>> orders, payments = t.stream("orders"), t.stream("payments")
        >>> _ = orders.join(users, lambda o, u: {**o, "tier": u["tier"]}).to("with-tier")
        >>> _ = orders.join(payments, lambda o, p: {"order": o["id"], "paid": p["amount"]},
        ...                 JoinWindows(before=0, after=60_000), name="paid").to("paid")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("users", "u1", {"tier": "GOLD"}, timestamp=0)
        ...     driver.pipe("orders", "u1", {"id": "o1"}, timestamp=1_000)
        ...     driver.pipe("payments", "u1", {"amount": "9.90"}, timestamp=2_000)
        ...     driver.read_output("with-tier"), driver.read_output("paid")
        ([('u1', {'id': 'o1', 'tier': 'GOLD'})], [('u1', {'order': 'o1', 'paid': '9.90'})])
        """
        if isinstance(other, Stream):
            return self.derived(stream_stream_join(self, other, *args, **kwargs))
        if isinstance(other, GlobalTable):
            # Lookups change nothing about keys or partitioning: the stream stays as (re)keyed
            # as it was.
            return self.derived(join_global_table(self, other, *args, **kwargs),
                                rekeyed=self.rekeyed)
        if isinstance(other, Table):
            return self.derived(join_table(self, other, *args, **kwargs))
        raise TypeError(f"cannot join a Stream with {type(other).__name__}: expected a Stream, "
                        "Table or GlobalTable")


def _identity(value: Any) -> Any:
    return value
