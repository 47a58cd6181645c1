"""Topics an agent body sends to: :class:`TopicRef` and the agent→agent :class:`InternalTopic`.

Declared with ``topology.topic(...)`` / ``topology.internal_topic(...)``; a send is staged with
the current event (:mod:`~streams.dsl.agent_context`). Semantics: :mod:`streams.dsl.agents`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..serdes import KeySerde, Serde, serde_for
from . import nodes as n
from .agent_context import active
from .stream import Stream

if TYPE_CHECKING:
    from .topology import Topology

__all__ = ["InternalTopic", "TopicRef"]


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

    >>> from streams import Topology
    >>> Topology("doc_topic_ref").topic("balances", config={"cleanup.policy": "compact"})
    <topic 'balances'>
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
        raises here, inside the agent, and fails the event unless caught).

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_topic_send")
        >>> audit = t.topic("audit")
        >>> @t.agent("payments")
        ... async def check(stream):
        ...     async for key, payment in stream.items():
        ...         await audit.send(key=key, value=payment, headers=[("by", b"check")])
        ...         if payment["amount"] < 0:
        ...             raise ValueError("negative amount")     # the event's send is dropped
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("payments", "p1", {"amount": 5})
        ...     driver.pipe("payments", "p2", {"amount": -1})
        ...     [(r.key, r.value, r.headers) for r in driver.read_records("audit")]
        [(b'p1', b'{"amount":5}', [('by', b'check')])]
        """
        proc = active(f"topic {self.name!r}")
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
        """The topic's records as a stream (what ``@topology.agent(internal)`` reads).

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_internal_stream")
        >>> hop = t.internal_topic("hop")
        >>> @t.agent("in")
        ... async def forward(stream):
        ...     async for key, value in stream.items():
        ...         await hop.send(key=value["to"], value=value)
        >>> _ = hop.stream().map(lambda v: {"arrived": v["to"]}).to("out")
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("in", "a", {"to": "b"})
        ...     driver.read_output("out")
        [('b', {'arrived': 'b'})]
        """
        return Stream(self.topology, self.source)

    def send(self, *, key: Any = None, value: Any = None,
             headers: Iterable[tuple[str, bytes]] | None = None) -> _Sent:
        """Stage a record, with the current event's origin header (see the class): the
        reading task skips a record it has already applied when the writer replays.

        >>> from streams import Topology
        >>> from streams.testing import TopologyTestDriver
        >>> t = Topology("doc_internal_send")
        >>> credits = t.internal_topic("credits")
        >>> @t.agent("payments")
        ... async def debit(stream):
        ...     async for _from, payment in stream.items():
        ...         await credits.send(key=payment["to"], value=payment["amount"])
        >>> with TopologyTestDriver(t) as driver:
        ...     driver.pipe("payments", "acc-1", {"to": "acc-2", "amount": "5.00"})
        ...     [(r.key, r.value, [name for name, _ in r.headers])
        ...      for r in driver.read_records("doc_internal_send-credits-repartition")]
        [(b'acc-2', b'"5.00"', ['streams-origin'])]
        """
        proc = active(f"topic {self.name!r}")
        proc.stage(self.name, self.key_serde.serialize(key), self.value_serde.serialize(value),
                   [proc.origin_header(), *(headers or ())])
        return _SENT
