"""The runtime of Faust-style agents: the task drives the agent's coroutine through its batch.

The user-facing semantics are in :mod:`streams.dsl.agents`; this module is how they hold. The
stream the agent function iterates is :mod:`.agent_stream`; the table and topic handles reach
the processor through :data:`streams.dsl.agent_context.ACTIVE`.

**Driving.** One :class:`AgentProc` per task holds the agent instance (an async generator, a
coroutine or a sync generator). ``on_batch`` steps it by hand — ``asend``'s awaitable is
advanced with ``send(None)`` — instead of scheduling it on the event loop: the stream's
``__anext__`` is a generator-based coroutine that *returns* the next record of the batch at
once, so a whole batch runs as plain function calls. When the batch is exhausted it yields the
``WAITING`` marker up to the processor, which returns with the agent suspended there;
the next batch resumes it. Anything else reaching the processor through ``send(None)`` was
yielded by an awaitable the framework did not provide (a future, ``asyncio.sleep``): the event
fails with reason ``await``.

**Events.** Asking for the next record is the event boundary (faust's ack point). While an
event runs, every table the agent may use holds a savepoint (``StoreView.begin``) and its
``yield``\\ s / ``topic.send``\\ s are staged here, already serialized. At the boundary the
savepoints are released and the staged records handed to the task in order; when the body
raises, the savepoints roll back, the staged records are dropped, the record goes to the dead
letters and the instance is closed: the next record starts a fresh one. Outputs carry the
event's key (for ``yield``) and timestamp.

**Commit.** Nothing here commits: the table views, outputs and offsets are the task's, so an
agent's effects go out with the task's commit exactly as the declarative operators' do.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator
from typing import Any

from ...dsl import nodes as n
from ...dsl.agent_context import ACTIVE
from ...dsl.agent_tables import WindowedAgentTable
from ...serdes import MAX_RECORD_BYTES
from ...state.meta import ORIGIN_HEADER, encode_origin
from ...state.store_view import StoreView
from ..context import ProcessorContext
from ..record_limits import headers_bytes, too_large
from .agent_stream import WAITING, AgentEvent, AgentStream
from .base import STORE_FAILURES, Processor, Rec, ShapeError, describe_error, what

__all__ = ["AgentAwaitError", "AgentEvent", "AgentProc", "AgentStream"]

_EMPTY: list[Rec] = []
_ASYNC_GEN, _CORO, _SYNC_GEN = 0, 1, 2
# Records one event may stage: a body that yields in an endless loop fails its event instead
# of filling the worker's memory.
MAX_STAGED_PER_EVENT = 100_000


class AgentAwaitError(RuntimeError):
    """The agent awaited something the framework did not provide (dead-letter reason
    ``await``)."""


class AgentProc(Processor):
    """Runs one agent instance in one task (see the module docstring)."""

    def __init__(self, node: n.Node, ctx: ProcessorContext) -> None:
        super().__init__(node, ctx)
        agent: n.AgentNode = node  # type: ignore[assignment]
        self.fn = agent.fn
        self.name = agent.name
        # the agent's tables in this task; the table handles look them up per event
        self.views: dict[str, StoreView] = {s: ctx.store(s) for s in agent.store_names()}
        self._view_list = list(self.views.values())
        self._sinks = [c for c in agent.children if isinstance(c, n.SinkNode)]
        self._windowed = [(s, table) for s in self.views
                          if isinstance(table := agent.agent_tables.get(s), WindowedAgentTable)]
        if self._windowed:
            ctx.on_stream_time(self._expire_windows)
        ctx.on_close(self.close)
        self._kind = (_ASYNC_GEN if inspect.isasyncgenfunction(self.fn) else
                      _CORO if inspect.iscoroutinefunction(self.fn) else _SYNC_GEN)
        if self._kind == _SYNC_GEN and not inspect.isgeneratorfunction(self.fn):
            self.fn = _as_generator(self.fn)  # a plain function: runs until its loop ends
        self._inst: Any = None      # the agent instance (async gen, coroutine or generator)
        self._aw: Any = None        # the async generator's __anext__ awaitable in flight
        self._recs: list[Rec] = _EMPTY
        self._i = 0                 # next record of the batch to hand out
        self._seen_max, self._seen_upto = -1, 0  # stream time with _recs[:_seen_upto]
        self._clock: Any = None  # the batch's clock (ProcessorContext.batch_clock)
        self._first = 0             # the current event's first record (take() events hold several)
        self.event: Rec | None = None  # the record the agent is handling
        self._took = False          # whether the instance has read a record
        self._staged: list[tuple[str, bytes | None, bytes | None, list | None]] = []
        self.watching = False       # the test driver turns on in-place mutation checks
        self._watched: list[tuple[StoreView, Any, bytes, Any, bytes | None]] = []
        self._origin_pos: tuple[str, int, int] | None = None
        self._origin_index = 0

    # -- the services tables and topics use (streams.dsl.agent_context.AgentRuntime) --------------
    def view(self, table: str) -> Any:
        try:
            return self.views[table]
        except KeyError:
            raise RuntimeError(
                f"table {table!r} is not available to agent {self.name!r}: name it in the agent "
                f"function or pass tables=[...] to @topology.agent") from None

    def event_time(self) -> int:
        rec = self.event
        if rec is None:
            raise RuntimeError(f"agent {self.name!r}: a windowed table needs the current "
                               "event's time, and there is no current event")
        return rec.ts

    def stream_time(self) -> int:
        """The task's stream time including the batch's events handed out so far (the task
        advances its own after the batch)."""
        # Extended incrementally: windowed tables ask once per event. The batch clock is the
        # task's notion of event time (behind a repartition: the watermark), as for windows.
        recs, seen, clock = self._recs, self._seen_max, self._clock
        for i in range(self._seen_upto, min(self._i, len(recs))):
            seen = clock(recs[i])
        self._seen_max, self._seen_upto = seen, max(self._seen_upto, self._i)
        return max(self.ctx.stream_time, seen)

    def stage(self, topic: str, key: bytes | None, value: bytes | None,
              headers: list | None) -> None:
        if self.event is None:
            raise RuntimeError(f"agent {self.name!r} sent to {topic!r} outside an event")
        size = len(key or b"") + len(value or b"")
        if headers:
            size += headers_bytes(headers)
        if size > MAX_RECORD_BYTES:
            raise too_large(size, f"record for {topic!r}", self.event.raw)
        staged = self._staged
        if len(staged) >= MAX_STAGED_PER_EVENT:
            raise ValueError(f"agent {self.name!r} produced more than {MAX_STAGED_PER_EVENT} "
                             "records for one event")
        staged.append((topic, key, value, headers))

    def origin_header(self) -> tuple[str, bytes]:
        """The origin header of a record sent to an internal topic: the current event's input
        position plus a number counting the event's internal sends, so the reading task
        recognises an upstream replay record by record (as a repartition sink's records)."""
        rec = self.event
        if rec is None:
            raise RuntimeError(f"agent {self.name!r} sent to an internal topic outside an event")
        raw = rec.raw
        pos = (raw.topic, raw.partition, raw.offset)
        if pos == self._origin_pos:
            self._origin_index += 1
        else:
            self._origin_pos, self._origin_index = pos, 0
        return ORIGIN_HEADER, encode_origin(raw.topic, raw.partition, raw.offset,
                                            self._origin_index)

    def watch(self, view: StoreView, key: Any, kb: bytes, value: Any) -> None:
        """Remember a handed-out mutable value to warn, at the boundary, if it was changed in
        place and not assigned back (the test driver's check)."""
        if isinstance(value, (int, float, str, bool, bytes, type(None))):
            return
        try:
            before = view.value_serde.serialize(value)
        except Exception:  # noqa: BLE001 - not a storable value: nothing to compare
            return
        self._watched.append((view, key, kb, value, before))

    # -- the batch --------------------------------------------------------------------------------
    def on_batch(self, recs: list[Rec]) -> None:
        if not recs:
            return
        self._recs, self._i = recs, 0
        self._seen_max, self._seen_upto = -1, 0
        self._clock = self.ctx.batch_clock()
        outer, ACTIVE.proc = ACTIVE.proc, self
        try:
            self._run()
        finally:
            ACTIVE.proc = outer
            self._recs = _EMPTY

    def _run(self) -> None:
        kind = self._kind
        while True:
            inst = self._inst
            if inst is None:
                if self._i >= len(self._recs):
                    return
                inst = self._inst = self.fn(AgentStream(self))
                self._took = False
            try:
                if kind == _ASYNC_GEN:
                    aw = self._aw
                    if aw is None:
                        aw = self._aw = inst.__anext__()
                    signal = aw.send(None)
                elif kind == _CORO:
                    signal = inst.send(None)
                else:
                    self._output(next(inst))
                    continue
            except StopIteration as stop:
                if kind == _ASYNC_GEN:  # the agent yielded stop.value
                    self._aw = None
                    self._output(stop.value)
                else:
                    self._finished()
                continue
            except StopAsyncIteration:
                self._aw = None
                self._finished()
                continue
            except Exception as exc:  # noqa: BLE001 - the user's body raised
                self._fail(exc, "shape" if isinstance(exc, ShapeError) else "processing")
                continue
            if signal is WAITING:
                return
            self._fail(AgentAwaitError(
                f"agent {self.name!r} awaited something the framework did not provide (it "
                f"yielded {what(signal)} to the event loop); an agent may only await its stream "
                "and topic.send(): I/O or sleeps inside it would stall the batch and the "
                "commit"), "await")

    def next_record(self) -> Rec | None:
        """The event boundary: apply the current event's effects, then hand out the next record
        of the batch with savepoints on the agent's tables (None: the batch is exhausted)."""
        if self.event is not None:
            self._apply_event()
        i = self._i
        if i >= len(self._recs):
            return None
        self._first, self._i = i, i + 1
        rec = self.event = self._recs[i]
        self._took = True
        for view in self._view_list:
            view.begin()
        return rec

    def next_chunk(self, size: int) -> list[Rec] | None:
        """As :meth:`next_record` for ``stream.take(size)``: up to ``size`` records of the
        batch as one event (its key and timestamp are those of its last record)."""
        if self.event is not None:
            self._apply_event()
        i, recs = self._i, self._recs
        if i >= len(recs):
            return None
        end = min(i + size, len(recs))
        self._first, self._i = i, end
        self.event = recs[end - 1]
        self._took = True
        for view in self._view_list:
            view.begin()
        return recs[i:end]

    def _apply_event(self) -> None:
        for view in self._view_list:
            view.release()
        if self._watched:
            self._check_mutations()
        staged = self._staged
        if staged:
            send, ts = self.ctx.send, self.event.ts  # type: ignore[union-attr]
            for topic, key, value, headers in staged:
                send(topic, key, value, ts, headers)
            staged.clear()
        self.event = None

    def _output(self, value: Any) -> None:
        """A ``yield``: stage ``value`` for every sink with the current event's key."""
        rec = self.event
        if rec is None:
            self._fail(RuntimeError(f"agent {self.name!r} yielded {what(value)} outside an "
                                    "event (before reading one, or after its loop ended)"),
                       "processing")
            return
        try:
            for sink in self._sinks:
                key = sink.key_serde.serialize(rec.key)
                self.stage(sink.topic, key, sink.value_serde.serialize(value), None)
        except Exception as exc:  # noqa: BLE001 - an unserializable yield fails its event
            self._fail(ShapeError(f"agent {self.name!r} yielded {what(value)}, which cannot be "
                                  f"written to its sinks: {describe_error(exc)}"), "shape")

    def _finished(self) -> None:
        """The instance returned: its last event is complete. One that read nothing would
        restart forever, so the record it was started for is a dead letter instead."""
        took = self._took
        if self.event is not None:
            self._apply_event()
        self._inst = None
        if not took and self._i < len(self._recs):
            rec = self._recs[self._i]
            self._i += 1
            self.ctx.dead_letter(rec.raw, f"agent {self.name!r} returned without reading an "
                                 "event", reason="agent", node=self.name)

    def _fail(self, exc: BaseException, reason: str) -> None:
        """Drop the current event's effects, dead-letter its record, close the instance (a
        failure of the state store itself is raised instead: not the record's fault)."""
        if isinstance(exc, STORE_FAILURES):
            raise exc
        for view in self._view_list:
            view.rollback()
        self._staged.clear()
        self._watched.clear()
        rec, self.event = self.event, None
        failed = [] if rec is None else self._recs[self._first:self._i]
        took = self._took
        self._close_instance()
        if rec is None and not took and self._i < len(self._recs):
            # failed before reading anything: blame the record it was started for (progress)
            failed = [self._recs[self._i]]
            self._i += 1
        if not failed:
            self.ctx.count_dropped(self.name, "agent-error")
            return
        error = f"{describe_error(exc)} (in agent {self.name})"
        for failed_rec in failed:
            self.ctx.dead_letter(failed_rec.raw, error, reason=reason, node=self.name)

    def _close_instance(self) -> None:
        inst, aw = self._inst, self._aw
        self._inst = self._aw = None
        if inst is None:
            return
        try:
            if aw is not None:
                # GeneratorExit at the agent's pending await, through the asend awaitable: its
                # finally blocks run and it ends. (``aw.close()`` would leave the async
                # generator marked running, and the event loop's finalizer would later fail
                # to ``aclose`` it.)
                try:
                    aw.throw(GeneratorExit)
                except (GeneratorExit, StopIteration, StopAsyncIteration):
                    pass
            if self._kind == _ASYNC_GEN:
                closing = inst.aclose()
                try:
                    closing.send(None)
                except StopIteration:
                    pass
                else:
                    closing.close()  # it awaited while closing: abandon it
            else:
                inst.close()
        except Exception:  # noqa: BLE001 - a broken finally block must not stop the task
            pass

    def close(self) -> None:
        """The task is closed (revoked): close the instance, discarding an unfinished event
        (its record was not committed and will be processed again)."""
        outer, ACTIVE.proc = ACTIVE.proc, self
        try:
            for view in self._view_list:
                view.rollback()
            self._staged.clear()
            self.event = None
            self._close_instance()
        finally:
            ACTIVE.proc = outer

    # -- windowed tables ----------------------------------------------------------------------
    def _expire_windows(self, now: int) -> None:
        for name, table in self._windowed:
            view = self.views[name]
            # a window [start, start + size) is kept until stream time passes end + expires
            view.expire_before(now - table.window.size_ms - table.expires_ms + 1)  # type: ignore[attr-defined]

    # -- the driver's check -----------------------------------------------------------------------
    def _check_mutations(self) -> None:
        watched, self._watched = self._watched, []
        for view, key, kb, value, before in watched:
            try:
                after = view.value_serde.serialize(value)
            except Exception:  # noqa: BLE001
                continue
            if after == before:
                continue
            stored = view.get_by_bytes(kb, None)
            if stored is not None and view.value_serde.serialize(stored) == after:
                continue  # assigned back
            warnings.warn(f"agent {self.name!r} changed the value of table {view.name!r} key "
                          f"{key!r} in place without assigning it back: the change is lost "
                          f"(write {view.name}[key] = value)", stacklevel=2)


def _as_generator(fn: Any) -> Any:
    """A plain function agent (``def agent(stream): for value in stream: ...``) as a
    generator that yields nothing, so it is driven like a sync generator agent."""

    def run(stream: AgentStream) -> Iterator[Any]:
        fn(stream)
        yield from ()

    return run
