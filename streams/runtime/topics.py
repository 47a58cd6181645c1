"""The topics a topology touches, with their partition counts and configs.

Internal topics get their partition counts from the sub-topology's inputs, as in Kafka Streams:
a repartition topic has as many partitions as the sub-topology that writes it has tasks, and a
changelog as many as the sub-topology that owns its store. Inputs and outputs that do not exist
yet are created with the configured default.
"""

from __future__ import annotations

from ..dsl import nodes as n
from ..dsl.topology import Topology
from ..kafka.admin import TopicSpec
from .compile import SubTopology, subtopologies

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


def written_repartitions(sub: SubTopology) -> list[str]:
    """The repartition topics that ``sub`` writes."""
    seen: set[int] = set()
    stack: list[n.Node] = list(sub.sources)
    out: list[str] = []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, n.SinkNode) and node.internal and node.topic not in out:
            out.append(node.topic)
        stack.extend(node.children)
    return out


def plan_topics(topology: Topology, existing: dict[str, int],
                default: int) -> tuple[list[TopicSpec], list[str]]:
    """Topic specs for ``topology`` given the ``existing`` partition counts; the second value
    lists the problems (one line each) that must stop a worker."""
    subs = subtopologies(topology)
    counts: dict[str, int] = {t: existing.get(t, default) for t in topology.input_topics()}
    tasks: dict[str, int] = {}
    problems: list[str] = []
    pending = list(subs)
    while pending:
        progressed = False
        for sub in list(pending):
            if not all(t in counts for t in sub.topics):
                continue
            pending.remove(sub)
            progressed = True
            sizes = {t: counts[t] for t in sub.topics}
            if len(set(sizes.values())) > 1:
                problems.append("topics read together must be co-partitioned, but have "
                                f"different partition counts: {sizes}")
            tasks[sub.id] = max(sizes.values())
            for topic in written_repartitions(sub):
                counts[topic] = tasks[sub.id]
        if not progressed:
            problems.append("repartition topics form a cycle: " +
                            ", ".join(t for s in pending for t in s.topics))
            break
    specs = [TopicSpec(t, counts[t]) for t in topology.input_topics()]
    specs += [TopicSpec(t, existing.get(t, default)) for t in topology.output_topics()]
    specs += [TopicSpec(t, counts.get(t, default), REPARTITION_CONFIG)
              for t in topology.repartition_topics()]
    for sub in subs:
        for store in sub.stores:
            specs.append(TopicSpec(topology.stores[store].changelog, tasks.get(sub.id, default),
                                   CHANGELOG_CONFIG))
    specs.append(TopicSpec(topology.dlq_topic, existing.get(topology.dlq_topic, default)))
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
