"""The logical graph a topology is made of: plain data, no runtime behaviour.

:mod:`streams.runtime.compile` turns these nodes into batch processors per task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .serdes import Serde


@dataclass(eq=False)
class Node:
    name: str
    children: list[Node] = field(default_factory=list, init=False)
    parents: list[Node] = field(default_factory=list, init=False)

    def add_child(self, child: Node) -> Node:
        self.children.append(child)
        child.parents.append(self)
        return child

    @property
    def kind(self) -> str:
        return type(self).__name__.removesuffix("Node").lower()


@dataclass(eq=False)
class SourceNode(Node):
    topic: str
    key_serde: Serde
    value_serde: Serde
    timestamp: str | Callable[[Any], int] | None
    internal: bool = False  # a repartition topic written by this topology


@dataclass(eq=False)
class MapNode(Node):
    fn: Callable[[Any], Any]


@dataclass(eq=False)
class FilterNode(Node):
    predicate: Callable[[Any], bool]


@dataclass(eq=False)
class FlatMapNode(Node):
    fn: Callable[[Any], Iterable[Any]]


@dataclass(eq=False)
class SelectKeyNode(Node):
    fn: Callable[[Any], Any]


@dataclass(eq=False)
class PeekNode(Node):
    fn: Callable[[Any, Any], None]


@dataclass(eq=False)
class BranchNode(Node):
    """Children[i] receives records whose first true predicate is predicates[i]."""

    predicates: list[Callable[[Any], bool] | None]


@dataclass(eq=False)
class SinkNode(Node):
    topic: str
    key_serde: Serde
    value_serde: Serde
    internal: bool = False  # a repartition topic: records carry their source position


@dataclass(eq=False)
class AggregateNode(Node):
    """Non-windowed aggregation into a table: emits (key, new aggregate) on every update."""

    table: str
    initializer: Callable[[], Any]
    adder: Callable[[Any, Any], Any]
    value_serde: Serde


@dataclass(eq=False)
class TableSourceNode(Node):
    """Materializes a topic as a table (latest value per key; None deletes)."""

    table: str
    value_serde: Serde


@dataclass(eq=False)
class ProcessNode(Node):
    """A stateful step: ``fn(key, value, stores)`` returns the (key, value) pairs to emit."""

    fn: Callable[..., Iterable[tuple[Any, Any]] | None]
    stores: list[str]
