"""``GroupedStream``: a stream grouped by key, ready for aggregation into a table."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import faust

from ..serdes import serde_for
from . import nodes as n
from .builder import Grouping
from .table import Table
from .window_ops import WindowedStream

if TYPE_CHECKING:
    from .stream import Stream
    from .topology import Topology


class GroupedStream:
    """A stream grouped by key, ready for aggregation into a table.

    When the grouping needs a repartition, it is built on the first aggregation and shared by
    every later aggregation of this grouped stream (:class:`~streams.dsl.builder.Grouping`).

    Table keys are compared as their serialized bytes: ``7`` and ``"7"`` are the same key
    (use one key type per table).

    >>> from streams import Topology
    >>> t = Topology("doc_grouped")
    >>> by_city = t.stream("rides").group_by(lambda r: r["city"])
    >>> _ = by_city.count(name="rides"), by_city.reduce(lambda a, b: b, name="last-ride")
    >>> t.repartition_topics()            # one repartition, named after the first table
    ['doc_grouped-rides-repartition']
    """

    def __init__(self, stream: Stream, grouping: Grouping) -> None:
        self.stream = stream  # the stream that was grouped
        self.grouping = grouping

    @property
    def topology(self) -> Topology:
        return self.stream.topology

    @property
    def value_type(self) -> Any:
        """The faust Record class of the grouped values, or None.

        >>> import faust
        >>> from streams import Topology
        >>> class Ride(faust.Record):
        ...     city: str
        >>> t = Topology("doc_value_type")
        >>> t.stream("rides", value=Ride).group_by(lambda r: r.city).value_type is Ride
        True
        """
        return self.grouping.value_type

    def window(self, spec: Any) -> WindowedStream:
        """Aggregate per window of event time: ``spec`` is a :class:`~streams.TumblingWindows`,
        :class:`~streams.HoppingWindows`, :class:`~streams.SlidingWindows` or
        :class:`~streams.SessionWindows` (semantics in :mod:`streams.dsl.window_ops`).

        >>> from streams import Topology, TumblingWindows
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_window")
        >>> _ = (t.stream("clicks").group_by_key()
        ...       .window(TumblingWindows(size=60_000)).count(name="per-minute")
        ...       .to("clicks-per-minute"))
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("clicks", "ann", {}, timestamp=1_000)
        ...     driver.pipe("clicks", "ann", {}, timestamp=61_000)
        ...     driver.read_output("clicks-per-minute")
        [('ann', {'value': 1, 'window_start': 0, 'window_end': 60000}), \
('ann', {'value': 1, 'window_start': 60000, 'window_end': 120000})]
        """
        return WindowedStream(self, spec)

    def aggregate(self, initializer: Callable[[], Any], adder: Callable[[Any, Any], Any], *,
                  name: str, value: Any = None) -> Table:
        """Fold each key's values: ``agg = adder(agg, value)`` starting from ``initializer()``;
        emits (key, new aggregate) on every update.

        ``value`` is the serde of the table's values. Without it, ``initializer()`` is called
        once while the topology is built: if it returns a faust Record, the table stores that
        Record class (so the adder gets a Record back after a commit), else any JSON value.

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_aggregate")
        >>> totals = t.stream("rides").group_by_key().aggregate(
        ...     lambda: {"rides": 0, "km": 0},
        ...     lambda agg, ride: {"rides": agg["rides"] + 1, "km": agg["km"] + ride["km"]},
        ...     name="totals")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("rides", "d1", {"km": 3})
        ...     driver.pipe("rides", "d1", {"km": 4})
        ...     driver.table("totals")
        {'d1': {'rides': 2, 'km': 7}}
        """
        if value is None:
            initial = initializer()
            value = type(initial) if isinstance(initial, faust.Record) else "any-json"
        spec = self.topology.builder.add_store(name, serde_for(value), "aggregate")
        node = n.AggregateNode(f"{name}-aggregate", table=name, value_serde=spec.value_serde,
                               initializer=initializer, adder=adder)
        self.grouping.node(name).add_child(node)
        return Table(self.stream.derived(node), spec)

    def count(self, *, name: str) -> Table:
        """Number of records per key.

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_count")
        >>> _ = t.stream("rides").group_by(lambda r: r["driver"]).count(name="rides")
        >>> with TopologyTestDriver(t) as driver:
        ...     for driver_id in ["d1", "d2", "d1"]:
        ...         driver.pipe("rides", "any", {"driver": driver_id})
        ...     driver.table("rides")
        {'d1': 2, 'd2': 1}
        """
        return self.aggregate(lambda: 0, lambda agg, _v: agg + 1, name=name, value="any-json")

    def reduce(self, reducer: Callable[[Any, Any], Any], *, name: str,
               value: Any = None) -> Table:
        """Combine values per key; the first value of a key is its initial aggregate.

        The reducer must return the stream's value type: the table stores values with the
        stream's Record class when the source declared one (``value=`` overrides), so the
        reducer gets Records back after a commit too, not dicts.

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_reduce")
        >>> latest = t.stream("positions").group_by_key().reduce(
        ...     lambda a, v: v if v["ts"] > a["ts"] else a, name="latest")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("positions", "car", {"ts": 5, "at": "B"})
        ...     driver.pipe("positions", "car", {"ts": 2, "at": "A"})   # older: ignored
        ...     driver.table("latest")
        {'car': {'ts': 5, 'at': 'B'}}
        """
        first = object()

        def adder(agg: Any, value: Any) -> Any:
            return value if agg is first else reducer(agg, value)

        if value is None:
            value = self.value_type if self.value_type is not None else "any-json"
        return self.aggregate(lambda: first, adder, name=name, value=value)
