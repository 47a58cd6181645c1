"""Restoring every restoring task's tables at once, and reporting how the restore goes.

:class:`ChangelogRestorer` drives the :class:`~streams.state.recovery.Restoration` of all the
tasks a worker is restoring with one consumer: every unfinished changelog partition is assigned
at once and read with large fetches, each fetch's records go to their task's store in one
WriteBatch (with the restore progress, see :meth:`Restoration.apply`). The assignment only
changes when a task starts or finishes restoring, so the consumer keeps prefetching across
calls (re-seeking each call would throw away what it has fetched ahead).

:class:`RestoreProgress` logs one line per table every few seconds while it is restored
(records restored, remaining, records/s, estimated time left) and one when it is done, and keeps
``streams_recovery_records_remaining{table}`` (through ``on_remaining``) at the sum over tasks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from .recovery import Restoration

log = logging.getLogger(__name__)

# One fetch may return this many records over all partitions: big enough that the per-fetch
# costs (a WriteBatch and its meta per task, a consumer position per partition) stay small.
MAX_RECORDS = 50_000


class ChangelogRestorer:
    """Reads the changelogs of all restoring tasks with one consumer (see the module doc)."""

    def __init__(self, consumer: Any, progress: RestoreProgress | None = None,
                 max_records: int = MAX_RECORDS) -> None:
        self.consumer = consumer
        self.progress = progress or RestoreProgress()
        self.max_records = max_records
        # changelog partition -> (its restoration, changelog topic)
        self._routes: dict[TopicPartition, tuple[Restoration, str]] = {}

    async def poll(self, restorations: Mapping[Any, Restoration], timeout_ms: int = 200) -> int:
        """Read one fetch over every unfinished changelog of ``restorations`` and apply it;
        returns the records read. A finished restoration's ``done`` is True afterwards."""
        self.progress.update(restorations.values())  # (registers new ones before they move)
        await self._assign(restorations)
        read = 0
        if self._routes:
            fetched = await self.consumer.getmany(*self._routes, timeout_ms=timeout_ms,
                                                  max_records=self.max_records)
            for tp, (restoration, topic) in self._routes.items():
                records = fetched.get(tp, ())
                before = restoration.read
                restoration.apply(topic, list(records), await self.consumer.position(tp))
                read += restoration.read - before
        self.progress.update(restorations.values())
        return read

    async def _assign(self, restorations: Mapping[Any, Restoration]) -> None:
        routes = {TopicPartition(topic, r.partition): (r, topic)
                  for r in restorations.values() for topic in r.pending()}
        if routes.keys() == self._routes.keys() and all(
                routes[tp][0] is self._routes[tp][0] for tp in routes):
            return
        if not routes:
            self.forget()
            return
        # (aiokafka forgets every position on assign(): seek them all again)
        self.consumer.assign(list(routes))
        for tp, (restoration, topic) in routes.items():
            position = restoration.positions[topic]
            if position <= 0:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, position)
        self._routes = routes

    def forget(self) -> None:
        """Stop fetching for the current restorations (finished or closed); the next poll
        assigns afresh. (Paused, not unassigned: aiokafka's consumer left with no assignment
        takes seconds to stop.)"""
        if self._routes:
            self.consumer.pause(*self._routes)
            self._routes = {}


@dataclass
class _TableProgress:
    started: float
    restored: int = 0  # changelog records read (applied or skipped) since the restore began
    last_logged: float | None = None
    restored_at_log: int = 0
    done: bool = False


class RestoreProgress:
    """Per-table restore progress: log lines and the remaining-records gauge."""

    def __init__(self, on_remaining: Callable[[str, int], None] | None = None,
                 every_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.on_remaining = on_remaining
        self.every_s = every_s
        self.clock = clock
        self._tables: dict[str, _TableProgress] = {}
        # (restoration id, changelog topic) -> (the position last seen, its table)
        self._read: dict[tuple[int, str], tuple[int, str]] = {}

    def update(self, restorations: Any) -> None:
        """Account for the progress of the restorations under way (pass every one until it is
        done: one that disappears before is taken as closed, e.g. revoked)."""
        now = self.clock()
        remaining: dict[str, int] = {t: 0 for t in self._tables}
        current: set[tuple[int, str]] = set()
        for r in restorations:
            for topic, table in r.changelogs.items():
                left = r.remaining(topic)
                key = (id(r), topic)
                position = r.positions[topic]
                if key not in self._read:
                    if not left:
                        continue  # nothing (more) to restore of this table in this task
                    state = self._tables.get(table)
                    if state is None or state.done:
                        self._tables[table] = _TableProgress(now)
                    self._read[key] = (position, table)
                remaining[table] = remaining.get(table, 0) + left
                current.add(key)
                self._tables[table].restored += position - self._read[key][0]
                self._read[key] = (position, table)
                if not left:
                    del self._read[key]
                    current.discard(key)
        stopped = set()
        for key in self._read.keys() - current:  # closed before it finished (revoked)
            stopped.add(self._read.pop(key)[1])
        for table, left in remaining.items():
            if self.on_remaining is not None:
                self.on_remaining(table, left)
            state = self._tables[table]
            if state.done:
                continue
            if left:
                # the first line once something was restored, then one every ``every_s``
                due = (state.last_logged is None and state.restored) or (
                    state.last_logged is not None and now - state.last_logged >= self.every_s)
                if due:
                    self._log_progress(table, state, left, now)
                continue
            state.done = True
            if table in stopped:
                log.info("table %s: restore stopped after %d changelog records (its tasks were "
                         "closed before they finished)", table, state.restored)
            else:
                took = max(now - state.started, 1e-9)
                log.info("table %s: restoring: 100%% done, %d changelog records in %.1f s "
                         "(%.0f records/s)", table, state.restored, took, state.restored / took)

    @staticmethod
    def _log_progress(table: str, state: _TableProgress, left: int, now: float) -> None:
        since = state.started if state.last_logged is None else state.last_logged
        rate = (state.restored - state.restored_at_log) / max(now - since, 1e-9)
        eta = f"{left / rate:.0f} s" if rate > 0 else "unknown"
        pct = 100 * state.restored // (state.restored + left)
        log.info("table %s: restoring: %d%% (%d records restored, %d remaining, %.0f records/s, "
                 "about %s left)", table, pct, state.restored, left, rate, eta)
        state.last_logged, state.restored_at_log = now, state.restored
