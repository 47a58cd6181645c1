"""The contract between agent bodies and the runtime: :data:`ACTIVE` and :class:`AgentRuntime`.

The handles an agent body uses (:mod:`~streams.dsl.agent_tables`,
:mod:`~streams.dsl.agent_topics`) hold no state themselves: each call finds the agent
processor running the current event through :data:`ACTIVE` and works on that task's store
views and staged outputs. The runtime's :class:`streams.runtime.processors.agents.AgentProc`
implements :class:`AgentRuntime` and sets ``ACTIVE.proc`` around each batch it drives.
Semantics: :mod:`streams.dsl.agents`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..state.store_view import StoreView

__all__ = ["ACTIVE", "AgentRuntime", "active"]


class AgentRuntime(Protocol):
    """What the agent processor running the current event offers the handles."""

    views: dict[str, Any]        # the agent's tables in its task (StoreViews), by name
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


def active(what: str) -> AgentRuntime:
    """The processor running the current event; ``what`` names the caller in the error raised
    outside an agent.

    >>> active("table 'seen'")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    RuntimeError: table 'seen' used outside an agent: tables and topic sends work only inside...
    """
    proc = ACTIVE.proc
    if proc is None:
        raise RuntimeError(f"{what} used outside an agent: tables and topic sends work only "
                           "inside an agent body while it handles an event")
    return proc
