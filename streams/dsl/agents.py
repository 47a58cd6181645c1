"""Faust-style agents: imperative stream logic over a stream, with tables used like dicts.

>>> from streams import Topology
>>> topology = Topology("doc_agents")
>>> seen = topology.table_store("seen", default=int)
>>> @topology.agent("payments", sink=["payment-results"])
... async def settle(stream):
...     async for key, payment in stream.items():
...         if seen[payment["payment_id"]]:
...             continue                        # a duplicate: no effect at all
...         seen[payment["payment_id"]] = 1
...         yield {"payment_id": payment["payment_id"], "status": "COMPLETED"}
>>> topology.output_topics()
['payment-results']
>>> from streams.testing import TopologyTestDriver
>>> with TopologyTestDriver(topology) as driver:
...     driver.pipe("payments", "acc-1", {"payment_id": "p1"})
...     driver.pipe("payments", "acc-1", {"payment_id": "p1"})   # seen: nothing happens
...     driver.read_output("payment-results")
[('acc-1', {'payment_id': 'p1', 'status': 'COMPLETED'})]

Semantics (the runtime is :mod:`streams.runtime.processors.agents`):

* **One instance per task.** Each task (input partition) runs its own instance of the agent
  function, started on the first record after the task is assigned and closed (``aclose``:
  its ``finally`` blocks run) when the task is revoked or closed.
* **Driven inside the batch.** The task steps the agent synchronously through the records of
  the batch it polled: no event-loop round trip per event. ``stream.__anext__`` completes at
  once with the next record of the batch; when the batch is exhausted the agent stays
  suspended there until the next batch of its partition.
* **One event = all or nothing.** The event boundary is the agent asking for the next event
  (faust's ack point). Table writes, ``yield``\\ s and ``topic.send()``\\ s of an event are
  staged and applied at that boundary. If the body raises, the event's staged effects are
  dropped, the record goes to ``<topology>-dlq`` (reason ``processing``, the exception as
  ``error``) and a fresh instance of the agent takes the next record. State and outputs never
  show half an event (faust applies whatever ran before the exception).
* **An agent that returns** has finished its last event normally (its effects are applied); a
  fresh instance starts for the next record. An instance that returns without reading any
  record would never make progress, so the record it was started for goes to the dead letters
  (reason ``agent``).
* **Reads see the event's own writes.** Values handed out are copies: changing a value in place
  without assigning it back does not persist (as in faust); the TopologyTestDriver warns about
  such changes.
* **Forbidden:** awaiting anything the framework did not provide (HTTP, databases,
  ``asyncio.sleep``): it would stall the whole batch and stretch the commit. The event goes to
  the dead letters (reason ``await``) and the instance is restarted. Tables used outside an
  agent raise.
* **``stream.take(n, within=)``** yields lists of up to ``n`` values that never span a poll
  batch, hence never a commit (faust buffers across commits: a crash loses the buffer); a list
  is one event, all or nothing (on failure all its records go to the dead letters).
* **Offsets, changelogs and the commit** are exactly those of the declarative operators: an
  agent's effects are covered by its task's commit (one RocksDB WriteBatch with the offsets).

Differences from faust: ``yield`` sends the value to the agent's sinks *with the current
event's key and timestamp* (faust drops the key); ``topology.topic(name).send()`` is staged
like a table write rather than sent at once; plain (sync) generator functions are agents too
(``for key, value in stream.items(): ...``), and so are plain functions looping over the
stream — Python cannot suspend them inside the ``for``, so a sync instance lives for one
batch: the loop ends with the batch and the next batch starts a fresh instance (keep state in
tables, not in locals).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import nodes as n
from ..serdes import KeySerde, Serde, serde_for

if TYPE_CHECKING:
    from .topology import GroupedStream, Stream, StoreSpec, Topology

__all__ = ["ACTIVE", "Agent", "AgentNode", "AgentTable", "InternalTopic", "TopicRef",
           "WindowSet", "WindowedAgentTable", "define_agent"]


class _Active:
    """The agent processor currently stepping an agent (None outside agents). Tables and topic
    sends find their task through it: the runtime sets it around each batch it drives."""

    __slots__ = ("proc",)

    def __init__(self) -> None:
        self.proc: Any = None


ACTIVE = _Active()
_MISSING = object()


def _active(what: str) -> Any:
    proc = ACTIVE.proc
    if proc is None:
        raise RuntimeError(f"{what} used outside an agent: tables and topic sends work only "
                           "inside an agent body while it handles an event")
    return proc


# -- graph node -----------------------------------------------------------------------------------
@dataclass(eq=False)
class AgentNode(n.Node):
    """An agent: ``fn(stream)`` over its parent's records; its children are its sinks."""

    fn: Callable[..., Any]
    topology: Any = field(repr=False)
    tables: list[str] | None = None  # None: the tables the function names (found lazily)
    sinks: list[str] = field(default_factory=list)

    def store_names(self) -> list[str]:
        if self.tables is None:
            self.tables = _tables_named_by(self.fn, self.topology)
        return list(self.tables)

    def internal_sends(self) -> list[str]:
        """The internal topics (:meth:`Topology.internal_topic`) the function names: the topic
        plan sizes them from this agent's sub-topology."""
        mine = {id(t) for t in self.topology.internal_sends.values()}
        return [ref.name for ref in _named_by(self.fn, lambda o: id(o) in mine)]

    def label(self) -> str:
        tables = ",".join(self.store_names()) or "-"
        return f"agent {self.name} tables={tables} sinks={','.join(self.sinks) or '-'}"

    def value_record(self) -> Any:
        return None


def _tables_named_by(fn: Callable[..., Any], topology: Any) -> list[str]:
    """The agent tables of ``topology`` that ``fn`` (or a function or lambda defined inside it)
    names as a global or a closure variable: the stores its task must hold."""
    mine = {id(t) for t in topology.agent_tables.values()}
    return [t.name for t in _named_by(
        fn, lambda o: isinstance(o, (AgentTable, WindowedAgentTable)) and id(o) in mine)]


def _named_by(fn: Callable[..., Any], wanted: Callable[[Any], bool]) -> list[Any]:
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


# -- tables ---------------------------------------------------------------------------------------
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

    def __init__(self, topology: Topology, spec: StoreSpec,
                 default: Callable[[], Any] | None) -> None:
        self.topology = topology
        self.spec = spec
        self.default = default

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"<agent table {self.name!r}>"

    def __getitem__(self, key: Any) -> Any:
        proc = ACTIVE.proc  # inlined lookups: this runs per event in the hot path
        view = _active(f"table {self.name!r}").view(self.name) if proc is None else (
            proc.views.get(self.spec.name) or proc.view(self.spec.name))
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
        view = _active(f"table {self.name!r}").view(self.name) if proc is None else (
            proc.views.get(self.spec.name) or proc.view(self.spec.name))
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
        from .window_specs import TumblingWindows

        return WindowedAgentTable(self, TumblingWindows(size=size), expires)

    def hopping(self, size: Any, step: Any, *, expires: Any = None) -> WindowedAgentTable:
        """This table as hopping windows of ``size`` starting every ``step`` (faust's
        ``Table.hopping``). See :class:`WindowedAgentTable`."""
        from .window_specs import HoppingWindows

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
        from .topology import StoreSpec
        from .window_specs import _ms

        spec = table.spec
        self.window = window
        self.expires_ms = window.size_ms if expires is None else _ms(expires)
        if self.expires_ms < 0:
            raise ValueError(f"expires must be >= 0, got {self.expires_ms} ms")
        # the same table, now a window store (faust wraps the table the same way)
        self.spec = StoreSpec(spec.name, spec.value_serde, spec.changelog, "window",
                              spec.key_serde, window)
        table.topology.stores[spec.name] = self.spec
        table.spec = self.spec
        self.table = table
        self.default = table.default
        table.topology.agent_tables[spec.name] = self  # type: ignore[assignment]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def topology(self) -> Topology:
        return self.table.topology

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

    def _windows(self, ts: int) -> list[tuple[int, int]]:
        return self.window.windows_for(ts)


class WindowSet:
    """The windows of one key of a :class:`WindowedAgentTable` around the current event."""

    __slots__ = ("table", "key")

    def __init__(self, table: WindowedAgentTable, key: Any) -> None:
        self.table = table
        self.key = key

    def _read(self, ts: int) -> Any:
        table = self.table
        view = _active(f"table {table.name!r}").view(table.name)
        windows = table._windows(ts)
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
        for start, _end in table._windows(proc.event_time()):
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


# -- topics ---------------------------------------------------------------------------------------
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

    def __init__(self, topology: Topology, name: str, key: Any = None, value: Any = "any-json",
                 config: dict[str, str] | None = None) -> None:
        self.topology = topology
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
        super().__init__(topology, topic, key, value)
        self.short_name = name
        self.source = n.SourceNode(f"{name}-source", topic, self.key_serde, self.value_serde,
                                   None, internal=True)
        topology.sources.append(self.source)

    def __repr__(self) -> str:
        return f"<internal topic {self.name!r}>"

    def stream(self) -> Stream:
        """The topic's records as a stream (what ``@topology.agent(internal)`` reads)."""
        from .topology import Stream

        return Stream(self.topology, self.source)

    def send(self, *, key: Any = None, value: Any = None,
             headers: Iterable[tuple[str, bytes]] | None = None) -> _Sent:
        """Stage a record, with the current event's origin header (see the class)."""
        proc = _active(f"topic {self.name!r}")
        proc.stage(self.name, self.key_serde.serialize(key), self.value_serde.serialize(value),
                   [proc.origin_header(), *(headers or ())])
        return _SENT


# -- the decorator --------------------------------------------------------------------------------
class Agent:
    """What ``@topology.agent`` returns: the function (still callable as is) with its node."""

    def __init__(self, fn: Callable[..., Any], node: AgentNode) -> None:
        self.fn = fn
        self.node = node
        self.name = node.name
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<agent {self.name!r}>"


def define_agent(topology: Topology, source: str | Stream | GroupedStream, *,
                 name: str | None, key: Any, value: Any, timestamp: Any,
                 group_by: Callable[[Any], Any] | None, sink: Iterable[str | TopicRef],
                 tables: Iterable[Any] | None, validate: Callable[..., Any] | None = None
                 ) -> Callable[[Callable[..., Any]], Agent]:
    """The decorator behind :meth:`Topology.agent`."""
    from .topology import GroupedStream, Stream

    def decorate(fn: Callable[..., Any]) -> Agent:
        if not callable(fn):
            raise TypeError(f"@agent decorates a function, got {fn!r}")
        if inspect.isclass(fn):
            raise TypeError(f"@agent decorates a function (async def, generator or plain "
                            f"function over the stream), got {fn!r}")
        agent_name = name or fn.__name__
        if agent_name in topology.agents:
            raise ValueError(f"agent {agent_name!r} is defined twice in topology "
                             f"{topology.name!r}; give one a distinct name=")
        if validate is not None and not isinstance(source, str):
            raise ValueError(f"agent {agent_name!r}: validate= applies to a topic source; "
                             "validate the stream where it is read (topology.stream(...))")
        stream: Stream | GroupedStream
        if isinstance(source, str):
            stream = topology.stream(source, key=key, value=value, timestamp=timestamp,
                                     validate=validate)
        elif isinstance(source, InternalTopic):
            if source.topology is not topology:
                raise ValueError(f"{source!r} belongs to topology {source.topology.name!r}")
            stream = source.stream()
        elif isinstance(source, (Stream, GroupedStream)):
            stream = source
        else:
            raise TypeError(f"an agent reads a topic name, an internal_topic, a Stream or a "
                            f"GroupedStream, got {source!r}")
        if group_by is not None:
            if isinstance(stream, GroupedStream):
                raise ValueError("group_by= on an already grouped stream")
            stream = stream.group_by(group_by, name=agent_name)
        if isinstance(stream, GroupedStream):
            head = stream._grouped(agent_name)
        elif stream.rekeyed:  # the key changed since the last partitioning: co-partition first
            head = stream.group_by_key(name=agent_name)._grouped(agent_name)
        else:
            head = stream.node
        table_names = None
        if tables is not None:
            table_names = []
            for t in tables:
                t_name = t if isinstance(t, str) else t.name
                if t_name not in topology.agent_tables:
                    raise ValueError(f"agent {agent_name!r}: {t_name!r} is not a table_store "
                                     f"of topology {topology.name!r}")
                table_names.append(t_name)
        node = AgentNode(agent_name, fn=fn, topology=topology, tables=table_names)
        head.add_child(node)
        for target in sink:
            ref = target if isinstance(target, TopicRef) else topology.topic(target)
            node.sinks.append(ref.name)
            node.add_child(n.SinkNode(f"{agent_name}-sink-{ref.name}", ref.name, ref.key_serde,
                                      ref.value_serde))
        topology.agents[agent_name] = node
        return Agent(fn, node)

    return decorate
