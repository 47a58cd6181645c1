"""Tables an agent body reads and writes like dicts (faust's ``app.Table``), plain or windowed.

Declared with ``topology.table_store(...)``; used only inside agent bodies, where they work on
the current task's store (:mod:`~streams.dsl.agent_context`). Semantics:
:mod:`streams.dsl.agents`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .agent_context import ACTIVE, active
from .builder import InternalBuilder, StoreSpec
from .window_specs import HoppingWindows, TumblingWindows, to_ms

__all__ = ["AgentTable", "WindowSet", "WindowedAgentTable"]

_MISSING = object()


class AgentTable:
    """A table an agent reads and writes like a dict (faust's ``app.Table``), kept in RocksDB
    with a changelog and committed with the task's offsets.

    ``balances = topology.table_store("balances", default=lambda: "0.00")`` then, in an agent:
    ``balances[key] = "12.50"``, ``balances[key]``, ``balances.get(key)``, ``key in balances``,
    ``del balances[key]``. ``default``: called for a missing key by ``table[key]`` (not stored
    until assigned); without it a missing key raises KeyError. Values come back as the value
    serde decodes them — a fresh copy: assign a changed value back to keep the change.
    Keys are compared as their serialized bytes (``7`` and ``"7"`` are the same key).

    >>> from streams import Topology
    >>> from streams.testing import TopologyTestDriver
    >>> t = Topology("doc_agent_table")
    >>> balances = t.table_store("balances", default=lambda: 0)
    >>> @t.agent("moves", sink=["seen"])
    ... async def move(stream):
    ...     async for account, move in stream.items():
    ...         if move["op"] == "close":
    ...             del balances[account]
    ...         else:
    ...             balances[account] = balances[account] + move["amount"]
    ...         yield account in balances
    >>> with TopologyTestDriver(t) as driver:
    ...     driver.pipe("moves", "a", {"op": "add", "amount": 5})
    ...     driver.pipe("moves", "b", {"op": "add", "amount": 1})
    ...     driver.pipe("moves", "b", {"op": "close"})
    ...     driver.table("balances"), driver.read_output("seen")
    ({'a': 5}, [('a', True), ('b', True), ('b', False)])
    """

    def __init__(self, builder: InternalBuilder, spec: StoreSpec,
                 default: Callable[[], Any] | None) -> None:
        self.builder = builder
        self.spec = spec
        self.default = default

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"<agent table {self.name!r}>"

    def __getitem__(self, key: Any) -> Any:
        proc = ACTIVE.proc  # inlined lookups: this runs per event in the hot path
        if proc is None:
            proc = active(f"table {self.name!r}")
        view = proc.views.get(self.spec.name) or proc.view(self.spec.name)
        kb = view.key_bytes(key)
        value = view.get_by_bytes(kb, _MISSING)
        if value is _MISSING:
            if self.default is None:
                raise KeyError(key)
            return self.default()
        if proc.watching:
            proc.watch(view, key, kb, value)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        """The stored value of ``key``, else ``default`` (the table's ``default=`` is not
        used here, as ``dict.get``).

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_agent_table_get")
        >>> names = t.table_store("names", default=lambda: "?")
        >>> @t.agent("in", sink=["out"])
        ... async def greet(stream):
        ...     async for key, _value in stream.items():
        ...         yield [names.get(key), names.get(key, "stranger"), names[key]]
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("in", "u1", {})
        ...     driver.read_output("out")
        [('u1', [None, 'stranger', '?'])]
        """
        proc = active(f"table {self.name!r}")
        view = proc.view(self.name)
        kb = view.key_bytes(key)
        value = view.get_by_bytes(kb, _MISSING)
        if value is _MISSING:
            return default
        if proc.watching:
            proc.watch(view, key, kb, value)
        return value

    def __contains__(self, key: Any) -> bool:
        view = active(f"table {self.name!r}").view(self.name)
        return view.get_by_bytes(view.key_bytes(key), _MISSING) is not _MISSING

    def __setitem__(self, key: Any, value: Any) -> None:
        """Stage ``value`` for ``key`` (serialized now: a value that cannot be stored fails the
        event). ``None`` deletes, as a tombstone does."""
        proc = ACTIVE.proc
        if proc is None:
            proc = active(f"table {self.name!r}")
        view = proc.views.get(self.spec.name) or proc.view(self.spec.name)
        view.put(key, value)

    def __delitem__(self, key: Any) -> None:
        view = active(f"table {self.name!r}").view(self.name)
        kb = view.key_bytes(key)
        if view.get_by_bytes(kb, _MISSING) is _MISSING:
            raise KeyError(key)
        view.put_by_bytes(kb, None)

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value (``default`` if absent, else KeyError).

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_agent_table_pop")
        >>> pending = t.table_store("pending")
        >>> @t.agent("events", sink=["done"])
        ... async def match(stream):
        ...     async for key, event in stream.items():
        ...         if event["type"] == "start":
        ...             pending[key] = event["at"]
        ...         else:
        ...             yield {"took": event["at"] - pending.pop(key, event["at"])}
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("events", "job", {"type": "start", "at": 10})
        ...     driver.pipe("events", "job", {"type": "end", "at": 25})
        ...     driver.read_output("done"), driver.table("pending")
        ([('job', {'took': 15})], {})
        """
        value = self.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(key)
            return default
        del self[key]
        return value

    def tumbling(self, size: Any, *, expires: Any = None) -> WindowedAgentTable:
        """This table as windows of event time ``[start, start + size)`` (faust's
        ``Table.tumbling``; ``expires``: see :class:`WindowedAgentTable`).

        >>> from streams import Topology
        >>> t = Topology("doc_agent_tumbling")
        >>> t.table_store("clicks", default=int).tumbling(60_000)
        <windowed agent table 'clicks' (tumbling 60000 ms, grace 0 ms)>
        """
        return WindowedAgentTable(self, TumblingWindows(size=size), expires)

    def hopping(self, size: Any, step: Any, *, expires: Any = None) -> WindowedAgentTable:
        """This table as hopping windows of ``size`` starting every ``step`` (faust's
        ``Table.hopping``), each event counting in every window that holds it.

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_agent_hopping")
        >>> clicks = t.table_store("clicks", default=int).hopping(10_000, 5_000)
        >>> @t.agent("clicks")
        ... async def count(stream):
        ...     async for user, _click in stream.items():
        ...         clicks[user] += 1
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("clicks", "ann", {}, timestamp=7_000)
        ...     driver.table("clicks")
        {'ann': {0: 1, 5000: 1}}
        """
        return WindowedAgentTable(self, HoppingWindows(size=size, advance=step), expires)


class WindowedAgentTable:
    """A windowed agent table, as faust users know it: ``table[key]`` is a :class:`WindowSet`
    of the windows of *the current event's timestamp* (event time, not the wall clock).

    ``counts = topology.table_store("clicks", default=int).tumbling(60_000)`` then, in an
    agent: ``counts[key] += 1`` (every window holding the event), ``counts[key].current()``
    (the value of the latest such window), ``counts[key] = 5`` (set every such window).

    A window's value is deleted once stream time has passed its end by ``expires`` (default:
    the window size), so state stays bounded; stream time is the task's, as for windowed
    operators (never the wall clock).

    >>> from streams import Topology
    >>> from streams.testing import TopologyTestDriver
    >>> t = Topology("doc_windowed_agent_table")
    >>> per_minute = t.table_store("per-minute", default=int).tumbling(60_000)
    >>> @t.agent("clicks", sink=["counts"])
    ... async def count(stream):
    ...     async for user, _click in stream.items():
    ...         per_minute[user] += 1
    ...         yield per_minute[user].current()
    >>> with TopologyTestDriver(t) as driver:
    ...     for ts in (1_000, 2_000, 61_000):
    ...         driver.pipe("clicks", "ann", {}, timestamp=ts)
    ...     driver.read_output("counts")
    [('ann', 1), ('ann', 2), ('ann', 1)]
    """

    def __init__(self, table: AgentTable, window: Any, expires: Any) -> None:
        self.window = window
        self.expires_ms = window.size_ms if expires is None else to_ms(expires)
        if self.expires_ms < 0:
            raise ValueError(f"expires must be >= 0, got {self.expires_ms} ms")
        # the same table, now a window store (faust wraps the table the same way)
        self.spec = table.builder.window_agent_table(table.spec.name, window, self)
        table.spec = self.spec
        self.table = table
        self.default = table.default

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"<windowed agent table {self.name!r} ({self.window.describe()})>"

    def __getitem__(self, key: Any) -> WindowSet:
        return WindowSet(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, WindowSet):  # ``t[k] += 1`` assigns the WindowSet back: done
            return
        proc = active(f"table {self.name!r}")
        view = proc.view(self.name)
        for start, _end in self.window.windows_for(proc.event_time()):
            view.put(key, start, value)


class WindowSet:
    """The windows of one key of a :class:`WindowedAgentTable` around the current event:
    ``+=``, ``-=`` and ``*=`` update every window holding the event; :meth:`current` and
    :meth:`now` read one.

    >>> from streams import Topology
    >>> from streams.testing import TopologyTestDriver
    >>> t = Topology("doc_window_set")
    >>> stock = t.table_store("stock", default=lambda: 10).tumbling(60_000)
    >>> @t.agent("orders")
    ... async def reserve(stream):
    ...     async for item, order in stream.items():
    ...         stock[item] -= order["qty"]
    ...         stock[item] *= 2
    >>> with TopologyTestDriver(t) as driver:
    ...     driver.pipe("orders", "tea", {"qty": 3}, timestamp=0)
    ...     driver.table("stock")
    {'tea': {0: 14}}
    """

    __slots__ = ("table", "key")

    def __init__(self, table: WindowedAgentTable, key: Any) -> None:
        self.table = table
        self.key = key

    def _read(self, ts: int) -> Any:
        table = self.table
        view = active(f"table {table.name!r}").view(table.name)
        windows = table.window.windows_for(ts)
        if not windows:
            raise ValueError(f"timestamp {ts} is in no window of table {table.name!r}")
        value = view.get(self.key, windows[-1][0], _MISSING)
        if value is _MISSING:
            if table.default is None:
                raise KeyError(self.key)
            return table.default()
        return value

    def current(self) -> Any:
        """The value of the latest window holding the current event's timestamp.

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_window_set_current")
        >>> views = t.table_store("views", default=int).hopping(10_000, 5_000)
        >>> @t.agent("views", sink=["latest-window"])
        ... async def count(stream):
        ...     async for page, _view in stream.items():
        ...         views[page] += 1
        ...         yield views[page].current()       # the latest window holding the view
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("views", "home", {}, timestamp=4_000)
        ...     driver.pipe("views", "home", {}, timestamp=6_000)
        ...     driver.read_output("latest-window"), driver.table("views")
        ([('home', 1), ('home', 1)], {'home': {0: 2, 5000: 1}})
        """
        return self._read(active(f"table {self.table.name!r}").event_time())

    def value(self) -> Any:
        """As :meth:`current` (faust's ``value()`` is relative to the current event).

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_window_set_value")
        >>> totals = t.table_store("totals", default=int).tumbling(60_000)
        >>> @t.agent("sales", sink=["running"])
        ... async def add(stream):
        ...     async for shop, sale in stream.items():
        ...         totals[shop] += sale["amount"]
        ...         yield totals[shop].value()
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("sales", "s1", {"amount": 3}, timestamp=0)
        ...     driver.pipe("sales", "s1", {"amount": 4}, timestamp=1)
        ...     driver.read_output("running")
        [('s1', 3), ('s1', 7)]
        """
        return self.current()

    def now(self) -> Any:
        """The value of the latest window holding the task's stream time (the largest event
        time seen; this framework never windows by the wall clock).

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_window_set_now")
        >>> clicks = t.table_store("clicks", default=int).tumbling(60_000)
        >>> @t.agent("clicks", sink=["out"])
        ... async def count(stream):
        ...     async for user, _click in stream.items():
        ...         clicks[user] += 1
        ...         yield {"event": clicks[user].current(), "now": clicks[user].now()}
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("clicks", "ann", {}, timestamp=61_000)
        ...     driver.pipe("clicks", "ann", {}, timestamp=1_000)    # out of order
        ...     driver.read_output("out")
        [('ann', {'event': 1, 'now': 1}), ('ann', {'event': 1, 'now': 1})]
        """
        proc = active(f"table {self.table.name!r}")
        return self._read(max(proc.stream_time(), proc.event_time()))

    def _apply(self, op: Callable[[Any, Any], Any], other: Any) -> WindowSet:
        table = self.table
        proc = active(f"table {table.name!r}")
        view = proc.view(table.name)
        for start, _end in table.window.windows_for(proc.event_time()):
            current = view.get(self.key, start, _MISSING)
            if current is _MISSING:
                if table.default is None:
                    raise KeyError(self.key)
                current = table.default()
            view.put(self.key, start, op(current, other))
        return self

    def __iadd__(self, other: Any) -> WindowSet:
        return self._apply(lambda a, b: a + b, other)

    def __isub__(self, other: Any) -> WindowSet:
        return self._apply(lambda a, b: a - b, other)

    def __imul__(self, other: Any) -> WindowSet:
        return self._apply(lambda a, b: a * b, other)
