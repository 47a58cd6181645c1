"""The commit protocol, in one place: the worker, the TopologyTestDriver and the model-based
tests all run :func:`commit`.

At-least-once, per commit of a set of tasks:

1. serialize each task's table changes into its store's batch and produce them to the
   changelogs (each record carries the task's input offsets in a header);
2. flush: wait until every output and changelog record is acknowledged; a failed send raises
   and nothing below runs (offsets never move past lost outputs);
3. write each task's state + input offsets + upstream positions + changelog end positions in
   ONE RocksDB WriteBatch;
4. commit the consumer offsets.

A crash before 3 leaves state and offsets as of the previous commit (inputs are replayed,
outputs may repeat). A crash between 3 and 4 leaves local state ahead of the group; on open,
:func:`streams.state.recovery.decide_open` sees that the changelog did not move past it and
resumes from the local offsets, so those inputs are not applied twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ..state.meta import Offsets
from .task import Output, Task


class CommitTransport(Protocol):
    """What a commit needs from Kafka (or from the test driver's in-memory topics)."""

    async def send(self, outputs: list[Output]) -> None:
        """Hand records to the producer (they may still be in flight)."""

    async def flush(self) -> dict[tuple[str, int], int]:
        """Wait for every record sent so far; raise if any failed. Returns, per partition
        written since the last flush, its end offset (last acknowledged offset + 1)."""

    async def commit_offsets(self, offsets: Offsets) -> None:
        """Commit the consumer group's offsets."""


async def commit(tasks: Iterable[Task], transport: CommitTransport) -> Offsets:
    """Run the commit protocol for ``tasks``; returns the offsets committed."""
    tasks = list(tasks)
    for task in tasks:                                   # 1. changelog records
        changes = task.prepare_commit()
        if changes:
            await transport.send(changes)
    positions = await transport.flush()                  # 2. everything acknowledged
    offsets: Offsets = {}
    for task in tasks:                                   # 3. one WriteBatch per task
        task.write_commit(positions)
        offsets.update(task.offsets)
    if offsets:
        await transport.commit_offsets(offsets)          # 4. the group's offsets
    return offsets
