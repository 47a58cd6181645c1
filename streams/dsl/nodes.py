"""The logical graph a topology is made of: every node class, plain data, no runtime behaviour.

The operator modules (:mod:`~streams.dsl.window_ops`, :mod:`~streams.dsl.joins`,
:mod:`~streams.dsl.table_joins`, :mod:`~streams.dsl.versioned`, :mod:`~streams.dsl.agents`)
build these nodes and :mod:`streams.runtime.compile` turns them into batch processors per task;
each node's semantics are documented in the operator module that builds it.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..serdes import Serde
from .window_specs import JoinWindows, SlidingWindows

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
        if isinstance(self.window, SlidingWindows):
            return [self.table, f"{self.table}-records"]
        return [self.table]

    def label(self) -> str:
        return (f"{self.kind} {self.name} ({self.window.describe()}, emit {self.emit}) "
                f"-> table {self.table}")

    def value_record(self) -> Any:
        return None  # outputs are dicts with the window bounds


def value_type(node: Node | None) -> Any:
    """The faust Record class of the values ``node`` emits, or None if unknown / not a Record."""
    while node is not None:
        record = node.value_record()
        if record is not INHERIT:
            return record
        node = node.parents[0] if node.parents else None
    return None


# -- table joins (streams.dsl.table_joins, streams.dsl.versioned) ---------------------------------
@dataclass(eq=False)
class StreamTableJoinNode(Node):
    """Joins each stream record with the current row of its key in ``table`` (a store of the
    same sub-topology)."""

    table: str
    joiner: Callable[[Any, Any], Any]
    how: str

    def store_names(self) -> list[str]:
        return [self.table]

    def label(self) -> str:
        return f"join {self.name} ({self.how}) with table {self.table}"

    def value_record(self) -> Any:
        return None


@dataclass(eq=False)
class GlobalTableJoinNode(Node):
    """Joins each stream record with the row of ``key_selector(key, value)`` in the global
    table ``table``."""

    table: str
    key_selector: Callable[[Any, Any], Any]
    joiner: Callable[[Any, Any], Any]
    how: str

    def label(self) -> str:
        return f"join {self.name} ({self.how}) with global table {self.table}"

    def value_record(self) -> Any:
        return None


@dataclass(eq=False)
class VersionedTableSourceNode(TableSourceNode):
    """Writes each record as a version of its key (at the record's timestamp); passes on the
    ones that became their key's latest version."""

    history_ms: int = 0

    def label(self) -> str:
        return f"versioned table {self.name} -> table {self.table} (history {self.history_ms} ms)"


@dataclass(eq=False)
class VersionedTableJoinNode(StreamTableJoinNode):
    """Joins each stream record with the row of its key as of its timestamp; with a
    ``buffer``, records wait there until stream time passes ``ts + grace_ms``."""

    grace_ms: int = 0
    buffer: str | None = None

    def store_names(self) -> list[str]:
        return [self.table] + ([self.buffer] if self.buffer else [])

    def label(self) -> str:
        held = f", grace {self.grace_ms} ms, buffer {self.buffer}" if self.buffer else ""
        return f"join {self.name} ({self.how}) with table {self.table} as of record time{held}"


# -- stream-stream joins (streams.dsl.joins) ------------------------------------------------------
@dataclass(eq=False)
class StreamJoinSideNode(Node):
    """One input side of a stream-stream join: buffers its records and looks up the other's."""

    side: str  # "left" | "right"
    joiner: Callable[[Any, Any], Any]
    windows: JoinWindows
    how: str
    join_name: str
    late_topic: str | None = None

    @property
    def own_buffer(self) -> str:
        return f"{self.join_name}-{self.side}"

    @property
    def other_buffer(self) -> str:
        return f"{self.join_name}-{'right' if self.side == 'left' else 'left'}"

    def unmatched(self, side: str) -> str | None:
        """The unmatched-marker store of ``side``, if this join emits that side unmatched."""
        if side == "left" and self.how in ("left", "outer"):
            return f"{self.join_name}-left-unmatched"
        if side == "right" and self.how == "outer":
            return f"{self.join_name}-right-unmatched"
        return None

    def store_names(self) -> list[str]:
        names = [f"{self.join_name}-left", f"{self.join_name}-right"]
        return names + [s for s in (self.unmatched("left"), self.unmatched("right")) if s]

    def label(self) -> str:
        w = self.windows
        return (f"join {self.name} ({self.how}, {self.side} side, before {w.before_ms} ms, "
                f"after {w.after_ms} ms, grace {w.grace_ms} ms) "
                f"stores={','.join(self.store_names())}")

    def value_record(self) -> Any:
        return None  # the joiner's results


@dataclass(eq=False)
class JoinOutputNode(Node):
    """Where both sides' join results meet: downstream operators hang off this node."""

    def label(self) -> str:
        return f"join-output {self.name}"

    def value_record(self) -> Any:
        return None


# -- agents (streams.dsl.agents) ------------------------------------------------------------------
@dataclass(eq=False)
class AgentNode(Node):
    """An agent: ``fn(stream)`` over its parent's records; its children are its sinks.

    ``agent_tables`` / ``internal_topics``: the topology's agent tables and internal topics by
    name (live dicts: an agent may name a table declared after it), to find the ones ``fn``
    uses."""

    fn: Callable[..., Any]
    agent_tables: dict[str, Any] = field(repr=False)
    internal_topics: dict[str, Any] = field(repr=False)
    tables: list[str] | None = None  # None: the tables the function names (found lazily)
    sinks: list[str] = field(default_factory=list)

    def store_names(self) -> list[str]:
        if self.tables is None:
            mine = {id(t) for t in self.agent_tables.values()}
            self.tables = [t.name for t in names_used_by(self.fn, lambda o: id(o) in mine)]
        return list(self.tables)

    def internal_sends(self) -> list[str]:
        """The internal topics (:meth:`Topology.internal_topic`) the function names: the topic
        plan sizes them from this agent's sub-topology."""
        mine = {id(t) for t in self.internal_topics.values()}
        return [ref.name for ref in names_used_by(self.fn, lambda o: id(o) in mine)]

    def label(self) -> str:
        tables = ",".join(self.store_names()) or "-"
        return f"agent {self.name} tables={tables} sinks={','.join(self.sinks) or '-'}"

    def value_record(self) -> Any:
        return None


def names_used_by(fn: Callable[..., Any], wanted: Callable[[Any], bool]) -> list[Any]:
    """The objects for which ``wanted`` holds that ``fn`` (or a function or lambda defined
    inside it) names as a global or a closure variable, each once, in order."""
    found: dict[int, Any] = {}

    def consider(obj: Any) -> None:
        if obj is not None and wanted(obj):
            found.setdefault(id(obj), obj)

    codes = [fn.__code__]
    while codes:
        code = codes.pop()
        for name in code.co_names:
            consider(fn.__globals__.get(name))
        codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    for cell in fn.__closure__ or ():
        try:
            consider(cell.cell_contents)
        except ValueError:  # an empty cell
            pass
    return list(found.values())
