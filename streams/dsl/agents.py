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

This module declares agents (``@topology.agent``); the handles their bodies use are in
:mod:`streams.dsl.agent_tables` and :mod:`streams.dsl.agent_topics`, the runtime in
:mod:`streams.runtime.processors.agents`. Semantics:

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
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import nodes as n
from .agent_topics import InternalTopic, TopicRef
from .grouped import GroupedStream
from .stream import Stream

if TYPE_CHECKING:
    from .topology import Topology

__all__ = ["Agent", "define_agent"]


class Agent:
    """What ``@topology.agent`` returns: the function (still callable as is) with its node.

    >>> from streams import Topology
    >>> t = Topology("doc_agent_object")
    >>> @t.agent("in")
    ... async def echo(stream):
    ...     async for value in stream:
    ...         yield value
    >>> echo.name, echo.node.label()
    ('echo', 'agent echo tables=- sinks=-')
    """

    def __init__(self, fn: Callable[..., Any], node: n.AgentNode) -> None:
        self.fn = fn
        self.node = node
        self.name = node.name
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<agent {self.name!r}>"


def define_agent(topology: Topology, source: str | Stream | GroupedStream | InternalTopic, *,
                 name: str | None, key: Any, value: Any, timestamp: Any,
                 group_by: Callable[[Any], Any] | None, sink: Iterable[str | TopicRef],
                 tables: Iterable[Any] | None, validate: Callable[..., Any] | None = None
                 ) -> Callable[[Callable[..., Any]], Agent]:
    """The decorator behind :meth:`Topology.agent`."""
    builder = topology.builder

    def decorate(fn: Callable[..., Any]) -> Agent:
        if not callable(fn):
            raise TypeError(f"@agent decorates a function, got {fn!r}")
        if inspect.isclass(fn):
            raise TypeError(f"@agent decorates a function (async def, generator or plain "
                            f"function over the stream), got {fn!r}")
        agent_name = name or fn.__name__
        if agent_name in builder.agents:
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
            head = stream.grouping.node(agent_name)
        else:  # a key changed since the last partitioning is co-partitioned first
            head = builder.grouping(stream.node, name=agent_name,
                                    repartition=stream.rekeyed).node(agent_name)
        table_names = None
        if tables is not None:
            table_names = []
            for t in tables:
                t_name = t if isinstance(t, str) else t.name
                if t_name not in builder.agent_tables:
                    raise ValueError(f"agent {agent_name!r}: {t_name!r} is not a table_store "
                                     f"of topology {topology.name!r}")
                table_names.append(t_name)
        node = n.AgentNode(agent_name, fn=fn, agent_tables=builder.agent_tables,
                           internal_topics=builder.internal_sends, tables=table_names)
        head.add_child(node)
        for target in sink:
            ref = target if isinstance(target, TopicRef) else topology.topic(target)
            node.sinks.append(ref.name)
            node.add_child(n.SinkNode(f"{agent_name}-sink-{ref.name}", ref.name, ref.key_serde,
                                      ref.value_serde))
        builder.agents[agent_name] = node
        return Agent(fn, node)

    return decorate
