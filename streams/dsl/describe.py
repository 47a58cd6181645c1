"""Human-readable renderings of a topology: text, mermaid and dot."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import nodes as n

if TYPE_CHECKING:
    from .topology import Topology


def _label(node: n.Node) -> str:
    return node.label()


def describe(topology: Topology, fmt: str = "text") -> str:
    """``topology`` as ``fmt``: "text" (topics, tables, agents and the graph), "mermaid" or
    "dot" (:meth:`Topology.describe` has an example)."""
    nodes = topology.nodes()
    ids = {id(x): f"n{i}" for i, x in enumerate(nodes)}
    if fmt == "mermaid":
        lines = ["flowchart LR"]
        for x in nodes:
            lines.append(f'  {ids[id(x)]}["{_label(x)}"]')
        for x in nodes:
            for c in x.children:
                lines.append(f"  {ids[id(x)]} --> {ids[id(c)]}")
        for x in nodes:
            if isinstance(x, n.SinkNode) and x.internal:
                for s in topology.sources:
                    if s.topic == x.topic:
                        lines.append(f"  {ids[id(x)]} -.-> {ids[id(s)]}")
        return "\n".join(lines)
    if fmt == "dot":
        lines = [f'digraph "{topology.name}" {{', "  rankdir=LR;"]
        for x in nodes:
            lines.append(f'  {ids[id(x)]} [label="{_label(x)}"];')
        for x in nodes:
            for c in x.children:
                lines.append(f"  {ids[id(x)]} -> {ids[id(c)]};")
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
                   f"sinks {', '.join(agent.sinks) or '-'}")
    out.append("  graph:")

    def walk(node: n.Node, depth: int) -> None:
        out.append("    " + "  " * depth + "-> " + _label(node))
        for c in node.children:
            walk(c, depth + 1)

    for s in topology.sources:
        walk(s, 0)
    return "\n".join(out)
