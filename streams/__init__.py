"""streams: stateful stream processing on Apache Kafka.

Declare a :class:`Topology`; ``streams worker NAME`` runs it.
"""

from .dsl import GroupedStream, Stream, Table, Topology
from .dsl.window_specs import (HoppingWindows, JoinWindows, SessionWindows, SlidingWindows,
                                TumblingWindows)

__all__ = ["GroupedStream", "HoppingWindows", "JoinWindows", "SessionWindows", "SlidingWindows",
           "Stream", "Table", "Topology", "TumblingWindows"]
