"""RocksDB state of one task, committed in one WriteBatch.

Layout: one RocksDB directory per task (``<state_dir>/<topology>/<task>/``) with

* a column family per table: key bytes -> value bytes (the table's serde);
* the column family ``__meta``: what the state reflects — input offsets, upstream positions,
  stream time (format in :mod:`streams.state.meta`).

Writes of a commit interval are buffered in memory (reads see them) and land together with the
meta entries in one ``WriteBatch``: after a crash the state and the offsets it reflects agree.
faust writes its offset key with a separate ``put``, so a crash between the two double-applies.

Keys are raw bytes in RocksDB's lexicographic order, so window stores and join buffers keep
``key + big-endian timestamp`` keys (encodings in :mod:`streams.state.window_store`) and scan
ranges with :meth:`TaskStore.range`.
"""

from __future__ import annotations

import errno
import re
import shutil
import time
from bisect import bisect_left
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rocksdict import AccessType, Options, Rdict, ReadOptions, WriteBatch

META = "__meta"


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    return opts


def overlay(base: Iterator[tuple[bytes, bytes]], changes: dict[bytes, bytes | None],
            start: bytes = b"", end: bytes | None = None,
            sorted_keys: list[bytes] | None = None) -> Iterator[tuple[bytes, bytes]]:
    """Merge ``base`` (sorted, within ``[start, end)``) with the ``changes`` in that range
    (a value replaces, ``None`` deletes), in key order. ``changes`` is read now, once; only its
    keys in the range are sorted, so a large base is streamed, not materialized. With
    ``sorted_keys`` (the keys of ``changes``, sorted) the range is found by bisection instead
    of a pass over every change: scans of a busy store stay cheap."""
    if sorted_keys is not None:
        lo = bisect_left(sorted_keys, start)
        hi = len(sorted_keys) if end is None else bisect_left(sorted_keys, end, lo)
        ch = [(k, changes[k]) for k in sorted_keys[lo:hi]]
    else:
        ch = sorted((k, v) for k, v in changes.items() if start <= k and (end is None or k < end))
    return _merge(base, ch)


def _merge(base: Iterator[tuple[bytes, bytes]], ch: list[tuple[bytes, bytes | None]]
           ) -> Iterator[tuple[bytes, bytes]]:
    i, n = 0, len(ch)
    for k, v in base:
        while i < n and ch[i][0] < k:
            if ch[i][1] is not None:
                yield ch[i]  # type: ignore[misc]
            i += 1
        if i < n and ch[i][0] == k:
            if ch[i][1] is not None:
                yield ch[i]  # type: ignore[misc]
            i += 1
        else:
            yield k, v
    for k, cv in ch[i:]:
        if cv is not None:
            yield k, cv


def _keeping(store: TaskStore, items: Iterator[Any], opts: ReadOptions | None
             ) -> Iterator[Any]:
    # The iterator reads its upper bound from ``opts``: freeing ``opts`` while the iterator is
    # in use silently truncates the scan, so this frame keeps it alive until the end.
    try:
        yield from items
    except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception
        raise store.failed(exc) from exc
    del opts


class StoreLocked(RuntimeError):
    """Another process holds this task's RocksDB."""


class StateCorrupted(RuntimeError):
    """The RocksDB in ``path`` is damaged (a checksum mismatch, a bad or missing table file, a
    CURRENT file naming no MANIFEST): its state cannot be trusted. The worker wipes it and
    restores the task from its changelog, as Kafka Streams does for a corrupted task."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        super().__init__(f"state in {path} is corrupt ({_first_line(detail)})")


class StateStorageError(RuntimeError):
    """The state directory cannot be written: no space left, read-only, no permission."""


# A file RocksDB's own metadata names is missing: the database is damaged, not absent (an
# absent database has no CURRENT, which is not matched here).
_MISSING_DB_FILE = re.compile(r"No such file or directory.*(MANIFEST-\d+|\d+\.(sst|log|blob))")
_STORAGE = (("No space left on device", "no space left on device"),
            ("Disk quota exceeded", "disk quota exceeded"),
            ("Read-only file system", "read-only file system"),
            ("Permission denied", "permission denied"))
_STORAGE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                   errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                   errno.EPERM: "permission denied"}
# Marker left in a store's directory when a read or write after the open found corruption:
# the next open wipes the store instead of trusting it again.
CORRUPT_MARKER = "STREAMS-CORRUPT"


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line if len(line) <= limit else line[:limit] + "..."


def state_error(path: Path, exc: BaseException) -> BaseException:
    """What a failed RocksDB (or file system) operation on the state in ``path`` means:
    :class:`StateCorrupted`, :class:`StateStorageError` (one line naming the path),
    :class:`StoreLocked`, or ``exc`` itself. Matched on RocksDB's status text ("Corruption:",
    "IO error: ...") — rocksdict raises a plain Exception — and never on a bare word: "block
    checksum mismatch" contains "lock"."""
    if isinstance(exc, (StateCorrupted, StateStorageError, StoreLocked)):
        return exc
    text = str(exc)
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        return StateStorageError(f"state directory {path}: {_STORAGE_ERRNOS[exc.errno]} "
                                 f"({_first_line(text)})")
    if "Corruption:" in text or _MISSING_DB_FILE.search(text):
        return StateCorrupted(path, text)
    for needle, what in _STORAGE:
        if needle in text:
            return StateStorageError(f"state directory {path}: {what} ({_first_line(text)})")
    if "/LOCK:" in text or "lock hold by" in text:
        return StoreLocked(f"{path} is locked by another process")
    return exc


class TaskStore:
    """The RocksDB of one task, with a write buffer per table committed in one batch."""

    def __init__(self, path: Path, tables: list[str], *, read_only: bool = False,
                 lock_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.tables = list(tables)
        self.read_only = read_only
        cfs = {name: Options(raw_mode=True) for name in [*self.tables, META]}
        if (self.path / CORRUPT_MARKER).exists():
            raise StateCorrupted(self.path, (self.path / CORRUPT_MARKER).read_text(
                errors="replace") or "marked corrupt")
        if not read_only:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise state_error(self.path, exc) from exc
        deadline = time.monotonic() + lock_timeout
        while True:
            try:
                if read_only:
                    existing = set(Rdict.list_cf(str(self.path), Options(raw_mode=True)))
                    cfs = {k: v for k, v in cfs.items() if k in existing}
                    self.db = Rdict(str(self.path), options=_options(), column_families=cfs,
                                    access_type=AccessType.read_only())
                else:
                    self.db = Rdict(str(self.path), options=_options(), column_families=cfs)
                break
            except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception
                error = state_error(self.path, exc)
                # On a rebalance the previous owner may still be closing this task's store.
                if not isinstance(error, StoreLocked) or time.monotonic() > deadline:
                    if error is exc:
                        raise
                    raise error from exc
                time.sleep(0.2)
        self._cf = {name: self.db.get_column_family(name) for name in cfs}
        self._handles = {name: self.db.get_column_family_handle(name) for name in cfs}
        # table -> key -> value bytes (None = delete); ordered by first write.
        self._pending: dict[str, dict[bytes, bytes | None]] = {t: {} for t in self.tables}
        try:
            self._meta_keys = set(self.meta())
        except BaseException:
            self.close()  # (releases the LOCK: the opener wipes and reopens this directory)
            raise

    @staticmethod
    def existing_tables(path: Path) -> list[str] | None:
        """The tables (column families) of the RocksDB at ``path``; None if there is none."""
        if not (Path(path) / "CURRENT").exists():
            return None
        if (Path(path) / CORRUPT_MARKER).exists():
            raise StateCorrupted(Path(path), "marked corrupt")
        try:
            cfs = Rdict.list_cf(str(path), Options(raw_mode=True))
        except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception
            error = state_error(Path(path), exc)
            if error is exc:
                raise
            raise error from exc
        return sorted(c for c in cfs if c not in ("default", META))

    def failed(self, exc: BaseException) -> BaseException:
        """The error to raise for ``exc`` from a read or write of the open store. Corruption
        found now (a block checksum mismatch in a data block: opening reads only the files'
        footers and indexes) marks the directory, so that the next open of the task wipes it
        and restores from the changelog instead of trusting it again."""
        error = state_error(self.path, exc)
        if isinstance(error, StateCorrupted) and not self.read_only:
            try:
                (self.path / CORRUPT_MARKER).write_text(_first_line(str(exc)))
            except OSError:
                pass  # (the error still stops the worker; the open finds the damage again)
        return error

    # -- reads ------------------------------------------------------------------------------------
    def get(self, table: str, key: bytes) -> bytes | None:
        pending = self._pending[table]
        if key in pending:
            return pending[key]
        cf = self._cf.get(table)
        try:
            return None if cf is None else cf.get(key)
        except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception
            raise self.failed(exc) from exc

    def range(self, table: str, start: bytes = b"", end: bytes | None = None
              ) -> Iterator[tuple[bytes, bytes]]:
        """Entries with ``start <= key < end`` (``end=None``: no upper bound) in key order,
        buffered writes included: a buffered value replaces RocksDB's, a buffered delete hides
        it. Lazy: RocksDB is read as the caller advances, through one bounded iterator; the
        buffer is copied first, so writes made while iterating are not seen."""
        cf = self._cf.get(table)
        if cf is None:
            db: Iterator[tuple[bytes, bytes]] = iter(())
        else:
            opts = ReadOptions()
            if end is not None:
                opts.set_iterate_upper_bound(end)
            db = _keeping(self, cf.items(from_key=start, read_opt=opts), opts)
        return overlay(db, self._pending[table], start, end)

    def committed_reader(self) -> TaskStore:
        """A reader of this store that sees only what is committed (RocksDB, no buffered
        writes): served reads never show half of a batch, and under exactly-once only state
        whose transaction committed (RocksDB is written after the commit). It shares the
        open database: use it synchronously, never after :meth:`close`. Not for writes."""
        reader = object.__new__(TaskStore)
        reader.__dict__.update(self.__dict__)
        reader._pending = {t: {} for t in self.tables}
        reader.read_only = True  # (a corruption it finds is the owner's to mark)
        return reader

    def has_pending(self, table: str) -> bool:
        """Whether ``table`` has writes buffered for the next WriteBatch."""
        return bool(self._pending.get(table))

    def last_committed(self, table: str, prefix: bytes, upper: bytes
                       ) -> tuple[bytes, bytes] | None:
        """The entry of RocksDB (buffered writes not included) with the largest key
        ``<= upper`` among those starting with ``prefix``, by one reverse seek."""
        cf = self._cf.get(table)
        if cf is None:
            return None
        for key, value in cf.items(backwards=True, from_key=upper):
            if isinstance(key, bytes) and key.startswith(prefix):
                return key, value
            return None
        return None

    def items(self, table: str) -> Iterator[tuple[bytes, bytes]]:
        cf = self._cf.get(table)
        if cf is None:
            return iter(())
        return _keeping(self, cf.items(), None)

    def meta(self) -> dict[str, str]:
        cf = self._cf.get(META)
        if cf is None:
            return {}
        return {k.decode(): v.decode() for k, v in _keeping(self, cf.items(), None)}

    def count_keys(self, table: str, limit: int = 200_000) -> tuple[int, bool]:
        """(number of keys, exact?): counted up to ``limit``, RocksDB's estimate beyond."""
        cf = self._cf.get(table)
        if cf is None:
            return 0, True
        n = 0
        for _ in _keeping(self, cf.keys(), None):
            n += 1
            if n > limit:
                return max(n, self.approximate_keys(table)), False
        return n, True

    def approximate_keys(self, table: str) -> int:
        cf = self._cf.get(table)
        if cf is None:
            return 0
        return int(cf.property_int_value("rocksdb.estimate-num-keys") or 0)

    def approximate_bytes(self, table: str) -> int:
        """The size of ``table``'s column family: its SST files plus its memtables (RocksDB's
        ``total-sst-files-size`` and ``size-all-mem-tables`` properties; the WAL and the
        task's metadata are shared by the task's tables and not counted)."""
        cf = self._cf.get(table)
        if cf is None:
            return 0
        return sum(int(cf.property_int_value(p) or 0)
                   for p in ("rocksdb.total-sst-files-size", "rocksdb.size-all-mem-tables"))

    # -- writes -----------------------------------------------------------------------------------
    def put(self, table: str, key: bytes, value: bytes | None) -> None:
        self._pending[table][key] = value



    def write(self, meta: dict[str, str]) -> None:
        """Write all buffered table changes and ``meta`` in ONE WriteBatch; ``meta`` replaces
        the previous meta entries (keys it no longer has are deleted in the same batch)."""
        batch = WriteBatch(raw_mode=True)
        for table, pending in self._pending.items():
            handle = self._handles[table]
            for key, value in pending.items():
                if value is None:
                    batch.delete(key, handle)
                else:
                    batch.put(key, value, handle)
        self._replace_meta(batch, meta)
        self._write(batch)
        for pending in self._pending.values():
            pending.clear()

    def _write(self, batch: WriteBatch) -> None:
        try:
            self.db.write(batch)
        except Exception as exc:  # noqa: BLE001 - rocksdict raises plain Exception
            raise self.failed(exc) from exc

    def write_raw(self, table: str, entries: list[tuple[bytes, bytes | None]],
                  meta: dict[str, str] | None = None) -> None:
        """Bulk write (changelog restore), bypassing the buffer; with ``meta``, the meta entries
        are replaced in the same WriteBatch (restore progress survives an interruption)."""
        batch = WriteBatch(raw_mode=True)
        handle = self._handles[table]
        for key, value in entries:
            if value is None:
                batch.delete(key, handle)
            else:
                batch.put(key, value, handle)
        if meta is not None:
            self._replace_meta(batch, meta)
        self._write(batch)

    def _replace_meta(self, batch: WriteBatch, meta: dict[str, str]) -> None:
        handle = self._handles[META]
        for k in self._meta_keys - meta.keys():
            batch.delete(k.encode(), handle)
        for k, v in meta.items():
            batch.put(k.encode(), v.encode(), handle)
        self._meta_keys = set(meta)

    def discard_pending(self) -> None:
        for pending in self._pending.values():
            pending.clear()

    def close(self) -> None:
        if self.db is not None:
            # rocksdict's column-family objects keep the DB (and its LOCK) alive after close():
            # drop them first, or the next owner of this task cannot open it.
            self._cf.clear()
            self._handles.clear()
            self.db.close()
            self.db = None  # type: ignore[assignment]

    @staticmethod
    def destroy(path: Path) -> None:
        """Delete the store's directory; a directory that cannot be deleted (read-only, no
        permission) raises :class:`StateStorageError` instead of being restored on top of."""
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise state_error(Path(path), exc) from exc


def count_entries_and_keys(store: TaskStore, table: str, end: bytes) -> tuple[int, int]:
    """(entries, distinct record keys) of ``table``'s entries below ``end``, for stores whose
    entry keys start with the record key length-prefixed (4 bytes, big endian): windows,
    sessions, join buffers, versions."""
    entries = keys = 0
    last = b""
    for kb, _ in store.range(table, b"", end):
        entries += 1
        prefix = kb[:4 + int.from_bytes(kb[:4], "big")]
        if prefix != last:
            keys += 1
            last = prefix
    return entries, keys
