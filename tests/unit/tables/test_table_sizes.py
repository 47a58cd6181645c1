"""`tables list` sizes each table by its own RocksDB column family, not by the task directory
that all the task's tables share (no broker: offsets are stubbed)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from streams.runtime.compile import subtopologies
from streams.state.meta import TaskId
from streams.state.store import TaskStore
from streams.tables import inspect
from topologies.payments import topology as payments


def test_each_table_reports_its_own_column_family(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_offsets(*_args: Any) -> dict:
        return {}

    monkeypatch.setattr(inspect.admin, "end_offsets", no_offsets)
    monkeypatch.setattr(inspect.admin, "committed_offsets", no_offsets)
    sub = next(s for s in subtopologies(payments) if "processed" in s.stores)
    store = TaskStore(tmp_path / "payments" / str(TaskId(sub.id, 0)), sub.stores)
    try:
        for i in range(5000):
            store.put("processed", f"payment:{i}".encode(), os.urandom(50))  # incompressible
        store.put("balances", b"a1", b'"1.00"')
        store.write({})
    finally:
        store.close()
    infos = {i.table: i for i in asyncio.run(inspect.table_infos(payments, str(tmp_path), "x"))}
    processed, balances = infos["processed"], infos["balances"]
    assert processed.bytes_on_disk > 5000 * 50  # at least the values written
    assert balances.bytes_on_disk < processed.bytes_on_disk / 100
    # the task directory, shared by both tables, is reported as such
    assert processed.task_bytes_on_disk == balances.task_bytes_on_disk > 0
