"""What users write: topologies, streams, tables and windows (serdes: :mod:`streams.serdes`).

The public classes are re-exported here; :mod:`.builder` is the registry behind a
``Topology``, :mod:`.nodes` the graph it builds, and the operator modules (:mod:`.window_ops`,
:mod:`.joins`, :mod:`.table_joins`, :mod:`.versioned`, :mod:`.agents`) hold each operator's
semantics.
"""

from ..serdes import JsonObjectSerde, JsonSerde, RecordSerde, SerdeError, StringSerde
from .grouped import GroupedStream
from .stream import Stream
from .table import GlobalTable, Table
from .topology import Topology

__all__ = ["GlobalTable", "GroupedStream", "JsonObjectSerde", "JsonSerde", "RecordSerde",
           "SerdeError", "Stream", "StringSerde", "Table", "Topology"]
