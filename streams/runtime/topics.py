"""The topics a topology touches, with their partition counts and configs.

Internal topics get their partition counts from the sub-topology's inputs, as in Kafka Streams:
a repartition topic has as many partitions as the sub-topology that writes it has tasks, and a
changelog as many as the sub-topology that owns its store. Inputs and outputs that do not exist
yet are created with the configured default.
"""

from __future__ import annotations

import logging
import time

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from ..dsl.nodes import AgentNode
from ..dsl.topology import Topology
from ..kafka.admin import Replication, TopicSpec, ensure_topics, topic_partitions
from ..kafka.clients import Kafka, client_kwargs
from ..state.meta import Offsets
from .compile import subtopologies, written_repartitions

log = logging.getLogger(__name__)

# Repartition records carry event time; with the broker's time retention (7 days) old event
# times would be deleted before the downstream task reads them. As in Kafka Streams they never
# expire by time; the worker deletes them once consumed.
REPARTITION_CONFIG = {"retention.ms": "-1", "cleanup.policy": "delete"}
CHANGELOG_CONFIG = {"cleanup.policy": "compact"}


class TopicLayoutError(ValueError):
    """Existing topics do not fit the topology (co-partitioning, internal topic sizes)."""


def topic_specs(topology: Topology, partitions: int) -> list[TopicSpec]:
    """Every topic the topology touches when all of them are created with ``partitions``."""
    specs, problems = plan_topics(topology, {}, partitions)
    assert not problems, problems
    return specs


def _shared_internal_topics(topology: Topology) -> list[str]:
    """An internal topic has one writing agent: records carry their input record's position as
    origin, and the reader drops any origin not after the last one it saw as a replay, so a
    second writer's records would be lost."""
    writers: dict[str, list[str]] = {}
    for node in topology.nodes():
        if isinstance(node, AgentNode):
            for topic in node.internal_sends():
                writers.setdefault(topic, []).append(node.name)
    return [f"internal topic {topic} is sent to by several agents ({', '.join(names)}): give "
            "each its own internal_topic()" for topic, names in writers.items() if len(names) > 1]


def plan_topics(topology: Topology, existing: dict[str, int],
                default: int) -> tuple[list[TopicSpec], list[str]]:
    """Topic specs for ``topology`` given the ``existing`` partition counts; the second value
    lists the problems (one line each) that must stop a worker."""
    subs = subtopologies(topology)
    counts: dict[str, int] = {t: existing.get(t, default) for t in topology.input_topics()}
    tasks: dict[str, int] = {}
    problems: list[str] = _shared_internal_topics(topology)
    pending = list(subs)
    while pending:
        progressed = False
        for sub in list(pending):
            # A sub-topology may read an internal topic it writes itself (an agent re-keying
            # into its own tables' partitions): that topic takes the size of its other inputs.
            writes = written_repartitions(sub)
            if not all(t in counts or t in writes for t in sub.topics):
                continue
            sizes = {t: counts[t] for t in sub.topics if t in counts}
            if not sizes:
                continue
            pending.remove(sub)
            progressed = True
            if len(set(sizes.values())) > 1:
                problems.append("topics read together must be co-partitioned, but have "
                                f"different partition counts: {sizes}")
            tasks[sub.id] = max(sizes.values())
            for topic in written_repartitions(sub):
                counts[topic] = tasks[sub.id]
        if not progressed:
            written = {t for s in subs for t in written_repartitions(s)}
            internal = set(topology.repartition_topics())
            orphans = [t for s in pending for t in s.topics if t in internal and t not in written]
            if orphans:
                problems.append(f"internal topic {orphans[0]} is read but no agent names it "
                                "(bind the internal_topic() to a name the sending agent uses)")
            else:
                problems.append("repartition topics form a cycle: " +
                                ", ".join(t for s in pending for t in s.topics))
            break
    specs = [TopicSpec(t, counts[t]) for t in topology.input_topics()]
    send_configs = {t: ref.config for t, ref in topology.send_topics.items()}
    specs += [TopicSpec(t, existing.get(t, default), send_configs.get(t) or {})
              for t in topology.output_topics()]
    specs += [TopicSpec(t, counts.get(t, default), REPARTITION_CONFIG)
              for t in topology.repartition_topics()]
    for sub in subs:
        for store in sub.stores:
            specs.append(TopicSpec(topology.stores[store].changelog, tasks.get(sub.id, default),
                                   CHANGELOG_CONFIG))
    specs.append(TopicSpec(topology.dlq_topic, existing.get(topology.dlq_topic, default)))
    if topology.late_topic:  # created up front like the DLQ, not by the broker's auto-creation
        specs.append(TopicSpec(topology.late_topic, existing.get(topology.late_topic, default)))
    unique: dict[str, TopicSpec] = {}
    for s in specs:
        unique.setdefault(s.name, s)
    internal = set(topology.internal_topics())
    for spec in unique.values():
        have = existing.get(spec.name)
        if spec.name in internal and have is not None and have != spec.partitions:
            problems.append(f"internal topic {spec.name} has {have} partitions but its "
                            f"sub-topology has {spec.partitions} tasks; run `streams tables "
                            f"reset {topology.name}` to recreate it")
    return list(unique.values()), problems


async def prepare_topics(topology: Topology, bootstrap: Kafka, default_partitions: int,
                         replication: Replication = Replication()) -> dict[str, int]:
    """Create the topology's missing topics with partition counts derived from its inputs;
    raise :class:`TopicLayoutError` (one line) when topics read together are not co-partitioned
    (task p joins partition p of each, as in Kafka Streams) or an internal topic has the wrong
    size. Returns the partition count of every topic it planned."""
    names, _ = plan_topics(topology, {}, default_partitions)
    existing = {t: len(p) for t, p in
                (await topic_partitions(bootstrap, [x.name for x in names])).items()}
    specs, problems = plan_topics(topology, existing, default_partitions)
    if problems:
        raise TopicLayoutError(problems[0])
    await ensure_topics(bootstrap, specs, replication)
    return {spec.name: spec.partitions for spec in specs}


class RepartitionPurger:
    """Deletes consumed records of repartition topics (they have no time retention), at most
    every ``interval_s``; purging is housekeeping, so failures are only logged."""

    def __init__(self, topology: Topology, bootstrap: Kafka, interval_s: float = 30.0) -> None:
        self.topics = set(topology.repartition_topics())
        self.bootstrap = bootstrap
        self.interval_s = interval_s
        self._admin: AIOKafkaAdminClient | None = None
        self._last = time.monotonic()

    async def committed(self, offsets: Offsets) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        doomed = {TopicPartition(t, p): RecordsToDelete(off) for (t, p), off in offsets.items()
                  if t in self.topics and off > 0}
        if not doomed:
            return
        try:
            if self._admin is None:
                self._admin = AIOKafkaAdminClient(**client_kwargs(self.bootstrap))
                await self._admin.start()
            await self._admin.delete_records(doomed)
        except Exception as exc:  # noqa: BLE001 - housekeeping, never fatal
            log.warning("could not purge repartition records: %s", exc)

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
