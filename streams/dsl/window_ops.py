"""Windowed aggregations on event time: ``grouped.window(spec).aggregate(...)``.

Semantics: Kafka Streams 4.0's (``KStreamWindowAggregate``, ``KStreamSlidingWindowAggregate``,
``KStreamSessionWindowAggregate``); the deviations are listed in README.md ("Windows").

* **Stream time** is the largest record timestamp the task has processed; it is persisted with
  the task's state and restored from the changelog. Within a poll batch it advances record by
  record as the window operator sees them (a record's own timestamp counts).
* **Tumbling** windows are ``[start, start + size)`` with ``start`` a multiple of ``size``;
  **hopping** windows ``[start, start + size)`` for every multiple of ``advance`` with
  ``start <= ts < start + size`` (no start below 0). Such a window **closes when stream time >=
  end + grace**; a record none of whose windows is open is late.
* **Sliding** windows ``[start, start + d]`` (inclusive) are defined by the records: each
  record's left window ``[ts - d, ts]`` (``[0, d]`` for ``ts < d``) and its right window
  ``[ts + 1, ts + 1 + d]`` once a later record falls into it; each holds every record within
  its bounds that arrived while it was open. A window **closes when stream time > end + grace**;
  a record is late when ``ts + d < stream time - grace``.
* **Session** windows are ``[first ts, last ts]`` per key (inclusive). A record at ``ts`` merges
  every open session of its key with ``end >= ts - gap`` and ``start <= ts + gap`` into one,
  whose aggregate is ``merger(...merger(initializer(), s1)..., sn)`` (sessions by start), then
  ``adder(aggregate, value)``: the initializer takes part in every merge, as in Kafka, so make
  ``merger`` treat it as neutral. A session **closes when stream time > end + gap + grace**
  (then no record can merge into it any more); a record is late when its merged session is
  closed already (``end < stream time - gap - grace``).
* **Result timestamps**: a tumbling, hopping or sliding result carries the largest record
  timestamp of its window (kept in the window store next to the aggregate); a session result
  its session's end, a session retraction the retracted session's end. A window stored without
  that timestamp (by an earlier version) is stamped with the largest timestamp added since, or,
  closed without an update, with the last millisecond it can hold.
* A **late** record is dropped, counted in ``streams_late_events_total{node}`` and written to
  the topology's ``late_topic`` if it has one, with headers ``reason`` = late, ``node`` and the
  original record's source position (a hopping record with some windows open is not late; a
  record late for several windowed aggregations is written once for each, named by ``node``).
  Records with a null key or value are skipped and counted as dropped.
* ``emit="update"``: after each record, one output per window it updated (by window start).
  Session merges first retract each merged-away session: a tombstone (value None) keyed by the
  group key with headers ``window_start``/``window_end`` naming the old session.
  ``emit="final"``: each window is emitted once, when it closes (at the end of a poll batch, or
  when stream time advances without input), ordered by (window end, key); a crash may only
  repeat such a record as an exact duplicate.
* A window is deleted from the store when it closes, so stored windows stay bounded.

Outputs are keyed by the group key; their value is the aggregate's fields (a dict or faust Record)
plus ``window_start`` and ``window_end`` (epoch ms; the end is exclusive for tumbling and hopping,
inclusive for sliding windows and sessions), or
``{"value": aggregate, "window_start": ..., "window_end": ...}`` for other aggregates. Every
output carries headers ``window_start`` and ``window_end``.

>>> from streams import Topology, TumblingWindows
>>> t = Topology("clicks")
>>> counts = (t.stream("clicks", timestamp="ts").group_by(lambda v: v["user"], name="by-user")
...            .window(TumblingWindows(size=60_000, grace=10_000)).count(name="clicks-1m"))
>>> _ = counts.to("clicks-per-minute")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import faust

from ..serdes import serde_for
from . import nodes as n
from .table import Table
from .window_specs import HoppingWindows, SessionWindows, SlidingWindows, TumblingWindows

if TYPE_CHECKING:
    from .grouped import GroupedStream

EMIT_MODES = ("update", "final")


class WindowedStream:
    """A grouped stream cut into windows of event time, ready for aggregation
    (``grouped.window(spec)``; an example runs at each aggregation below).

    >>> from streams import Topology, TumblingWindows
    >>> windowed = Topology("doc_windowed").stream("in").group_by_key().window(
    ...     TumblingWindows(size=60_000, grace=5_000))
    >>> windowed.spec.describe()
    'tumbling 60000 ms, grace 5000 ms'
    """

    def __init__(self, grouped: GroupedStream, spec: Any) -> None:
        if not isinstance(spec, (TumblingWindows, HoppingWindows, SlidingWindows, SessionWindows)):
            raise TypeError(f"not a window spec: {spec!r}")
        self.grouped = grouped
        self.spec = spec

    def aggregate(self, initializer: Callable[[], Any], adder: Callable[[Any, Any], Any], *,
                  name: str, emit: str = "update",
                  merger: Callable[[Any, Any], Any] | None = None,
                  value: Any = None, result: Callable[[Any], Any] | None = None) -> WindowedTable:
        """Fold each window's values per key: ``agg = adder(agg, value)`` from
        ``initializer()``. Session windows also need ``merger(agg1, agg2)`` to combine the
        aggregates of sessions a record joins: as in Kafka Streams the merged aggregate starts
        from ``initializer()``, so ``merger(initializer(), agg)`` should give ``agg``.
        ``emit`` is "update" or "final"; ``value`` the serde of stored aggregates (a faust
        Record class is inferred from the initializer). Results are stamped with the window's
        largest record timestamp (sessions: their end).

        >>> from streams import SessionWindows, Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_window_aggregate")
        >>> _ = (t.stream("rides").group_by_key().window(SessionWindows(gap=10_000))
        ...       .aggregate(lambda: {"rides": 0}, lambda a, r: {"rides": a["rides"] + 1},
        ...                  merger=lambda a, b: {"rides": a["rides"] + b["rides"]},
        ...                  name="sessions", emit="final")
        ...       .to("sessions"))
        >>> with TopologyTestDriver(t) as driver:
        ...     for ts in (0, 5_000, 50_000):        # the third starts a new session
        ...         driver.pipe("rides", "rider-1", {}, timestamp=ts)
        ...     driver.read_output("sessions")     # the first has closed: 50_000 > 5_000 + gap
        [('rider-1', {'rides': 2, 'window_start': 0, 'window_end': 5000})]
        """
        if emit not in EMIT_MODES:
            raise ValueError(f"emit must be one of {EMIT_MODES}, got {emit!r}")
        session = isinstance(self.spec, SessionWindows)
        if session and merger is None:
            raise ValueError(f"session windows need merger= to combine sessions ({name!r})")
        builder = self.grouped.topology.builder
        grouping = self.grouped.grouping
        if value is None:
            initial = initializer()
            value = type(initial) if isinstance(initial, faust.Record) else "any-json"
        spec = builder.add_store(name, serde_for(value), "session" if session else "window",
                                 self.spec)
        if isinstance(self.spec, SlidingWindows):
            # The records themselves: a window created late must aggregate the ones it covers.
            builder.add_store(f"{name}-records", grouping.value_serde(), "join-buffer",
                              self.spec)
        node = n.WindowAggregateNode(
            f"{name}-window", table=name, value_serde=spec.value_serde, initializer=initializer,
            adder=adder, merger=merger, window=self.spec, emit=emit, result=result,
            late_topic=builder.late_topic)
        grouping.node(name).add_child(node)
        return WindowedTable(self.grouped.stream.derived(node), spec)

    def count(self, *, name: str, emit: str = "update") -> WindowedTable:
        """Records per key and window: ``{"value": n, "window_start": .., "window_end": ..}``.

        >>> from streams import HoppingWindows, Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_window_count")
        >>> _ = (t.stream("clicks").group_by_key()
        ...       .window(HoppingWindows(size=10_000, advance=5_000)).count(name="clicks")
        ...       .to("counts"))
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("clicks", "ann", {}, timestamp=7_000)   # in [0, 10s) and [5s, 15s)
        ...     [(v["window_start"], v["value"]) for _k, v in driver.read_output("counts")]
        [(0, 1), (5000, 1)]
        """
        return self.aggregate(_zero, _count, merger=_add, name=name, emit=emit, value="any-json")

    def sum(self, fn: Callable[[Any], Any], *, name: str, emit: str = "update") -> WindowedTable:
        """Sum of ``fn(value)`` (int or float; for money, aggregate Decimal strings yourself).

        >>> from streams import Topology, TumblingWindows
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_window_sum")
        >>> _ = t.stream("trips").group_by_key().window(TumblingWindows(size=60_000)).sum(
        ...     lambda trip: trip["km"], name="km")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("trips", "car", {"km": 3}, timestamp=1_000)
        ...     driver.pipe("trips", "car", {"km": 4}, timestamp=2_000)
        ...     driver.table("km")
        {'car': {0: 7}}
        """
        return self.aggregate(_zero, lambda a, v: a + fn(v), merger=_add, name=name, emit=emit,
                              value="any-json")

    def min(self, fn: Callable[[Any], Any], *, name: str, emit: str = "update") -> WindowedTable:
        """Smallest ``fn(value)`` per key and window.

        >>> from streams import Topology, TumblingWindows
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_window_min")
        >>> _ = t.stream("temps").group_by_key().window(TumblingWindows(size=60_000)).min(
        ...     lambda v: v["c"], name="coldest")
        >>> with TopologyTestDriver(t) as driver:
        ...     for ts, c in ((0, 4), (1_000, -2), (2_000, 1)):
        ...         driver.pipe("temps", "oslo", {"c": c}, timestamp=ts)
        ...     driver.table("coldest")
        {'oslo': {0: -2}}
        """
        pick = _pick(min)
        return self.aggregate(_none, lambda a, v: pick(a, fn(v)), merger=pick, name=name,
                              emit=emit, value="any-json")

    def max(self, fn: Callable[[Any], Any], *, name: str, emit: str = "update") -> WindowedTable:
        """Largest ``fn(value)`` per key and window.

        >>> from streams import Topology, TumblingWindows
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_window_max")
        >>> _ = t.stream("temps").group_by_key().window(TumblingWindows(size=60_000)).max(
        ...     lambda v: v["c"], name="warmest")
        >>> with TopologyTestDriver(t) as driver:
        ...     for ts, c in ((0, 4), (1_000, 9), (2_000, 1)):
        ...         driver.pipe("temps", "oslo", {"c": c}, timestamp=ts)
        ...     driver.table("warmest")
        {'oslo': {0: 9}}
        """
        pick = _pick(max)
        return self.aggregate(_none, lambda a, v: pick(a, fn(v)), merger=pick, name=name,
                              emit=emit, value="any-json")

    def mean(self, fn: Callable[[Any], Any], *, name: str, emit: str = "update") -> WindowedTable:
        """Mean of ``fn(value)`` per key and window (stored as sum and count).

        >>> from streams import Topology, TumblingWindows
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_window_mean")
        >>> _ = (t.stream("temps").group_by_key().window(TumblingWindows(size=60_000))
        ...       .mean(lambda v: v["c"], name="mean").to("means"))
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("temps", "oslo", {"c": 1}, timestamp=0)
        ...     driver.pipe("temps", "oslo", {"c": 4}, timestamp=1_000)
        ...     [v["value"] for _k, v in driver.read_output("means")]
        [1.0, 2.5]
        """
        return self.aggregate(
            lambda: {"sum": 0, "count": 0},
            lambda a, v: {"sum": a["sum"] + fn(v), "count": a["count"] + 1},
            merger=lambda a, b: {"sum": a["sum"] + b["sum"], "count": a["count"] + b["count"]},
            name=name, emit=emit, value="any-json", result=lambda a: a["sum"] / a["count"])

    def reduce(self, reducer: Callable[[Any, Any], Any], *, name: str,
               emit: str = "update") -> WindowedTable:
        """Combine the values of each window; the first value is the initial aggregate (and
        ``reducer`` also merges sessions).

        >>> from streams import Topology, TumblingWindows
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_window_reduce")
        >>> _ = t.stream("bids").group_by_key().window(TumblingWindows(size=60_000)).reduce(
        ...     lambda a, b: a if a["price"] >= b["price"] else b, name="best-bid")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("bids", "lot-1", {"price": 5}, timestamp=0)
        ...     driver.pipe("bids", "lot-1", {"price": 9}, timestamp=1_000)
        ...     driver.pipe("bids", "lot-1", {"price": 7}, timestamp=2_000)
        ...     driver.table("best-bid")
        {'lot-1': {0: {'price': 9}}}
        """
        value_type = self.grouped.grouping.value_type
        return self.aggregate(_none, lambda a, v: v if a is None else reducer(a, v),
                              merger=lambda a, b: b if a is None else (a if b is None
                                                                        else reducer(a, b)),
                              name=name, emit=emit,
                              value=value_type if value_type is not None else "any-json")


def _zero() -> int:
    return 0


def _none() -> None:
    return None


def _count(agg: int, _value: Any) -> int:
    return agg + 1


def _add(a: Any, b: Any) -> Any:
    return a + b


def _pick(choose: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def pick(a: Any, b: Any) -> Any:
        return b if a is None else (a if b is None else choose(a, b))
    return pick


class WindowedTable(Table):
    """The windows of a windowed aggregation (a RocksDB window store with a changelog).

    ``to_stream()`` gives the windowed results (key = group key, value = what ``to()`` writes).

    >>> from streams import SlidingWindows, Topology
    >>> from streams.testing import TopologyTestDriver
    >>> t = Topology("doc_windowed_table")
    >>> rides = t.stream("rides").group_by_key().window(
    ...     SlidingWindows(max_difference=600_000)).count(name="rides-10m", emit="final")
    >>> _ = rides.to_stream().filter(lambda v: v["value"] >= 2).to("busy-drivers")
    >>> with TopologyTestDriver(t) as driver:
    ...     for ts in (0, 60_000, 3_600_000):           # the last one closes the first windows
    ...         driver.pipe("rides", "d1", {}, timestamp=ts)
    ...     driver.read_output("busy-drivers")
    [('d1', {'value': 2, 'window_start': 0, 'window_end': 600000})]
    """
