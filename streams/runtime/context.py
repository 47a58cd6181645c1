"""The processor context: everything a processor may ask of the task that runs it.

Processors never see the :class:`~streams.runtime.task.Task`. Each task creates one
``ProcessorContext`` for itself and hands it to every processor it builds (Kafka Streams'
``Processor.init(context)``): stores by name, sending records, dead letters and counters, stream
time, and a callback when stream time advances (window close, join expiry; Bytewax's
``notify_at``/``on_notify``). New processor kinds need nothing else, and this module imports
nothing of the task, so ``processors`` and ``compile`` do not depend on ``task`` either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, TypeVar

from ..dsl.topology import Topology
from ..state.meta import ORIGIN_HEADER, Positions, TaskId, header
from ..state.store_view import StoreView

StreamTimeCallback = Callable[[int], None]
V = TypeVar("V", bound=StoreView)


class Output(NamedTuple):
    """A record a task emits: to an output, repartition, dead-letter or changelog topic."""

    topic: str
    partition: int | None  # None: by the key, with Kafka's default partitioner
    key: bytes | None
    value: bytes | None
    timestamp: int | None
    headers: list[tuple[str, bytes]] | None


class _TaskSide(Protocol):
    """What the context uses of its task (structural, so this module needs no task import)."""

    id: TaskId
    partition: int
    topology: Topology
    outputs: list[Output]
    stream_time: int
    upstream: Positions
    late: dict[str, int]
    stream_time_callbacks: list[StreamTimeCallback]
    close_callbacks: list[Callable[[], None]]
    watermark: Any  # a streams.runtime.watermarks.Watermark, or None (direct inputs only)
    max_future_ms: int

    def table(self, name: str) -> StoreView: ...

    def global_table(self, name: str) -> Any: ...

    def dead_letter(self, raw: Any, error: str, reason: str, node: str | None = None) -> None:
        ...

    def observe_time(self, ts: int) -> None: ...

    def future_limit(self) -> int | None: ...

    def count_dropped(self, node: str, reason: str) -> None: ...


class ProcessorContext:
    """One task's services for its processors. Cheap to call: every method is a few attribute
    lookups on the task, and nothing here is per record unless the processor makes it so."""

    __slots__ = ("_task", "task_id", "partition", "topology_name")

    def __init__(self, task: _TaskSide) -> None:
        self._task = task
        self.task_id: TaskId = task.id
        self.partition: int = task.partition
        self.topology_name: str = task.topology.name

    # -- state ------------------------------------------------------------------------------------
    def store(self, name: str) -> StoreView:
        """The view of the task's store ``name`` (it must be one of the node's ``store_names()``,
        or the sub-topology has no such store: KeyError)."""
        return self._task.table(name)

    def typed_store(self, name: str, view: type[V]) -> V:
        """:meth:`store`, checked to be the view class the processor works with (the store's
        kind decides its class, :mod:`streams.state.views`): a topology whose node names a
        store of another kind fails here, when the task opens, with the store's name."""
        store = self._task.table(name)
        if not isinstance(store, view):
            raise TypeError(f"store {name!r} is a {type(store).__name__}, "
                            f"not the {view.__name__} this operator needs")
        return store

    def global_table(self, name: str) -> Any:
        """The worker's global table ``name`` (a
        :class:`~streams.state.global_store.GlobalTableView`: ``key_bytes``, ``get_by_bytes``,
        ``get``), shared by all its tasks."""
        return self._task.global_table(name)

    # -- output -----------------------------------------------------------------------------------
    def send(self, topic: str, key: bytes | None, value: bytes | None, timestamp: int | None,
             headers: list[tuple[str, bytes]] | None = None,
             partition: int | None = None) -> None:
        """Emit a serialized record; it goes out with the task's current batch (before the
        commit that covers the batch's input offsets)."""
        # not cached: ``Task.take_outputs`` swaps the list
        self._task.outputs.append(Output(topic, partition, key, value, timestamp, headers))

    def dead_letter(self, raw: Any, error: str, reason: str, node: str | None = None) -> None:
        """Route the input record ``raw`` to the topology's dead-letter topic; ``node`` (the
        rejecting node's name) becomes its header ``node``."""
        self._task.dead_letter(raw, error, reason, node)

    def count_dropped(self, node: str, reason: str) -> None:
        """A record ``node`` skips by design (a tombstone in an aggregation, no branch)."""
        self._task.count_dropped(node, reason)

    def count_late(self, node: str) -> None:
        """A record ``node`` ignores because it arrived after its window or join closed."""
        late = self._task.late
        late[node] = late.get(node, 0) + 1

    # -- time -------------------------------------------------------------------------------------
    @property
    def stream_time(self) -> int:
        """The task's event-time progress after its last batch (-1 before the first): the
        largest record timestamp seen, or behind a repartition the watermark over the upstream
        partitions (:mod:`streams.runtime.watermarks`)."""
        return self._task.stream_time

    @property
    def max_future_ms(self) -> int:
        """How far ahead of the wall clock an event time may be (< 0: no limit)."""
        return self._task.max_future_ms

    def future_limit(self) -> int | None:
        """The largest event time a record may have now (``max_future_ms`` ahead of the wall
        clock); None without a limit. Sources take it once per batch."""
        return self._task.future_limit()

    def watermark_of(self, topic: str) -> Any:
        """The task's :class:`~streams.runtime.watermarks.Watermark` if ``topic`` is one of
        the repartition topics it tracks, else None (sources feed it)."""
        wm = self._task.watermark
        return wm if wm is not None and topic in wm.topics else None

    def batch_clock(self) -> Callable[[Any], int]:
        """A clock for one pass over a batch, record by record: ``clock(rec)`` returns the
        stream time with ``rec`` counted (call it for the batch's records in order; records
        the processor skips may be left out). Every processor that judges records by stream
        time (windows, joins) takes its own clock at the start of its ``on_batch``: a batch
        goes through the graph one node at a time, so the task's own stream time only moves
        after the whole batch; a record is judged by the time of its own arrival, whatever the
        batch boundaries.

        Behind a repartition, "with ``rec`` counted" is the watermark over the upstream
        partitions with ``rec`` counted (the source records it per input record); a record
        that derives from no input record of the batch leaves the clock where it is."""
        now = self._task.stream_time
        wm = self._task.watermark
        if wm is not None:
            at = wm.at

            def watermark_clock(rec: Any) -> int:
                nonlocal now
                w = at.get(id(rec.raw), -1)
                if w > now:
                    now = w
                return now
            return watermark_clock

        def clock(rec: Any) -> int:
            nonlocal now
            ts = rec.ts
            if ts > now:
                now = ts
            return now
        return clock

    def observe_time(self, ts: int) -> None:
        """Advance stream time to ``ts`` if it is later (a task behind a repartition follows
        its watermark instead). Registered callbacks run once at the end of the batch, not
        here."""
        self._task.observe_time(ts)

    def on_stream_time(self, callback: StreamTimeCallback) -> None:
        """Call ``callback(new_stream_time)`` after every batch in which stream time advanced
        (once, after the whole batch went through the graph) and on
        ``Task.advance_stream_time``. It runs inside the task's batch/commit cycle: its store
        writes are committed and its ``send``s go out like the batch's own. Register in the
        processor's constructor."""
        self._task.stream_time_callbacks.append(callback)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when the task closes (revoked, or the worker stops): agents
        close their instance there. Nothing may be written from it."""
        self._task.close_callbacks.append(callback)

    # -- repartition input ------------------------------------------------------------------------
    def skip_replayed(self, topic: str, raws: list[Any]) -> list[Any]:
        """``raws`` of the repartition topic ``topic`` without those this task already applied
        (see :func:`skip_replayed`)."""
        return skip_replayed(self._task.upstream, topic, raws)


def skip_replayed(upstream: Positions, topic: str, raws: list[Any]) -> list[Any]:
    """Drop repartitioned records already applied; record the new positions in ``upstream``.

    After a crash the upstream task re-sends records at new offsets of the repartition topic;
    each carries its source position (topic:partition:offset:index), and positions from one
    upstream partition arrive in order, so anything at or below the highest position applied
    is a replay.
    """
    fresh = []
    for raw in raws:
        origin = header(raw.headers, ORIGIN_HEADER)
        if origin is None:
            fresh.append(raw)
            continue
        src_topic, src_part, off, idx = origin.decode().rsplit(":", 3)
        key = f"{topic}|{src_topic}:{src_part}"
        pos = (int(off), int(idx))
        last = upstream.get(key)
        if last is not None and pos <= last:
            continue
        upstream[key] = pos
        fresh.append(raw)
    return fresh
