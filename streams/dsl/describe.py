"""Human-readable renderings of a topology: text, mermaid and dot."""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any

from . import nodes as n

if TYPE_CHECKING:
    from .topology import Topology


def _label(node: n.Node, topology: Topology | None = None) -> str:
    if isinstance(node, n.AgentNode) and topology is not None:
        tables = ",".join(node.store_names()) or "-"
        sinks = ",".join(agent_writes(topology, node)) or "-"
        return f"agent {node.name} tables={tables} sinks={sinks}"
    return node.label()


def _helpers(fn: Any) -> list[Any]:
    """``fn`` and the functions of its own module it calls by name, transitively (an agent
    that sends through a helper, like payments' ``_set_balance``, still writes that topic)."""
    module = getattr(fn, "__module__", None)
    seen: dict[int, Any] = {id(fn): fn}
    frontier = [fn]
    while frontier:
        f = frontier.pop()
        for g in n.names_used_by(f, lambda o: isinstance(o, types.FunctionType)
                                 and o.__module__ == module):
            if id(g) not in seen:
                seen[id(g)] = g
                frontier.append(g)
    return list(seen.values())


def agent_writes(topology: Topology, agent: n.AgentNode) -> list[str]:
    """The topics ``agent`` writes: its declared sinks, the topics it sends to
    (:meth:`Topology.topic`) and its internal topics, each once."""
    refs = {id(r): r for r in topology.send_topics.values()}
    sent = [r.name for f in _helpers(agent.fn) for r in n.names_used_by(f, lambda o: id(o) in refs)]
    return list(dict.fromkeys([*agent.sinks, *sent, *agent.internal_sends()]))


def _edges(topology: Topology, nodes: list[n.Node], ids: dict[int, str]
           ) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict[str, str]]:
    """(data edges, edges through an internal topic, extra topic nodes by id): the graph's
    parent -> child edges; a repartition sink or an agent's internal send to the source that
    reads the topic (dashed); an agent's sends to topics that are not sink nodes (its children),
    to a node of their own."""
    solid = [(ids[id(x)], ids[id(c)]) for x in nodes for c in x.children]
    dashed: list[tuple[str, str]] = []
    topics: dict[str, str] = {}
    readers = {s.topic: ids[id(s)] for s in topology.sources}
    for x in nodes:
        if isinstance(x, n.SinkNode) and x.internal and x.topic in readers:
            dashed.append((ids[id(x)], readers[x.topic]))
        if isinstance(x, n.AgentNode):
            sinks = {c.topic for c in x.children if isinstance(c, n.SinkNode)}
            for topic in agent_writes(topology, x):
                if topic in sinks:
                    continue
                if topic in readers:  # an internal topic read by another agent
                    dashed.append((ids[id(x)], readers[topic]))
                else:
                    node_id = topics.setdefault(topic, f"t{len(topics)}")
                    solid.append((ids[id(x)], node_id))
    return solid, dashed, topics


def describe(topology: Topology, fmt: str = "text") -> str:
    """``topology`` as ``fmt``: "text" (topics, tables, agents and the graph), "mermaid" or
    "dot" (:meth:`Topology.describe` has an example). Both graphs draw the same edges: data
    flow, records through internal (repartition) topics dashed, and the topics agents send to.
    """
    nodes = topology.nodes()
    ids = {id(x): f"n{i}" for i, x in enumerate(nodes)}
    if fmt in ("mermaid", "dot"):
        solid, dashed, topics = _edges(topology, nodes, ids)
        names = [(ids[id(x)], _label(x, topology)) for x in nodes]
        names += [(node_id, f"sink {topic}") for topic, node_id in topics.items()]
    if fmt == "mermaid":
        lines = ["flowchart LR"]
        lines += [f'  {i}["{label}"]' for i, label in names]
        lines += [f"  {a} --> {b}" for a, b in solid]
        lines += [f"  {a} -.-> {b}" for a, b in dashed]
        return "\n".join(lines)
    if fmt == "dot":
        lines = [f'digraph "{topology.name}" {{', "  rankdir=LR;"]
        lines += [f'  {i} [label="{label}"];' for i, label in names]
        lines += [f"  {a} -> {b};" for a, b in solid]
        lines += [f"  {a} -> {b} [style=dashed];" for a, b in dashed]
        lines.append("}")
        return "\n".join(lines)
    if fmt != "text":
        raise ValueError(f"unknown format {fmt!r} (text, mermaid, dot)")
    about = f": {topology.description}" if topology.description else ""
    out = [f"Topology {topology.name}{about}"]
    out.append(f"  inputs:   {', '.join(topology.input_topics()) or '-'}")
    out.append(f"  outputs:  {', '.join(topology.output_topics()) or '-'}")
    out.append(f"  internal: {', '.join(topology.internal_topics()) or '-'}")
    out.append(f"  dead letters: {topology.dlq_topic}")
    if topology.late_topic:
        out.append(f"  late records: {topology.late_topic}")
    for name, spec in topology.stores.items():
        out.append(f"  table {name} ({spec.kind}), changelog {spec.changelog}")
    for name, g in topology.global_tables.items():
        out.append(f"  table {name} (global), topic {g.topic}: every partition in every worker")
    for agent in topology.agents.values():
        out.append(f"  agent {agent.name}: tables {', '.join(agent.store_names()) or '-'}; "
                   f"sinks {', '.join(agent_writes(topology, agent)) or '-'}")
    out.append("  graph:")

    def walk(node: n.Node, depth: int) -> None:
        out.append("    " + "  " * depth + "-> " + _label(node, topology))
        for c in node.children:
            walk(c, depth + 1)

    for s in topology.sources:
        walk(s, 0)
    return "\n".join(out)
