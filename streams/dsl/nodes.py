"""The logical graph a topology is made of: plain data, no runtime behaviour.

:mod:`streams.runtime.compile` turns these nodes into batch processors per task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..serdes import Serde

# ``Node.value_record()`` of a node whose values are its parent's values.
INHERIT: Any = object()


def _record_of(serde: Serde) -> Any:
    return getattr(serde, "record", None)


@dataclass(eq=False)
class Node:
    """A step of the graph. Subclasses describe themselves through the methods below, so code
    that walks the graph (compile, describe, the DSL) needs no ``isinstance`` chains."""

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

    def store_names(self) -> list[str]:
        """The state stores this node reads or writes (they live in its sub-topology)."""
        return []

    def label(self) -> str:
        """One line for ``describe``."""
        return f"{self.kind} {self.name}"

    def value_record(self) -> Any:
        """The faust Record class of the values this node emits, None if they are not (known
        to be) Records, or ``INHERIT`` if it emits its input values."""
        return INHERIT


@dataclass(eq=False)
class SourceNode(Node):
    topic: str
    key_serde: Serde
    value_serde: Serde
    timestamp: str | Callable[[Any], int] | None
    internal: bool = False  # a repartition topic written by this topology
    # ``validate(value)`` or ``validate(key, value)``: raises or returns False for invalid
    # input (streams.runtime.processors.validate)
    validate: Callable[..., Any] | None = None

    def label(self) -> str:
        name = getattr(self.validate, "__name__", "")
        validated = "" if self.validate is None else (
            f" (validated by {name if name.isidentifier() else 'a function'})")
        return f"source {self.topic}" + (" (repartition)" if self.internal else "") + validated

    def value_record(self) -> Any:
        return _record_of(self.value_serde)


@dataclass(eq=False)
class MapNode(Node):
    fn: Callable[[Any], Any]
    passthrough: bool = False  # an identity map (a branch output): values keep their type

    def value_record(self) -> Any:
        return INHERIT if self.passthrough else None


@dataclass(eq=False)
class FilterNode(Node):
    predicate: Callable[[Any], bool]


@dataclass(eq=False)
class FlatMapNode(Node):
    fn: Callable[[Any], Iterable[Any]]

    def value_record(self) -> Any:
        return None


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

    def label(self) -> str:
        return f"sink {self.topic}" + (" (repartition)" if self.internal else "")


@dataclass(eq=False)
class _TableNode(Node):
    """A node that materializes its records into the table ``table`` (values in ``value_serde``)."""

    table: str
    value_serde: Serde

    def store_names(self) -> list[str]:
        return [self.table]

    def label(self) -> str:
        return f"{self.kind} {self.name} -> table {self.table}"

    def value_record(self) -> Any:
        # A table's updates carry the table's values (aggregates), not its input's type.
        return _record_of(self.value_serde)


@dataclass(eq=False)
class AggregateNode(_TableNode):
    """Non-windowed aggregation into a table: emits (key, new aggregate) on every update."""

    initializer: Callable[[], Any]
    adder: Callable[[Any, Any], Any]


@dataclass(eq=False)
class TableSourceNode(_TableNode):
    """Materializes a topic as a table (latest value per key; None deletes)."""


@dataclass(eq=False)
class ProcessNode(Node):
    """A stateful step: ``fn(key, value, stores)`` returns the (key, value) pairs to emit."""

    fn: Callable[..., Iterable[tuple[Any, Any]] | None]
    stores: list[str]  # (a field, hence ``store_names()`` rather than ``stores()``)

    def store_names(self) -> list[str]:
        return list(self.stores)

    def label(self) -> str:
        return f"process {self.name} stores={','.join(self.stores)}"

    def value_record(self) -> Any:
        return None


@dataclass(eq=False)
class WindowAggregateNode(_TableNode):
    """Aggregation per key and window of event time (see :mod:`streams.dsl.window_ops`); emits
    ``{...aggregate, window_start, window_end}`` on every update or once per closed window."""

    initializer: Callable[[], Any]
    adder: Callable[[Any, Any], Any]
    merger: Callable[[Any, Any], Any] | None
    window: Any
    emit: str  # "update" | "final"
    result: Callable[[Any], Any] | None = None  # aggregate -> output value (e.g. mean)
    late_topic: str | None = None

    def store_names(self) -> list[str]:
        from .window_specs import SlidingWindows

        if isinstance(self.window, SlidingWindows):
            return [self.table, f"{self.table}-records"]
        return [self.table]

    def label(self) -> str:
        return (f"{self.kind} {self.name} ({self.window.describe()}, emit {self.emit}) "
                f"-> table {self.table}")

    def value_record(self) -> Any:
        return None  # outputs are dicts with the window bounds
