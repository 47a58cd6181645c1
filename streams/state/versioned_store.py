"""Versioned key-value store: every version of a key by timestamp, for as-of lookups.

Kafka Streams' ``VersionedKeyValueStore`` (``RocksDBVersionedStore``), in one column family of
the task's RocksDB, so it shares the task's per-commit WriteBatch, its changelog and its restore
like every other store (:class:`~streams.state.store_view.StoreView`).

Rules (Kafka's):

* ``get_as_of(key, t)`` is the version with the largest timestamp ``<= t``; a tombstone is a
  version too, so as of a time at or after a delete the key has no row. Two writes of one key at
  one timestamp: the second replaces the first.
* The store's **observed stream time** ``T`` is the largest timestamp ever written to it (its
  own clock, not the task's: a stream racing ahead does not expire table versions).
  **History retention** ``R`` bounds how far back lookups are exact: a write older than
  ``T - R`` is dropped (:meth:`put` returns False); a lookup as of a time before ``T - R`` gets
  the key's latest version if that one is not after the time, else nothing (the latest version
  of a key never expires).
* A version no lookup can return any more is deleted: a value once the next version of its key
  is at or before ``T - R``, a tombstone once it is itself at or before ``T - R``.

Encodings (key prefix and time bytes as in :mod:`streams.state.window_store`):

* version: ``len + key + ts`` -> ``0x01 + value bytes``, or ``0x00`` for a tombstone;
* expiry index: ``0xff + expiry time + version key`` -> empty, where the expiry time is the
  next version's timestamp for a value and its own for a tombstone (a key's latest value has
  none); :meth:`expire` reads it, so it costs what it deletes;
* ``0xfe`` -> the observed stream time, as 8 bytes: changelogged with the versions, so a
  restored store drops and answers exactly as before.

``users.put("u1", {"tier": "GOLD"}, 1_000); users.put("u1", {"tier": "BASIC"}, 5_000)`` then
``users.get_as_of("u1", 4_999)`` is ``{"tier": "GOLD"}`` and ``users.get("u1")`` (the latest)
is ``{"tier": "BASIC"}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from ..serdes import MAX_RECORD_BYTES, Serde
from .store import TaskStore, count_entries_and_keys
from .store_view import StoreView
from .window_store import JoinBufferView, key_prefix, prefix_end, time_bytes, time_of

_VALUE, _TOMBSTONE = b"\x01", b"\x00"
# what ``put`` did (Kafka's put returns the new version's validTo, or a code for "not put")
DROPPED, LATEST, HISTORY = 0, 1, 2
_INDEX = b"\xff"
STREAM_TIME_KEY = b"\xfe"
_LAST_TIME = b"\xff" * 8  # above every time_bytes()
_NO_VALUE: Any = object()
_UNKNOWN = None


class Version(NamedTuple):
    ts: int
    pk: bytes       # the version's key in the store
    data: bytes     # 0x01 + value bytes, or 0x00


def _is_value(data: bytes) -> bool:
    return data[:1] == _VALUE


class VersionedTableView(StoreView):
    """One versioned table of one task (see the module docstring for the rules).

    ``history_ms`` is the history retention; values are serialized when they are put, as in
    :class:`~streams.state.store_view.TableView`.
    """

    def __init__(self, store: TaskStore, name: str, key_serde: Serde, value_serde: Serde,
                 history_ms: int = 0) -> None:
        super().__init__(store, name, key_serde, value_serde)
        if history_ms < 0:
            raise ValueError(f"history retention of {name!r} must be >= 0, got {history_ms}")
        self.history_ms = history_ms
        self._time: int | None = _UNKNOWN  # cached observed stream time
        # Every expiry index entry below this time is deleted (the cutoff only grows, and no
        # entry is written below it), so ``expire`` starts its scan here instead of walking the
        # deletes since the last commit again; None: from the start.
        self._expired_to: int | None = None
        # keys (their prefixes) with version writes since the last flush: their lookups merge
        # the buffer in; the others are answered by RocksDB alone
        self._dirty_prefixes: set[bytes] = set()

    # -- stream time ------------------------------------------------------------------------------
    @property
    def stream_time(self) -> int:
        """The largest timestamp written to this table (-1 before the first write)."""
        if self._time is None:
            data = self.raw(STREAM_TIME_KEY)
            self._time = -1 if data is None else time_of(data, 0)
        return self._time

    def raw(self, kb: bytes) -> bytes | None:
        """The stored bytes of ``kb`` (buffered writes first)."""
        if kb in self._dirty:
            return self._dirty[kb]
        return self.store.get(self.name, kb)

    # -- reads ------------------------------------------------------------------------------------
    def _versions(self, prefix: bytes, up_to: int | None = None) -> Iterator[Version]:
        """The versions of the key with ``prefix`` (up to ``up_to`` inclusive), oldest first."""
        end = prefix_end(prefix if up_to is None else prefix + time_bytes(up_to))
        at = len(prefix)
        for pk, data in self.range_bytes(prefix, end):
            yield Version(time_of(pk, at), pk, data)

    def _last(self, prefix: bytes, up_to: int | None = None) -> Version | None:
        """The key's last version (up to ``up_to``): one reverse seek in RocksDB, unless the
        key has writes not yet committed (then a scan of its versions with those merged in)."""
        if prefix not in self._dirty_prefixes and not self.store.has_pending(self.name):
            upper = prefix + (_LAST_TIME if up_to is None else time_bytes(up_to))
            found = self.store.last_committed(self.name, prefix, upper)
            return None if found is None else Version(time_of(found[0], len(prefix)), *found)
        last = None
        for version in self._versions(prefix, up_to):
            last = version
        return last

    def _decoded_value(self, version: Version | None, default: Any) -> Any:
        if version is None or not _is_value(version.data):
            return default
        return self._deserialize(version.data[1:])

    def get_as_of_bytes(self, kb: bytes, as_of: int, default: Any = None) -> Any:
        """The value of the key bytes ``kb`` as of ``as_of`` (Kafka's ``get(key, asOf)``)."""
        prefix = key_prefix(kb)
        if as_of < self.stream_time - self.history_ms:
            # Outside history: only the latest version can still answer, if it is not later.
            latest = self._last(prefix)
            return default if latest is None or latest.ts > as_of else \
                self._decoded_value(latest, default)
        return self._decoded_value(self._last(prefix, as_of), default)

    def get_as_of(self, key: Any, as_of: int, default: Any = None) -> Any:
        """The value of ``key`` as of the time ``as_of`` (epoch ms); ``default`` if the key had
        no row then (never written by then, deleted, or before retention)."""
        return self.get_as_of_bytes(self.key_bytes(key), as_of, default)

    def get_by_bytes(self, kb: bytes, default: Any = None) -> Any:
        """The latest value of the key bytes ``kb`` (a tombstone: ``default``)."""
        return self._decoded_value(self._last(key_prefix(kb)), default)

    def get(self, key: Any, default: Any = None) -> Any:
        """The latest value of ``key``."""
        return self.get_by_bytes(self.key_bytes(key), default)

    def versions(self, key: Any) -> list[tuple[int, Any]]:
        """[(timestamp, value or None for a tombstone)] of ``key``'s stored versions, oldest
        first (what `streams tables get` shows)."""
        return [(v.ts, self._decoded_value(v, None))
                for v in self._versions(key_prefix(self.key_bytes(key)))]

    def latest_items(self) -> Iterator[tuple[bytes, Any]]:
        """(key bytes, latest value) of every key whose latest version is not a tombstone."""
        last: Version | None = None
        last_prefix = b""
        for pk, data in self.range_bytes(b"", STREAM_TIME_KEY):
            n = int.from_bytes(pk[:4], "big")
            prefix = pk[:4 + n]
            if last is not None and prefix != last_prefix and _is_value(last.data):
                yield last_prefix[4:], self._deserialize(last.data[1:])
            last, last_prefix = Version(0, pk, data), prefix
        if last is not None and _is_value(last.data):
            yield last_prefix[4:], self._deserialize(last.data[1:])

    # -- writes -----------------------------------------------------------------------------------
    def put(self, key: Any, value: Any, ts: int) -> int:
        """Write ``value`` (``None``: a tombstone) as ``key``'s version at ``ts``. Returns
        ``LATEST`` if it is now the key's latest version, ``HISTORY`` if a later one exists,
        ``DROPPED`` (0, false), writing nothing, when ``ts`` is older than the history retention
        allows (Kafka drops such writes). Raises, writing nothing, if the value cannot be
        serialized or its changelog record would be too large."""
        kb = self.key_bytes(key)
        now = self.stream_time
        if now >= 0 and ts < now - self.history_ms:
            return DROPPED
        vb = None if value is None else self._serialize(value)
        data = _TOMBSTONE if vb is None else _VALUE + vb  # a serde's None is a delete too
        prefix = key_prefix(kb)
        pk = prefix + time_bytes(ts)
        if len(pk) + len(data) > MAX_RECORD_BYTES:
            raise ValueError(f"table {self.name!r}: changelog record of {len(pk) + len(data)} "
                             f"bytes exceeds {MAX_RECORD_BYTES}")
        prev = same = after = None
        for version in self._versions(prefix):
            if version.ts < ts:
                prev = version
            elif version.ts == ts:
                same = version
            else:
                after = version
                break
        next_ts = None if after is None else after.ts
        if prev is not None and same is None and _is_value(prev.data):
            self._reindex(prev.pk, next_ts, ts)  # the previous value is now valid until ts
        if same is not None:
            self._reindex(pk, _expiry(same.data, ts, next_ts), _expiry(data, ts, next_ts))
        else:
            self._reindex(pk, None, _expiry(data, ts, next_ts))
        self.put_raw(pk, data)
        if ts > now:
            self._time = ts
            self.put_raw(STREAM_TIME_KEY, time_bytes(ts))
        return LATEST if after is None else HISTORY

    def put_raw(self, kb: bytes, vb: bytes | None, value: Any = _NO_VALUE) -> None:
        if kb[:1] == b"\x00":  # a version (index and stream-time keys start 0xff, 0xfe)
            self._dirty_prefixes.add(kb[:-8])
        super().put_raw(kb, vb) if value is _NO_VALUE else super().put_raw(kb, vb, value)

    def flush(self) -> list[tuple[bytes, bytes | None]]:
        # The buffer moves to the store's batch (``has_pending`` covers it until written); the
        # stream time and the expiry cutoff it reflects stay as they are.
        now, expired_to = self._time, self._expired_to
        out = super().flush()
        self._time, self._expired_to = now, expired_to
        self._dirty_prefixes.clear()
        return out

    def _reindex(self, pk: bytes, old: int | None, new: int | None) -> None:
        if old == new:
            return
        if old is not None:
            self.put_raw(_INDEX + time_bytes(old) + pk, None)
        if new is not None:
            self.put_raw(_INDEX + time_bytes(new) + pk, b"")

    def expire(self) -> int:
        """Delete the versions no lookup can return any more (expiry at or before
        ``T - R``); returns how many."""
        now = self.stream_time
        if now < 0:
            return 0
        cutoff = now - self.history_ms
        start = _INDEX if self._expired_to is None else _INDEX + time_bytes(self._expired_to)
        expired = list(self.range_bytes(start, prefix_end(_INDEX + time_bytes(cutoff))))
        for ik, _ in expired:
            self.put_raw(ik[9:], None)
            self.put_raw(ik, None)
        self._expired_to = cutoff + 1
        return len(expired)

    # -- buffer lifecycle: the cached stream time follows the buffered writes ---------------------
    def rollback(self) -> None:
        super().rollback()
        self._time = self._expired_to = _UNKNOWN

    def discard(self) -> None:
        super().discard()
        self._time = self._expired_to = _UNKNOWN
        self._dirty_prefixes.clear()


class GraceBufferView(JoinBufferView):
    """The stream records a join holds back for its grace period: a join buffer (per key, any
    number of values per timestamp, in arrival order) released by time range."""

    def pop_range(self, ts_from: int, ts_to: int) -> list[tuple[Any, int, Any]]:
        """Delete every entry with ``ts_from <= ts <= ts_to`` and return them as [(key, ts,
        value)], by ts then key bytes then arrival. With ``ts_from`` at or below the earliest
        held timestamp this releases everything up to ``ts_to`` and, unlike a scan from the
        beginning, does not walk the entries released since the last commit again."""
        out = []
        for pk, value in self._entries(self._indexed(ts_from, ts_to)):
            key, (t,) = self._split(pk, 1)
            out.append((key, t, value))
            self._write(pk, t, None)
        return out


def _expiry(data: bytes, ts: int, next_ts: int | None) -> int | None:
    """When a version at ``ts`` stops being returnable: a tombstone at once, a value when the
    next version starts (never, for a key's latest value)."""
    return next_ts if _is_value(data) else ts


def count_versions(store: TaskStore, table: str) -> tuple[int, int]:
    """(versions, distinct keys) stored in the versioned ``table`` (tombstones included)."""
    return count_entries_and_keys(store, table, STREAM_TIME_KEY)
