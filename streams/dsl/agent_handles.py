"""What an agent body touches at run time: its tables and the topics it sends to.

These handles are declared with the topology (``topology.table_store``, ``topology.topic``,
``topology.internal_topic``) and used inside agent bodies. They hold no state themselves: each
call finds the agent processor running the current event through :data:`ACTIVE` and works
on that task's store views and staged outputs (the contract is :class:`AgentRuntime`; the
implementation is :class:`streams.runtime.processors.agents.AgentProc`).
Semantics: :mod:`streams.dsl.agents`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ..serdes import KeySerde, Serde, serde_for
from . import nodes as n
from .builder import InternalBuilder, StoreSpec
from .stream import Stream
from .window_specs import HoppingWindows, TumblingWindows, to_ms

if TYPE_CHECKING:
    from ..state.store_view import StoreView
    from .topology import Topology

__all__ = ["ACTIVE", "AgentRuntime", "AgentTable", "InternalTopic", "TopicRef", "WindowSet",
           "WindowedAgentTable"]


class AgentRuntime(Protocol):
    """What the agent processor running the current event offers the handles."""

    views: dict[str, StoreView]  # the agent's tables in its task, by name
    watching: bool               # the test driver's in-place mutation check is on

    def view(self, table: str) -> Any:
        """The task's view of ``table`` (RuntimeError if the agent does not use it)."""

    def event_time(self) -> int:
        """The current event's timestamp."""

    def stream_time(self) -> int:
        """The task's stream time, with the batch's events handed out so far."""

    def stage(self, topic: str, key: bytes | None, value: bytes | None,
              headers: list[tuple[str, bytes]] | None) -> None:
        """Stage a record with the current event (produced at its boundary)."""

    def origin_header(self) -> tuple[str, bytes]:
        """The current event's origin header, for a record sent to an internal topic."""

    def watch(self, view: StoreView, key: Any, kb: bytes, value: Any) -> None:
        """Remember a handed-out value to check it for in-place changes at the boundary."""


class _Active:
    """The agent processor currently stepping an agent (None outside agents): the runtime sets
    it around each batch it drives."""

    __slots__ = ("proc",)

    def __init__(self) -> None:
        self.proc: AgentRuntime | None = None


ACTIVE = _Active()
_MISSING = object()


def _active(what: str) -> AgentRuntime:
    proc = ACTIVE.proc
    if proc is None:
        raise RuntimeError(f"{what} used outside an agent: tables and topic sends work only "
                           "inside an agent body while it handles an event")
    return proc


class AgentTable:
    """A table an agent reads and writes like a dict (faust's ``app.Table``), kept in RocksDB
    with a changelog and committed with the task's offsets.

    ``balances = topology.table_store("balances", default=lambda: "0.00")`` then, in an agent:
    ``balances[key] = "12.50"``, ``balances[key]``, ``balances.get(key)``, ``key in balances``,
    ``del balances[key]``. ``default``: called for a missing key by ``table[key]`` (not stored
    until assigned); without it a missing key raises KeyError. Values come back as the value
    serde decodes them — a fresh copy: assign a changed value back to keep the change.
    Keys are compared as their serialized bytes (``7`` and ``"7"`` are the same key).
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
            proc = _active(f"table {self.name!r}")
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
        used here, as ``dict.get``)."""
        proc = _active(f"table {self.name!r}")
        view = proc.view(self.name)
        kb = view.key_bytes(key)
        value = view.get_by_bytes(kb, _MISSING)
        if value is _MISSING:
            return default
        if proc.watching:
            proc.watch(view, key, kb, value)
        return value

    def __contains__(self, key: Any) -> bool:
        view = _active(f"table {self.name!r}").view(self.name)
        return view.get_by_bytes(view.key_bytes(key), _MISSING) is not _MISSING

    def __setitem__(self, key: Any, value: Any) -> None:
        """Stage ``value`` for ``key`` (serialized now: a value that cannot be stored fails the
        event). ``None`` deletes, as a tombstone does."""
        proc = ACTIVE.proc
        if proc is None:
            proc = _active(f"table {self.name!r}")
        view = proc.views.get(self.spec.name) or proc.view(self.spec.name)
        view.put(key, value)

    def __delitem__(self, key: Any) -> None:
        view = _active(f"table {self.name!r}").view(self.name)
        kb = view.key_bytes(key)
        if view.get_by_bytes(kb, _MISSING) is _MISSING:
            raise KeyError(key)
        view.put_by_bytes(kb, None)

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value (``default`` if absent, else KeyError)."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(key)
            return default
        del self[key]
        return value

    def tumbling(self, size: Any, *, expires: Any = None) -> WindowedAgentTable:
        """This table as windows of event time ``[start, start + size)`` (faust's
        ``Table.tumbling``). See :class:`WindowedAgentTable`."""
        return WindowedAgentTable(self, TumblingWindows(size=size), expires)

    def hopping(self, size: Any, step: Any, *, expires: Any = None) -> WindowedAgentTable:
        """This table as hopping windows of ``size`` starting every ``step`` (faust's
        ``Table.hopping``). See :class:`WindowedAgentTable`."""
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
        proc = _active(f"table {self.name!r}")
        view = proc.view(self.name)
        for start, _end in self.window.windows_for(proc.event_time()):
            view.put(key, start, value)


class WindowSet:
    """The windows of one key of a :class:`WindowedAgentTable` around the current event."""

    __slots__ = ("table", "key")

    def __init__(self, table: WindowedAgentTable, key: Any) -> None:
        self.table = table
        self.key = key

    def _read(self, ts: int) -> Any:
        table = self.table
        view = _active(f"table {table.name!r}").view(table.name)
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
        """The value of the latest window holding the current event's timestamp."""
        return self._read(_active(f"table {self.table.name!r}").event_time())

    def value(self) -> Any:
        """As :meth:`current` (faust's ``value()`` is relative to the current event)."""
        return self.current()

    def now(self) -> Any:
        """The value of the latest window holding the task's stream time (the largest event
        time seen; this framework never windows by the wall clock)."""
        proc = _active(f"table {self.table.name!r}")
        return self._read(max(proc.stream_time(), proc.event_time()))

    def _apply(self, op: Callable[[Any, Any], Any], other: Any) -> WindowSet:
        table = self.table
        proc = _active(f"table {table.name!r}")
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


class _Sent:
    """What ``TopicRef.send`` returns: an awaitable that is already complete (the record is
    staged with the event), so ``await`` costs no event-loop round trip."""

    __slots__ = ()

    def __await__(self) -> Any:
        return iter(())


_SENT = _Sent()


class TopicRef:
    """A topic an agent sends to: ``await topology.topic("audit").send(key=k, value=v)``.

    The record is staged with the current event and produced at its boundary, with the event's
    timestamp; if the event fails it is never sent. Values: any JSON value, a faust Record, or
    what ``value=`` (a serde spec) encodes. ``config``: topic configs for when the topic is
    created (``{"cleanup.policy": "compact"}`` for a read model keyed by entity).
    """

    def __init__(self, name: str, key: Any = None, value: Any = "any-json",
                 config: dict[str, str] | None = None) -> None:
        self.name = name
        self.key_serde: Serde = KeySerde() if key is None else serde_for(key)
        self.value_serde: Serde = serde_for(value)
        self.config = dict(config or {})  # topic configs used when the topic is created

    def __repr__(self) -> str:
        return f"<topic {self.name!r}>"

    def send(self, *, key: Any = None, value: Any = None,
             headers: Iterable[tuple[str, bytes]] | None = None) -> _Sent:
        """Stage a record for this topic; serialized now (a value that cannot be encoded
        raises here, inside the agent, and fails the event unless caught)."""
        proc = _active(f"topic {self.name!r}")
        proc.stage(self.name, self.key_serde.serialize(key), self.value_serde.serialize(value),
                   list(headers) if headers else None)
        return _SENT


class InternalTopic(TopicRef):
    """An internal topic from one agent to another (:meth:`Topology.internal_topic`): the
    agent→agent form of a repartition. Records sent to it are read by the agent whose source
    it is, in the task of the record's key — e.g. a payment debited in ``from_account``'s
    task credits ``to_account`` in that account's task.

    It is a repartition topic (``<topology>-<name>-repartition``): created by the topic plan
    with as many partitions as the writing agent's sub-topology has tasks (the writer is the
    agent whose function names this object, as for tables), kept without time retention,
    purged once consumed, recreated by ``tables reset``. Each record carries its input
    record's position (the origin header), so after a crash the reading task skips what the
    writing task sends again for input it had already processed: at-least-once replays never
    apply a record twice to the reader's state.

    >>> from streams import Topology
    >>> t = Topology("doc_internal")
    >>> hop = t.internal_topic("hop")
    >>> @t.agent("in", sink=["out"])
    ... async def first(stream):
    ...     async for key, value in stream.items():
    ...         await hop.send(key=value["to"], value=value)
    >>> @t.agent(hop, sink=["out"])
    ... async def second(stream):
    ...     async for key, value in stream.items():
    ...         yield {"at": key}
    >>> t.repartition_topics(), t.output_topics()
    (['doc_internal-hop-repartition'], ['out'])
    >>> from streams.testing import TopologyTestDriver
    >>> with TopologyTestDriver(t) as driver:
    ...     driver.pipe("in", "a", {"to": "b"})
    ...     driver.read_output("out")
    [('b', {'at': 'b'})]
    """

    def __init__(self, topology: Topology, name: str, topic: str, key: Any = None,
                 value: Any = "any-json") -> None:
        super().__init__(topic, key, value)
        self.topology = topology
        self.source: n.SourceNode = topology.builder.add_internal_source(
            name, topic, self.key_serde, self.value_serde)

    def __repr__(self) -> str:
        return f"<internal topic {self.name!r}>"

    def stream(self) -> Stream:
        """The topic's records as a stream (what ``@topology.agent(internal)`` reads)."""
        return Stream(self.topology, self.source)

    def send(self, *, key: Any = None, value: Any = None,
             headers: Iterable[tuple[str, bytes]] | None = None) -> _Sent:
        """Stage a record, with the current event's origin header (see the class)."""
        proc = _active(f"topic {self.name!r}")
        proc.stage(self.name, self.key_serde.serialize(key), self.value_serde.serialize(value),
                   [proc.origin_header(), *(headers or ())])
        return _SENT


