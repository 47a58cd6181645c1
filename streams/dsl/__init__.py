"""What users write: topologies, streams, tables, windows and serdes."""

from ..serdes import JsonObjectSerde, JsonSerde, RecordSerde, SerdeError, StringSerde
from .topology import GroupedStream, Stream, Table, Topology

__all__ = ["GroupedStream", "JsonObjectSerde", "JsonSerde", "RecordSerde", "SerdeError", "Stream",
           "StringSerde", "Table", "Topology"]
