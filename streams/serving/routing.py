"""Which worker owns a key of a table: Kafka Streams' ``queryMetadataForKey``.

A table lives in the tasks of its sub-topology: task ``p`` holds the keys that reach partition
``p`` of the sub-topology's input topics (co-partitioned: one partitioner, one partition
count). Those keys were placed by a producer with Kafka's default partitioner on the key's
bytes — the one :class:`~streams.runtime.transport.KafkaTransport` uses for every keyed record
it writes, and the Java client's default — so the owner of a key is found the same way: the
table's key serde gives the bytes, murmur2 the partition, the group's endpoint map
(:mod:`streams.runtime.assignor`) the worker.

A table whose keys are not the keys its input is partitioned by (an agent's table keyed by
something else, e.g. payments' ``processed``) cannot be routed by key: ask with the partition
(``?partition=N``), as Kafka Streams needs a custom partitioner for such a store.

>>> from streams import Topology
>>> t = Topology("demo")
>>> _ = t.stream("clicks").group_by_key().count(name="clicks-per-user")
>>> router = TableRouter(t, {"clicks": 4})
>>> router.partition_for("clicks-per-user", "user-1")  # murmur2(b"user-1") % 4
0
>>> routes = Routes({"10.0.0.1:9400": {"clicks": [0, 1]}, "10.0.0.2:9400": {"clicks": [2, 3]}})
>>> router.owner("clicks-per-user", "user-1", routes)
(0, '10.0.0.1:9400')
"""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka.partitioner import DefaultPartitioner

from ..dsl.topology import Topology
from ..runtime.assignor import EndpointMap
from ..runtime.compile import subtopologies

_partitioner = DefaultPartitioner()


def key_partition(key_bytes: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key_bytes`` among ``partitions``
    (called as :class:`~streams.runtime.transport.KafkaTransport` calls it)."""
    every = list(range(partitions))
    return int(_partitioner(key_bytes, every, every))


class Routes:
    """The group's assignment as (topic, partition) -> endpoint (from one
    :data:`~streams.runtime.assignor.EndpointMap`)."""

    def __init__(self, endpoints: EndpointMap | None = None) -> None:
        self.endpoints: EndpointMap = {e: {t: sorted(ps) for t, ps in topics.items()}
                                       for e, topics in (endpoints or {}).items()}
        self._owner: dict[tuple[str, int], str] = {}
        for endpoint in sorted(self.endpoints):
            for topic, partitions in self.endpoints[endpoint].items():
                for p in partitions:
                    self._owner.setdefault((topic, p), endpoint)

    def owner(self, topic: str, partition: int) -> str | None:
        """The endpoint of the member assigned ``partition`` of ``topic`` (None: none known)."""
        return self._owner.get((topic, partition))

    def __bool__(self) -> bool:
        return bool(self._owner)


class TableRouter:
    """The partition and owner of a key of any table of ``topology``. ``partitions``: the
    partition count of each topic (as :func:`~streams.runtime.topics.prepare_topics` planned
    them)."""

    def __init__(self, topology: Topology, partitions: Mapping[str, int]) -> None:
        self.topology = topology
        self.partitions = dict(partitions)
        # the topic whose partition p is task p of the table's sub-topology
        self.topic: dict[str, str] = {}
        for sub in subtopologies(topology):
            for table in sub.stores:
                self.topic[table] = sorted(sub.topics)[0]

    def table_partitions(self, table: str) -> int:
        """How many partitions (tasks) ``table`` is split into."""
        return self.partitions.get(self.topic[table], 1)

    def partition_for(self, table: str, key: str) -> int:
        """The partition (task) holding ``key`` of ``table``."""
        kb = self.topology.stores[table].key_serde.serialize(key)
        if kb is None:
            raise ValueError(f"table {table!r} cannot hold a null key")
        return key_partition(kb, self.table_partitions(table))

    def owner(self, table: str, key: str, routes: Routes) -> tuple[int, str | None]:
        """(partition, endpoint of its owner or None) of ``key`` in ``table``."""
        partition = self.partition_for(table, key)
        return partition, routes.owner(self.topic[table], partition)

    def owner_of_partition(self, table: str, partition: int, routes: Routes) -> str | None:
        return routes.owner(self.topic[table], partition)


__all__ = ["Routes", "TableRouter", "key_partition"]
