"""Compile a topology's node graph into sub-topologies and per-task processor graphs.

A *sub-topology* is a connected part of the graph between repartition topics (Kafka Streams'
term); a *task* is one sub-topology on one partition number. All source topics of a
sub-topology are co-partitioned, so partition p of each goes to task ``<sub>_<p>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..dsl import nodes as n
from ..dsl.topology import Topology
from .processors import PROCESSORS, Processor, SourceProc

if TYPE_CHECKING:
    from .task import Task


@dataclass
class SubTopology:
    index: int
    sources: list[n.SourceNode] = field(default_factory=list)
    stores: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:  # replaced by a stable id derived from the source topics
        return str(self.index)

    @property
    def topics(self) -> list[str]:
        return list(dict.fromkeys(s.topic for s in self.sources))


def _stores_of(node: n.Node) -> list[str]:
    if isinstance(node, (n.AggregateNode, n.TableSourceNode)):
        return [node.table]
    if isinstance(node, n.ProcessNode):
        return list(node.stores)
    return []


def subtopologies(topology: Topology) -> list[SubTopology]:
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
    return subs


def build_processors(sub: SubTopology, task: Task) -> dict[str, list[SourceProc]]:
    """Instantiate the processors of ``sub`` for ``task``; return the source processors by topic."""
    built: dict[int, Processor] = {}

    def build(node: n.Node) -> Processor:
        proc = built.get(id(node))
        if proc is None:
            proc = PROCESSORS[type(node)](node, task)
            built[id(node)] = proc
            proc.children = [build(c) for c in node.children]
        return proc

    by_topic: dict[str, list[SourceProc]] = {}
    for source in sub.sources:
        by_topic.setdefault(source.topic, []).append(build(source))  # type: ignore[arg-type]
    return by_topic
