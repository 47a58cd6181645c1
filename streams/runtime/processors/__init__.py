"""Batch processors: the compiled form of each DSL node, by family.

* :mod:`.base`: ``Processor``, ``Rec``, errors and the resume-after-failure loop;
* :mod:`.source`: ``SourceProc`` and timestamp extraction;
* :mod:`.stateless`: map, filter, flat_map, select_key, peek, branch;
* :mod:`.stateful`: aggregate, table source, process;
* :mod:`.windowed`: windowed aggregations (tumbling/hopping, sessions);
* :mod:`.joins`: stream-stream joins (one processor per side);
* :mod:`.table_joins`: stream-table and stream-global-table joins;
* :mod:`.versioned`: versioned tables and as-of stream-table joins with grace;
* :mod:`.agents`: Faust-style agents;
* :mod:`.sinks`: ``SinkProc``.

:data:`PROCESSORS` maps each node type to its processor class: a new node kind (windows, joins)
is a node class in :mod:`streams.dsl.nodes`, a ``Processor(node, ctx)`` subclass here, and one
entry below. Processors reach the task only through their
:class:`~streams.runtime.context.ProcessorContext`.
"""

from __future__ import annotations

from collections.abc import Callable

from ...dsl import nodes as n
from ...dsl.nodes import (AgentNode, GlobalTableJoinNode, JoinOutputNode, StreamJoinSideNode,
                          StreamTableJoinNode, VersionedTableJoinNode, VersionedTableSourceNode)
from ...dsl.window_specs import SessionWindows, SlidingWindows
from ...serdes import MAX_RECORD_BYTES
from ...state.meta import ORIGIN_HEADER
from ..context import ProcessorContext
from .agents import AgentProc
from .base import MAX_TIMESTAMP_MS, Processor, Rec, ShapeError, describe_error
from .joins import JoinOutputProc, StreamJoinSideProc
from .sinks import SinkProc
from .source import SourceProc, timestamp_extractor
from .stateful import AggregateProc, ProcessProc, TableSourceProc
from .table_joins import GlobalTableJoinProc, StreamTableJoinProc
from .versioned import VersionedTableJoinProc, VersionedTableSourceProc
from .stateless import BranchProc, FilterProc, FlatMapProc, MapProc, PeekProc, SelectKeyProc
from .sliding_windows import SlidingWindowAggregateProc
from .windowed import SessionWindowAggregateProc, TimeWindowAggregateProc


def window_aggregate(node: n.Node, ctx: ProcessorContext) -> Processor:
    """The processor of a windowed aggregation, by its window family."""
    if isinstance(node.window, SessionWindows):  # type: ignore[attr-defined]
        return SessionWindowAggregateProc(node, ctx)
    if isinstance(node.window, SlidingWindows):  # type: ignore[attr-defined]
        return SlidingWindowAggregateProc(node, ctx)
    return TimeWindowAggregateProc(node, ctx)


__all__ = ["AgentProc", "AggregateProc", "BranchProc", "FilterProc", "FlatMapProc",
           "GlobalTableJoinProc", "JoinOutputProc", "MAX_RECORD_BYTES", "MAX_TIMESTAMP_MS",
           "MapProc", "ORIGIN_HEADER", "PROCESSORS", "PeekProc", "ProcessProc", "Processor",
           "ProcessorContext", "Rec", "SelectKeyProc", "SessionWindowAggregateProc", "ShapeError",
           "SinkProc", "SlidingWindowAggregateProc", "SourceProc", "StreamJoinSideProc",
           "StreamTableJoinProc", "TableSourceProc", "TimeWindowAggregateProc",
           "VersionedTableJoinProc", "VersionedTableSourceProc", "describe_error",
           "timestamp_extractor"]

PROCESSORS: dict[type[n.Node], Callable[[n.Node, ProcessorContext], Processor]] = {
    n.SourceNode: SourceProc,
    n.MapNode: MapProc,
    n.FilterNode: FilterProc,
    n.FlatMapNode: FlatMapProc,
    n.SelectKeyNode: SelectKeyProc,
    n.PeekNode: PeekProc,
    n.BranchNode: BranchProc,
    n.SinkNode: SinkProc,
    n.AggregateNode: AggregateProc,
    n.TableSourceNode: TableSourceProc,
    n.ProcessNode: ProcessProc,
    n.WindowAggregateNode: window_aggregate,
    # stream-stream joins (streams.dsl.joins)
    StreamJoinSideNode: StreamJoinSideProc,  # type: ignore[dict-item]
    JoinOutputNode: JoinOutputProc,
    # stream-table joins (streams.dsl.table_joins)
    StreamTableJoinNode: StreamTableJoinProc,
    GlobalTableJoinNode: GlobalTableJoinProc,
    # versioned tables and as-of joins (streams.dsl.versioned)
    VersionedTableSourceNode: VersionedTableSourceProc,  # type: ignore[dict-item]
    VersionedTableJoinNode: VersionedTableJoinProc,  # type: ignore[dict-item]
    AgentNode: AgentProc,
}
