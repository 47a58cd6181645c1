"""What an agent function receives: the stream facade over its task's batch.

Every way of reading the stream (values, ``items()``, ``events()``, ``take(n)``; ``async for``
or a plain ``for``) is one :class:`_Reader`: a ``pull`` that ends the current event and hands
out the next one's record(s) (:meth:`AgentProc.next_record` / :meth:`AgentProc.next_chunk`,
None once the batch is exhausted) and a ``shape`` that turns them into what the agent gets.
An ``__anext__`` is a generator-based coroutine that returns the next event at once, or yields
:data:`WAITING` up to the processor when the batch is exhausted (the agent stays suspended
there until the next batch); a sync iteration simply ends with the batch.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from .base import Rec

if TYPE_CHECKING:
    from .agents import AgentProc

__all__ = ["WAITING", "AgentEvent", "AgentStream"]

WAITING: Any = object()  # yielded by an __anext__: "no record left in this batch"


class AgentEvent:
    """The record the agent is handling (``stream.current_event``): ``key``, ``value``,
    ``timestamp`` (event time, epoch ms), ``headers``, ``topic``, ``partition``, ``offset``
    (of the record the task consumed; after a repartition, of the internal topic's record)."""

    __slots__ = ("_rec",)

    def __init__(self, rec: Rec) -> None:
        self._rec = rec

    key = property(lambda self: self._rec.key)
    value = property(lambda self: self._rec.value)
    timestamp = property(lambda self: self._rec.ts)
    headers = property(lambda self: list(self._rec.raw.headers or ()))
    topic = property(lambda self: self._rec.raw.topic)
    partition = property(lambda self: self._rec.raw.partition)
    offset = property(lambda self: self._rec.raw.offset)

    def __repr__(self) -> str:
        return (f"AgentEvent(topic={self.topic!r}, partition={self.partition}, "
                f"offset={self.offset}, key={self.key!r}, timestamp={self.timestamp})")


# What each reading hands out per event (attrgetters: no Python frame per record).
_VALUE: Callable[[Rec], Any] = attrgetter("value")
_ITEM: Callable[[Rec], Any] = attrgetter("key", "value")


def _values(chunk: list[Rec]) -> list[Any]:
    return [rec.value for rec in chunk]


@types.coroutine
def _next(pull: Callable[[], Any], shape: Callable[[Any], Any]) -> Any:
    got = pull()
    while got is None:
        yield WAITING
        got = pull()
    return shape(got)


class _Reader:
    """One way of reading the batch, for ``async for`` and a plain ``for`` alike."""

    __slots__ = ("_pull", "_shape")

    def __init__(self, pull: Callable[[], Any], shape: Callable[[Any], Any]) -> None:
        self._pull = pull
        self._shape = shape

    def __aiter__(self) -> _Reader:
        return self

    def __anext__(self) -> Any:
        return _next(self._pull, self._shape)

    def __iter__(self) -> Iterator[Any]:
        pull, shape = self._pull, self._shape
        while (got := pull()) is not None:
            yield shape(got)


class AgentStream:
    """What the agent function receives: ``async for value in stream``, ``async for key,
    value in stream.items()``, ``stream.events()`` (:class:`AgentEvent`\\ s), the same with a
    plain ``for`` in sync generator agents, and ``stream.current_event``."""

    __slots__ = ("_proc",)

    def __init__(self, proc: AgentProc) -> None:
        self._proc = proc

    # async iteration: each __anext__ is a generator-based coroutine (no event loop involved)
    def __aiter__(self) -> AgentStream:
        return self

    def __anext__(self) -> Any:
        return _next(self._proc.next_record, _VALUE)

    def items(self) -> _Reader:
        """(key, value) per event: ``async for key, value in stream.items()``."""
        return _Reader(self._proc.next_record, _ITEM)

    def events(self) -> _Reader:
        """:class:`AgentEvent` per event: ``async for event in stream.events()``."""
        return _Reader(self._proc.next_record, AgentEvent)

    # sync iteration (generator agents): ends with the batch
    def __iter__(self) -> Iterator[Any]:
        return iter(_Reader(self._proc.next_record, _VALUE))

    @property
    def current_event(self) -> AgentEvent | None:
        rec = self._proc.event
        return None if rec is None else AgentEvent(rec)

    def take(self, max_: int, within: Any = None) -> _Reader:
        """Lists of up to ``max_`` values: ``async for values in stream.take(100, within=1)``.

        A list never spans a poll batch — so never a commit (faust's ``take`` buffers across
        them, and a crash after the commit loses the buffer) — and one list is one event: its
        effects are applied together, and if the body raises every record of the list goes to
        the dead letters. ``within`` is accepted for faust compatibility; a list is complete at
        ``max_`` values or at the end of the batch, whichever comes first."""
        if not isinstance(max_, int) or isinstance(max_, bool) or max_ < 1:
            raise ValueError(f"take() needs a positive number of values, got {max_!r}")
        proc = self._proc
        return _Reader(lambda: proc.next_chunk(max_), _values)

    def noack(self, *_args: Any, **_kwargs: Any) -> Any:
        raise NotImplementedError(
            "stream.noack() would acknowledge events before they are processed; agents here "
            "commit an event only when it is complete")

    take_events = take_with_timestamp = noack
