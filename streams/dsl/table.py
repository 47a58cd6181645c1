"""Tables of the DSL: :class:`Table` (co-partitioned, one per task) and :class:`GlobalTable`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import nodes as n
from .builder import GlobalTableSpec, StoreSpec

if TYPE_CHECKING:
    from .stream import Stream
    from .topology import Topology


class Table:
    """A keyed table materialized in RocksDB (one column family per task) with a changelog.

    Keys are compared as their serialized bytes: ``7`` and ``"7"`` are the same key.

    >>> from streams import Topology
    >>> t = Topology("doc_table")
    >>> users = t.table("users")
    >>> users.name, t.changelog_topics()
    ('users', ['doc_table-users-changelog'])
    """

    def __init__(self, updates: Stream, spec: StoreSpec) -> None:
        self._updates = updates
        self.spec = spec

    @property
    def topology(self) -> Topology:
        return self._updates.topology

    @property
    def node(self) -> n.Node:
        """The graph node whose records are the table's updates.

        >>> from streams import Topology
        >>> Topology("doc_table_node").table("users").node.label()
        'tablesource table-0002 -> table users'
        """
        return self._updates.node

    @property
    def name(self) -> str:
        return self.spec.name

    def to_stream(self) -> Stream:
        """The table's updates as a stream of (key, new value).

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_to_stream")
        >>> counts = t.stream("clicks").group_by_key().count(name="clicks")
        >>> _ = counts.to_stream().filter(lambda n: n >= 2).to("regulars")
        >>> with TopologyTestDriver(t) as driver:
        ...     for user in ["ann", "bob", "ann"]:
        ...         driver.pipe("clicks", user, {})
        ...     driver.read_output("regulars")
        [('ann', 2)]
        """
        return self._updates

    def to(self, topic: str, **kwargs: Any) -> Table:
        """Write every update to ``topic`` (``key=``/``value=`` serdes as :meth:`Stream.to`).

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_table_to")
        >>> _ = t.stream("rides").group_by(lambda r: r["driver"], name="by-driver").count(
        ...     name="rides").to("driver-totals")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("rides", "r1", {"driver": "d1"})
        ...     driver.pipe("rides", "r2", {"driver": "d1"})
        ...     driver.read_output("driver-totals")
        [('d1', 1), ('d1', 2)]
        """
        self._updates.to(topic, **kwargs)
        return self


class GlobalTable:
    """A table holding every partition of its topic in every worker; join a stream with it by a
    key computed from each record (:meth:`~streams.Stream.join`; semantics in
    :mod:`streams.dsl.table_joins`).

    >>> from streams import Topology
    >>> t = Topology("doc_global")
    >>> products = t.global_table("products")
    >>> products.name, products.topic, t.input_topics()
    ('products', 'products', ['products'])
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
