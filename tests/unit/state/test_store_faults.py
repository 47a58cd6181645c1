"""Damaged or unwritable state is named for what it is, at once: corruption is
:class:`StateCorrupted` (never "locked", never retried), a full disk or a read-only state
directory is one line naming the path; corruption found after the open marks the store so that
the next open wipes it; a store failure is never blamed on a record (no dead letter).

Each test docstring says what the code did before."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streams import Topology
from streams.runtime.compile import subtopologies
from streams.state import store as store_module
from streams.state.store import (CORRUPT_MARKER, StateCorrupted, StateStorageError, StoreLocked,
                                 TaskStore, state_error)
from streams.testing import TopologyTestDriver


def _filled(path: Path, tables: list[str], rows: int = 40_000) -> None:
    """A store whose data is in table files (.sst), not only in the write-ahead log."""
    store = TaskStore(path, tables)
    try:
        for i in range(rows):
            store.put(tables[0], b"k%06d" % i, os.urandom(100))
        store.write({"x": "1"})
        store.db.flush()
    finally:
        store.close()


def _damage_every_sst(path: Path) -> None:
    """Overwrite 4 KB inside every table file (the size stays the same)."""
    for f in path.glob("*.sst"):
        size = f.stat().st_size
        n = min(4096, size)
        with open(f, "r+b") as fh:
            fh.seek(max(0, size // 2 - n // 2))
            fh.write(os.urandom(n))


@pytest.fixture
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock-retry loop must not run: it is for a store another owner is closing."""
    def sleep(_s: float) -> None:
        raise AssertionError("retried as if the store were locked")
    monkeypatch.setattr(store_module.time, "sleep", sleep)


@pytest.mark.parametrize("read_only", [False, True], ids=["worker", "cli"])
def test_damaged_table_files_are_corruption_not_a_lock(tmp_path: Path, no_retries: None,
                                                       read_only: bool) -> None:
    """Formerly "... is locked by another process" after 30 s of retries: the open error
    ("Corruption: block checksum mismatch" / "Bad table magic number") contains "lock"."""
    _filled(tmp_path / "db", ["t"])
    _damage_every_sst(tmp_path / "db")
    with pytest.raises(StateCorrupted, match=rf"state in {tmp_path / 'db'} is corrupt \(Corrupt"):
        TaskStore(tmp_path / "db", ["t"], read_only=read_only)


def test_current_naming_no_manifest_is_corruption(tmp_path: Path, no_retries: None) -> None:
    """Formerly a plain "IO error: ... MANIFEST-999999" with no recovery."""
    _filled(tmp_path / "db", ["t"], rows=10)
    (tmp_path / "db" / "CURRENT").write_text("MANIFEST-999999\n")
    with pytest.raises(StateCorrupted, match="MANIFEST-999999"):
        TaskStore.existing_tables(tmp_path / "db")
    with pytest.raises(StateCorrupted, match="MANIFEST-999999"):
        TaskStore(tmp_path / "db", ["t"])


def test_a_held_store_is_still_locked(tmp_path: Path) -> None:
    """Guard: a store held by its owner is StoreLocked, as before."""
    held = TaskStore(tmp_path / "db", ["t"])
    try:
        with pytest.raises(StoreLocked, match="locked by another process"):
            TaskStore(tmp_path / "db", ["t"], lock_timeout=0)
    finally:
        held.close()


def test_corruption_found_by_a_read_marks_the_store_for_the_next_open(tmp_path: Path) -> None:
    """Formerly a checksum mismatch on a read raised a plain Exception, and the next open
    trusted the store again (opening reads only the files' footers and indexes)."""
    path = tmp_path / "db"
    _filled(path, ["t"], rows=50_000)
    for f in path.glob("*.sst"):  # a data block of the large file: the open succeeds
        if f.stat().st_size > 100_000:
            with open(f, "r+b") as fh:
                fh.seek(4096)
                fh.write(os.urandom(4096))
    store = TaskStore(path, ["t"])
    try:
        with pytest.raises(StateCorrupted, match="checksum mismatch"):
            for i in range(0, 50_000, 50):
                store.get("t", b"k%06d" % i)
    finally:
        store.close()
    assert (path / CORRUPT_MARKER).exists()
    with pytest.raises(StateCorrupted, match="checksum mismatch"):
        TaskStore(path, ["t"])


@pytest.mark.parametrize("message,what", [
    ("IO error: No space left on device: While appending to file: {p}/000012.log: No space "
     "left on device", "no space left on device"),
    ("IO error: While open a file for appending: {p}/000012.log: Read-only file system",
     "read-only file system"),
])
def test_full_or_read_only_state_directory_is_one_line_naming_it(tmp_path: Path, message: str,
                                                                 what: str) -> None:
    """Formerly rocksdict's plain Exception (with "IO error" text) or OSError went up as is."""
    error = state_error(tmp_path, Exception(message.format(p=tmp_path)))
    assert isinstance(error, StateStorageError)
    assert str(error).startswith(f"state directory {tmp_path}: {what}")
    assert "\n" not in str(error)


def test_unwritable_state_root_is_one_line_naming_it(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Formerly the OSError of creating the directory went up as is."""
    def mkdir(self: Path, *a: Any, **k: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self))
    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(StateStorageError, match=rf"state directory {tmp_path / 'db'}: read-only"):
        TaskStore(tmp_path / "db", ["t"])


def test_store_failure_is_raised_not_dead_lettered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Formerly a failing store read inside an operator was the record's failure: it went to
    the dead letters (and so did every later record meeting the damage)."""
    t = Topology("store_fault")
    t.stream("in").group_by_key().count(name="c").to("out")

    def broken(self: TaskStore, table: str, key: bytes) -> bytes | None:
        raise self.failed(Exception("Corruption: block checksum mismatch: in x.sst"))

    with TopologyTestDriver(t) as driver:
        monkeypatch.setattr(TaskStore, "get", broken)
        with pytest.raises(StateCorrupted, match="checksum mismatch"):
            driver.pipe("in", "a", {"n": 1})
        assert driver.read_records(t.dlq_topic) == []
        monkeypatch.undo()


def test_cli_get_on_corrupt_state_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              no_retries: None) -> None:
    """Formerly "... is locked by another process" after ~30 s."""
    from streams import cli, registry

    t = Topology("corrupt_cli")
    t.stream("in").group_by_key().count(name="c")
    sub = next(s for s in subtopologies(t) if "c" in s.stores)
    path = tmp_path / t.name / f"{sub.id}_0"
    _filled(path, sub.stores)
    _damage_every_sst(path)
    monkeypatch.setattr(registry, "load", lambda name: t)
    r = CliRunner().invoke(cli.main, ["tables", "get", "x", "c", "a",
                                      "--state-dir", str(tmp_path)])
    assert r.exit_code == 1
    (line,) = r.output.strip().splitlines()
    assert line.startswith(f"error: state in {path} is corrupt"), line


def test_wiping_an_undeletable_directory_is_one_line_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Formerly ignored: a wipe (corrupt state, `tables reset`) that deleted nothing went on as
    if it had, and the task was restored on top of the old files."""
    import shutil

    def rmtree(path: Any, ignore_errors: bool = False, **_k: Any) -> None:
        if not ignore_errors:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
    _filled(tmp_path / "db", ["t"], rows=10)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    with pytest.raises(StateStorageError,
                       match=rf"^state directory {tmp_path / 'db'}: read-only file system"):
        TaskStore.destroy(tmp_path / "db")
    monkeypatch.undo()
    TaskStore.destroy(tmp_path / "missing")  # guard: nothing to delete is fine


def test_corrupt_global_table_copy_is_wiped_and_reloaded(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Formerly the worker could not start: the copy's open failed on every attempt."""
    from streams.runtime.global_tables import GlobalTables
    from streams.state.global_store import GLOBAL_DIR

    t = Topology("corrupt_global")
    t.global_table("products", name="products")
    g = GlobalTables(t, tmp_path)
    g.open()
    g.close()
    (tmp_path / GLOBAL_DIR / "CURRENT").write_text("MANIFEST-999999\n")
    g = GlobalTables(t, tmp_path)
    with caplog.at_level("WARNING", logger="streams.state.global_store"):
        g.open()
    try:
        assert g.offsets == {}  # reloaded from the topics' beginning
        assert g.path is not None and g.path.name == GLOBAL_DIR
    finally:
        g.close()
    (line,) = [r.getMessage() for r in caplog.records]
    assert f"state in {tmp_path / GLOBAL_DIR} is corrupt" in line and "wiped" in line
