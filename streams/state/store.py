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

import shutil
from bisect import bisect_left
import time
from collections.abc import Iterator
from pathlib import Path

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


def _keeping(items: Iterator[tuple[bytes, bytes]], opts: ReadOptions
             ) -> Iterator[tuple[bytes, bytes]]:
    # The iterator reads its upper bound from ``opts``: freeing ``opts`` while the iterator is
    # in use silently truncates the scan, so this frame keeps it alive until the end.
    yield from items
    del opts


class StoreLocked(RuntimeError):
    """Another process holds this task's RocksDB."""


class TaskStore:
    """The RocksDB of one task, with a write buffer per table committed in one batch."""

    def __init__(self, path: Path, tables: list[str], *, read_only: bool = False,
                 lock_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.tables = list(tables)
        self.read_only = read_only
        cfs = {name: Options(raw_mode=True) for name in [*self.tables, META]}
        if not read_only:
            self.path.mkdir(parents=True, exist_ok=True)
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
            except Exception as exc:  # rocksdict raises plain Exception on a held LOCK
                # On a rebalance the previous owner may still be closing this task's store.
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    if "lock" in str(exc).lower():
                        raise StoreLocked(f"{self.path} is locked by another process") from exc
                    raise
                time.sleep(0.2)
        self._cf = {name: self.db.get_column_family(name) for name in cfs}
        self._handles = {name: self.db.get_column_family_handle(name) for name in cfs}
        # table -> key -> value bytes (None = delete); ordered by first write.
        self._pending: dict[str, dict[bytes, bytes | None]] = {t: {} for t in self.tables}
        self._meta_keys = set(self.meta())

    @staticmethod
    def existing_tables(path: Path) -> list[str] | None:
        """The tables (column families) of the RocksDB at ``path``; None if there is none."""
        if not (Path(path) / "CURRENT").exists():
            return None
        cfs = Rdict.list_cf(str(path), Options(raw_mode=True))
        return sorted(c for c in cfs if c not in ("default", META))

    # -- reads ------------------------------------------------------------------------------------
    def get(self, table: str, key: bytes) -> bytes | None:
        pending = self._pending[table]
        if key in pending:
            return pending[key]
        cf = self._cf.get(table)
        return None if cf is None else cf.get(key)

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
            db = _keeping(cf.items(from_key=start, read_opt=opts), opts)
        return overlay(db, self._pending[table], start, end)

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
        return iter(cf.items())

    def meta(self) -> dict[str, str]:
        cf = self._cf.get(META)
        if cf is None:
            return {}
        return {k.decode(): v.decode() for k, v in cf.items()}

    def count_keys(self, table: str, limit: int = 200_000) -> tuple[int, bool]:
        """(number of keys, exact?): counted up to ``limit``, RocksDB's estimate beyond."""
        cf = self._cf.get(table)
        if cf is None:
            return 0, True
        n = 0
        for _ in cf.keys():
            n += 1
            if n > limit:
                return max(n, self.approximate_keys(table)), False
        return n, True

    def approximate_keys(self, table: str) -> int:
        cf = self._cf.get(table)
        if cf is None:
            return 0
        return int(cf.property_int_value("rocksdb.estimate-num-keys") or 0)

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
        self.db.write(batch)
        for pending in self._pending.values():
            pending.clear()

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
        self.db.write(batch)

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
        shutil.rmtree(path, ignore_errors=True)

