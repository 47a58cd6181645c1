"""Compile a topology's node graph into sub-topologies and per-task processor graphs.

A *sub-topology* is a connected part of the graph between repartition topics (Kafka Streams'
term); a *task* is one sub-topology on one partition number. All source topics of a
sub-topology are co-partitioned, so partition p of each goes to task ``<sub>_<p>``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from ..dsl import nodes as n
from ..dsl.nodes import AgentNode
from ..dsl.topology import Topology
from .context import ProcessorContext
from .processors import PROCESSORS, Processor, SourceProc


@dataclass
class SubTopology:
    """A connected part of the graph; all its sources are read by the same tasks.

    ``id`` is derived from what the sub-topology reads (its sorted source topics), so it stays
    the same when pipelines are added to or removed from the topology, unlike ``index`` (its
    position in the file). Task ids and state directories are ``f"{sub.id}_{partition}"``: an
    id never contains ``_``, so the id is everything before the (only) underscore.
    """

    index: int
    sources: list[n.SourceNode] = field(default_factory=list)
    stores: list[str] = field(default_factory=list)
    id: str = ""

    @property
    def topics(self) -> list[str]:
        return list(dict.fromkeys(s.topic for s in self.sources))


_ID_PLAIN = re.compile(r"^[A-Za-z0-9.-]{1,60}$")
_ID_PREFIX = 48


def subtopology_id(topics: list[str]) -> str:
    """A stable, readable id for the sub-topology reading ``topics``.

    One topic whose name is already a valid id (``[A-Za-z0-9.-]``, at most 60 characters, not
    only digits, which would look like an old index-based id) is its own id: ``"rides"``.
    Anything else is a readable prefix plus the first 10 hex digits of the sha1 of the sorted
    topic list: ``"trip-stats-rides-by-driver-repartition-3f2a..."``.
    """
    names = sorted(set(topics))
    if len(names) == 1 and _ID_PLAIN.match(names[0]) and not names[0].isdigit():
        return names[0]
    digest = hashlib.sha1("\n".join(names).encode()).hexdigest()[:10]
    prefix = re.sub(r"[^A-Za-z0-9.-]", "-", "-".join(names))[:_ID_PREFIX].strip("-.")
    return f"{prefix}-{digest}" if prefix else digest


def _stores_of(node: n.Node) -> list[str]:
    return node.store_names()


def subtopologies(topology: Topology) -> list[SubTopology]:
    """Split the graph into sub-topologies: nodes connected by edges, by a shared store, or by
    reading the same topic (a topic's partition p feeds exactly one task, which runs every
    source of that topic, so each reader gets every record)."""
    parent: dict[object, object] = {}

    def find(x: object) -> object:
        parent.setdefault(x, x)
        while parent[x] is not x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: object, b: object) -> None:
        parent[find(a)] = find(b)

    nodes = topology.nodes()
    for node in nodes:
        find(node)
        for child in node.children:
            union(node, child)
        for store in _stores_of(node):
            union(node, ("store", store))
    for source in topology.sources:
        union(source, ("topic", source.topic))
    groups: dict[object, SubTopology] = {}
    subs: list[SubTopology] = []
    for source in topology.sources:
        root = find(source)
        if root not in groups:
            groups[root] = SubTopology(len(subs))
            subs.append(groups[root])
        groups[root].sources.append(source)
    for node in nodes:
        for store in _stores_of(node):
            sub = groups[find(node)]
            if store not in sub.stores:
                sub.stores.append(store)
    internal = set(topology.internal_topics())
    for node in nodes:
        if isinstance(node, n.SinkNode) and not node.internal:
            if node.topic in internal:
                raise ValueError(f"to({node.topic!r}) writes to an internal topic of topology "
                                 f"{topology.name!r} (repartition or changelog)")
            if node.topic in groups[find(node)].topics:
                raise ValueError(f"to({node.topic!r}) writes to a topic its own pipeline reads "
                                 f"in topology {topology.name!r}: the task would consume its "
                                 "own output")
    seen: dict[str, SubTopology] = {}
    for sub in subs:
        sub.id = subtopology_id(sub.topics)
        if sub.id in seen:  # only possible if a topic is literally named like a hashed id
            raise ValueError(f"sub-topologies reading {seen[sub.id].topics} and {sub.topics} "
                             f"both get the id {sub.id!r}; rename one of the topics")
        seen[sub.id] = sub
    return subs


def written_repartitions(sub: SubTopology) -> list[str]:
    """The repartition topics that ``sub`` writes: its internal sinks', and the internal topics
    its agents send to (:meth:`Topology.internal_topic`)."""
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
        if isinstance(node, AgentNode):
            out.extend(t for t in node.internal_sends() if t not in out)
        stack.extend(node.children)
    return out


def build_processors(sub: SubTopology, ctx: ProcessorContext) -> dict[str, list[SourceProc]]:
    """Instantiate the processors of ``sub`` with the task's context ``ctx`` (each node once,
    even where branches meet again); return the source processors by topic."""
    built: dict[int, Processor] = {}

    def build(node: n.Node) -> Processor:
        proc = built.get(id(node))
        if proc is None:
            proc = PROCESSORS[type(node)](node, ctx)
            built[id(node)] = proc
            proc.children = [build(c) for c in node.children]
        return proc

    by_topic: dict[str, list[SourceProc]] = {}
    for source in sub.sources:
        by_topic.setdefault(source.topic, []).append(build(source))  # type: ignore[arg-type]
    return by_topic
