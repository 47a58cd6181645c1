"""Restore a task's tables from their changelog partitions.

Which records to restore: every changelog record carries, in header ``streams-offsets``, the
task's input offsets at the commit that wrote it. The commit cycle commits consumer offsets only
after the changelog is flushed, so a record whose offsets are all <= the group's committed
offsets belongs to a completed commit; a record with any offset beyond them was written by a
commit that never finished (its inputs will be processed again) and is skipped. The restored
state is therefore exactly the state as of the committed offsets, and the task resumes there.
(Quix Streams makes the same choice; Kafka Streams' checkpoint file cannot tell, which is why
its at-least-once mode may double-count after a crash.)

Records are applied in changelog order in RocksDB WriteBatches of ``batch`` records.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from .meta import OFFSETS_HEADER, UPSTREAM_HEADER, decode_upstream
from .store import TaskStore

log = logging.getLogger(__name__)



_raw_decode = json.JSONDecoder().raw_decode


def local_state_behind(local: dict[tuple[str, int], int],
                       committed: dict[tuple[str, int], int]) -> bool:
    """Local state must be rebuilt when it reflects less input than the group committed (state
    dir lost, copied back from an old backup, or the task ran elsewhere meanwhile). Local state
    *ahead* of the group (crash between the WriteBatch and the offset commit) is kept."""
    return any(local.get(tp, 0) < off for tp, off in committed.items())


class ChangelogFilter:
    """Decides which changelog records belong to finished commits (pure logic, no I/O).

    ``accept(headers)`` is True when every input offset in the record's ``streams-offsets``
    header is <= the group's committed offset; accepted records also advance the upstream
    positions (``streams-upstream``) the task resumes its replay detection from. All records of
    one commit share the same header bytes, so the decision is made once per commit.
    """

    def __init__(self, committed: dict[tuple[str, int], int]) -> None:
        self.committed = {f"{t}:{p}": o for (t, p), o in committed.items()}
        self.upstream: dict[str, tuple[int, int]] = {}
        self._last_header: bytes | None = None
        self._last_ok = False
        self._last_upstream: bytes | None = None

    def _finished(self, header: bytes | None) -> bool:
        if header is None:
            return False
        for tp, off in _raw_decode(header.decode())[0].items():
            if off > self.committed.get(tp, 0):
                return False
        return True

    def accept(self, headers: dict[str, bytes]) -> bool:
        header = headers.get(OFFSETS_HEADER)
        if header != self._last_header:
            self._last_header = header
            self._last_ok = self._finished(header)
        if self._last_ok:
            up = headers.get(UPSTREAM_HEADER)
            if up and up != self._last_upstream:
                self._last_upstream = up
                for k, pos in decode_upstream(up).items():
                    if pos > self.upstream.get(k, (-1, -1)):
                        self.upstream[k] = pos
        return self._last_ok


async def restore_task(bootstrap: str, store: TaskStore, tables: dict[str, str], partition: int,
                       committed: dict[tuple[str, int], int], task_id: str,
                       on_progress: Callable[[str, int], None] | None = None,
                       batch: int = 20000) -> tuple[int, dict[str, tuple[int, int]]]:
    """Restore ``tables`` ({table: changelog topic}) of one task into ``store``.

    Returns (records applied, upstream positions to resume dedup from).
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 * 1024 * 1024,
                                fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    applied = 0
    decide = ChangelogFilter(committed)
    try:
        for table, topic in tables.items():
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            start = await consumer.position(tp)
            total = max(0, end - start)
            if total == 0:
                continue
            log.info("task %s: restoring table %s from %s[%d]: %d records",
                     task_id, table, topic, partition, total)
            started = time.monotonic()
            done = skipped = 0
            pending: list[tuple[bytes, bytes | None]] = []
            last_log = started
            while await consumer.position(tp) < end:
                records = (await consumer.getmany(tp, timeout_ms=1000, max_records=batch)).get(tp, [])
                for rec in records:
                    if rec.offset >= end:
                        break
                    if decide.accept(dict(rec.headers or ())):
                        pending.append((rec.key, rec.value))
                    else:
                        skipped += 1
                    done += 1
                if pending:
                    store.write_raw(table, pending)
                    applied += len(pending)
                    pending = []
                if on_progress:
                    on_progress(table, max(0, total - done))
                now = time.monotonic()
                if now - last_log > 2:
                    log.info("task %s: restoring %s: %d / %d records", task_id, table, done, total)
                    last_log = now
            elapsed = time.monotonic() - started
            log.info("task %s: restored %s: %d records (%d from unfinished commits skipped) "
                     "in %.2fs (%.0f records/s)", task_id, table, done - skipped, skipped,
                     elapsed, done / elapsed if elapsed else 0)
            if on_progress:
                on_progress(table, 0)
    finally:
        await consumer.stop()
    return applied, decide.upstream
