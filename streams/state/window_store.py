"""Window stores, session stores and join buffers: records addressed by (key, time...).

They live in one column family of the task's RocksDB like a key-value table, so they share its
per-commit WriteBatch, its changelog (``flush()`` returns the entries) and the per-record
savepoint (``begin``/``rollback``/``release``) of :class:`~streams.state.store_view.StoreView`.

Encodings (RocksDB orders keys as bytes, so these group by record key, then by time):

* a time ``t`` (signed 64-bit epoch ms) is ``t + 2**63`` as 8 bytes big-endian, so negative
  times sort before positive ones;
* a record key is ``len(key bytes)`` as 4 bytes big-endian, then the key bytes (the length
  prefix keeps ``"a"``'s entries apart from ``"ab"``'s); keys are shorter than 2**24 bytes, so
  this primary key space always starts with ``0x00``;
* window store:  ``len + key + start``;
* session store: ``len + key + start + end``;
* join buffer:   ``len + key + ts + seq`` (``seq``: 4 bytes big-endian, numbering the values of
  one key at one ts in insertion order);
* time index: ``0xff + time + primary key`` -> empty value, where time is the window start
  (window store), the session end (session store) or the ts (join buffer). ``fetch_all`` and
  ``expire_before`` read it, so they cost what they return, not a scan of every key. Index
  entries are written, committed and changelogged with their record (a restore rebuilds them),
  so the changelog and RocksDB's key counts hold two entries per record.

Window values may carry a timestamp (Kafka Streams' ``ValueAndTimestamp``: a
window's largest record timestamp): ``0xfe 0x01 + ts (8 bytes, as above) + serde bytes``.
Values written without one are the plain serde bytes (state from before timestamps were kept,
and windowed agent tables); readers take both. No UTF-8 text starts with 0xfe, so a JSON,
Record or str value is never mistaken for a stamped one.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Any

from ..serdes import MAX_RECORD_BYTES
from .store_view import StoreView

_OFFSET = 1 << 63
_INDEX = b"\xff"
_MAX_KEY = 1 << 24  # keeps the first byte of a primary key 0x00, below the index's 0xff
_SEQ = 4
_FIRST_SEQ = bytes(_SEQ)
_STAMP = b"\xfe\x01"
_STAMPED = len(_STAMP) + 8


def time_bytes(ts: int) -> bytes:
    """``ts`` as 8 bytes that sort like the signed number.

    >>> time_bytes(-1) < time_bytes(0) < time_bytes(1)
    True
    """
    t = operator.index(ts)
    if not -_OFFSET <= t < _OFFSET:
        raise ValueError(f"timestamp {ts} does not fit in a signed 64-bit integer")
    return (t + _OFFSET).to_bytes(8, "big")


def time_of(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 8], "big") - _OFFSET


def key_prefix(kb: bytes) -> bytes:
    """The prefix shared by every entry of the record key ``kb``: length, then the bytes."""
    if len(kb) >= _MAX_KEY:
        raise ValueError(f"key of {len(kb)} bytes is too long for a window store")
    return len(kb).to_bytes(4, "big") + kb


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key above every key that starts with ``prefix`` (None: no such key)."""
    p = prefix.rstrip(b"\xff")
    return p[:-1] + bytes([p[-1] + 1]) if p else None


class TimeKeyedView(StoreView):
    """Shared machinery: primary entries ``key_prefix + times (+ seq)`` and the time index."""

    def _write(self, pk: bytes, index_time: int, value: Any) -> None:
        """Put (or with ``None`` delete) the record ``pk`` and its index entry."""
        self.put_by_bytes(pk, value)  # first: if the value is refused, nothing has changed
        self.put_raw(_INDEX + time_bytes(index_time) + pk, None if value is None else b"")

    def _scan(self, prefix: bytes, t_from: int, t_to: int) -> Iterator[tuple[bytes, bytes]]:
        """Entries under ``prefix`` whose next time is in ``[t_from, t_to]``, in order."""
        if t_from > t_to:
            return iter(())
        end = prefix_end(prefix + time_bytes(t_to))
        return self.range_bytes(prefix + time_bytes(t_from), end)

    def _indexed(self, t_from: int | None, t_to: int | None) -> list[bytes]:
        """Primary keys whose index time is in ``[t_from, t_to]`` (None: unbounded), by time."""
        if t_from is not None and t_to is not None and t_from > t_to:
            return []
        start = _INDEX if t_from is None else _INDEX + time_bytes(t_from)
        end = None if t_to is None else prefix_end(_INDEX + time_bytes(t_to))
        return [ik[9:] for ik, _ in self.range_bytes(start, end)]

    def _times(self, key: Any, t_from: int, t_to: int) -> list[tuple[int, Any]]:
        """[(first time, value)] of ``key``'s entries with that time in ``[t_from, t_to]``."""
        prefix = key_prefix(self.key_bytes(key))
        at = len(prefix)
        return [(time_of(pk, at), self.decode(pk, vb))
                for pk, vb in self._scan(prefix, t_from, t_to)]

    def _entries(self, pks: list[bytes]) -> Iterator[tuple[bytes, Any]]:
        for pk in pks:
            value = self.get_by_bytes(pk)
            if value is not None:
                yield pk, value

    def _split(self, pk: bytes, times: int) -> tuple[Any, list[int]]:
        """(decoded record key, its ``times`` times) of the primary key ``pk``."""
        n = int.from_bytes(pk[:4], "big")
        return (self.key_serde.deserialize(pk[4:4 + n]),
                [time_of(pk, 4 + n + 8 * i) for i in range(times)])

    def _expire(self, before: int, since: int | None = None) -> int:
        """Delete every record whose index time is below ``before`` (and at or above
        ``since``: the caller knows nothing is left below it); returns how many."""
        if since is not None and since >= before:
            return 0
        start = _INDEX if since is None else _INDEX + time_bytes(since)
        expired = list(self.range_bytes(start, _INDEX + time_bytes(before)))
        for ik, _ in expired:
            self.put_raw(ik[9:], None)
            self.put_raw(ik, None)
        return len(expired)


class WindowStoreView(TimeKeyedView):
    """Kafka Streams' (timestamped) WindowStore: one value per (record key, window start),
    optionally with a timestamp (see the module doc).

    ``get``/``fetch``/``fetch_all`` give values alone; ``*_stamped`` readers give the stored
    timestamp too (None for a value stored without one):

    >>> import tempfile
    >>> from streams.serdes import JsonSerde, KeySerde
    >>> from streams.state.store import TaskStore
    >>> tmp = tempfile.TemporaryDirectory()
    >>> store = TaskStore(tmp.name, ["counts"])
    >>> view = WindowStoreView(store, "counts", KeySerde(), JsonSerde())
    >>> view.put("user-1", 60_000, 3)
    >>> view.put("user-1", 0, 2, ts=45_000)
    >>> view.fetch("user-1", 0, 120_000)
    [(0, 2), (60000, 3)]
    >>> view.get_stamped("user-1", 0), view.get_stamped("user-1", 60_000)
    ((2, 45000), (3, None))
    >>> store.close(); tmp.cleanup()

    The window end is not stored: a windowed operator knows its size (``end = start + size``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plain_deserialize = self._deserialize
        self._deserialize = self._unstamp

    def _unstamp(self, vb: bytes | None) -> Any:
        if vb is not None and vb[:2] == _STAMP:
            return self._plain_deserialize(vb[_STAMPED:])
        return self._plain_deserialize(vb)

    def _raw(self, kb: bytes) -> bytes | None:
        dirty = self._dirty
        return dirty[kb] if kb in dirty else self.store.get(self.name, kb)

    def _put_stamped(self, kb: bytes, value: Any, ts: int) -> None:
        """As :meth:`put_by_bytes` (``value`` not None), the value stamped with ``ts``."""
        payload = self._serialize(value)
        if payload is None:
            raise ValueError(f"table {self.name!r}: the value serializes to null")
        vb = _STAMP + time_bytes(ts) + payload
        if len(kb) + len(vb) > MAX_RECORD_BYTES:
            raise ValueError(f"table {self.name!r}: changelog record of {len(kb) + len(vb)} "
                             f"bytes exceeds {MAX_RECORD_BYTES}")
        self.put_raw(kb, vb, value)

    def window_key(self, key: Any, start: int) -> bytes:
        return key_prefix(self.key_bytes(key)) + time_bytes(start)

    def get(self, key: Any, start: int, default: Any = None) -> Any:
        return self.get_by_bytes(self.window_key(key, start), default)

    def get_stamped(self, key: Any, start: int, default: Any = None) -> tuple[Any, int | None]:
        """(value, the timestamp stored with it or None), or (default, None) if absent."""
        kb = self.window_key(key, start)
        vb = self._raw(kb)  # one read for both (get_by_bytes would read the bytes again)
        if vb is None:
            return default, None
        stamp = time_of(vb, 2) if vb[:2] == _STAMP else None
        return self.decode(kb, vb), stamp

    def put(self, key: Any, start: int, value: Any, ts: int | None = None) -> None:
        """Serialize ``value`` now (``None`` deletes), as :meth:`TableView.put`; ``ts``: the
        timestamp kept with it (the window's largest record timestamp)."""
        kb = self.window_key(key, start)
        if ts is None or value is None:
            self._write(kb, start, value)
            return
        self._put_stamped(kb, value, ts)  # first: if the value is refused, nothing has changed
        self.put_raw(_INDEX + time_bytes(start) + kb, b"")

    def replace(self, key: Any, start: int, value: Any, ts: int | None = None) -> None:
        """Overwrite an existing window's value (its time-index entry is already there, so
        only the window itself is written — and sent to the changelog)."""
        kb = self.window_key(key, start)
        if ts is None:
            self.put_by_bytes(kb, value)
        else:
            self._put_stamped(kb, value, ts)

    def delete(self, key: Any, start: int) -> None:
        self.put(key, start, None)

    def fetch(self, key: Any, start_from: int, start_to: int) -> list[tuple[int, Any]]:
        """[(start, value)] of ``key``'s windows with ``start_from <= start <= start_to``,
        by start."""
        return self._times(key, start_from, start_to)

    def starts(self, key: Any, start_from: int, start_to: int) -> list[int]:
        """The starts of ``key``'s windows in ``[start_from, start_to]`` (values not decoded)."""
        prefix = key_prefix(self.key_bytes(key))
        at = len(prefix)
        return [time_of(pk, at) for pk, _ in self._scan(prefix, start_from, start_to)]

    def fetch_all(self, start_from: int | None = None, start_to: int | None = None
                  ) -> list[tuple[Any, int, Any]]:
        """[(key, start, value)] of every key's windows with ``start_from <= start <= start_to``
        (None: unbounded), by start, then key bytes. Reads the time index: the cost is the
        number of windows returned (plus a point read each), not the size of the store. To
        close windows at stream time T: ``fetch_all(None, T - grace - size)``."""
        out = []
        for pk, value in self._entries(self._indexed(start_from, start_to)):
            key, (start,) = self._split(pk, 1)
            out.append((key, start, value))
        return out

    def fetch_all_stamped(self, start_from: int | None = None, start_to: int | None = None
                          ) -> list[tuple[Any, int, Any, int | None]]:
        """As :meth:`fetch_all`, with each value's stored timestamp (None: stored without)."""
        out = []
        for pk in self._indexed(start_from, start_to):
            vb = self._raw(pk)
            if vb is not None:
                key, (start,) = self._split(pk, 1)
                out.append((key, start, self.decode(pk, vb),
                            time_of(vb, 2) if vb[:2] == _STAMP else None))
        return out

    def expire_before(self, start: int) -> int:
        """Delete the windows of every key with a start below ``start``; returns how many."""
        return self._expire(start)


class SessionStoreView(TimeKeyedView):
    """Kafka Streams' SessionStore: one value per (record key, session start, session end),
    both ends inclusive. The time index is by session end: sessions close and expire by end.

    With a gap of 500, a record at 4300 joins the sessions ending at 3800 or later and
    starting at 4800 or earlier:

    >>> import tempfile
    >>> from streams.serdes import JsonSerde, KeySerde
    >>> from streams.state.store import TaskStore
    >>> tmp = tempfile.TemporaryDirectory()
    >>> store = TaskStore(tmp.name, ["sessions"])
    >>> view = SessionStoreView(store, "sessions", KeySerde(), JsonSerde())
    >>> view.put("user-1", 1_000, 4_000, 2)
    >>> view.put("user-1", 6_000, 6_000, 1)
    >>> view.fetch_sessions("user-1", 4_300 - 500, 4_300 + 500)
    [((1000, 4000), 2)]
    >>> store.close(); tmp.cleanup()
    """

    def session_key(self, key: Any, start: int, end: int) -> bytes:
        if end < start:
            raise ValueError(f"session end {end} is before its start {start}")
        return key_prefix(self.key_bytes(key)) + time_bytes(start) + time_bytes(end)

    def get(self, key: Any, start: int, end: int, default: Any = None) -> Any:
        return self.get_by_bytes(self.session_key(key, start, end), default)

    def put(self, key: Any, start: int, end: int, value: Any) -> None:
        """Serialize ``value`` now (``None`` deletes), as :meth:`TableView.put`."""
        self._write(self.session_key(key, start, end), end, value)

    def delete(self, key: Any, start: int, end: int) -> None:
        self.put(key, start, end, None)

    def fetch_sessions(self, key: Any, earliest_end: int, latest_start: int
                       ) -> list[tuple[tuple[int, int], Any]]:
        """[((start, end), value)] of ``key``'s sessions with ``end >= earliest_end`` and
        ``start <= latest_start``, by start: the sessions a record at ``ts`` merges with are
        ``fetch_sessions(key, ts - gap, ts + gap)``. Scans the key's sessions that start up to
        ``latest_start`` (expired ones are gone, so about retention / gap of them)."""
        prefix = key_prefix(self.key_bytes(key))
        at = len(prefix)
        out = []
        for pk, vb in self._scan(prefix, -_OFFSET, latest_start):
            end = time_of(pk, at + 8)
            if end >= earliest_end:
                out.append(((time_of(pk, at), end), self.decode(pk, vb)))
        return out

    def fetch_all(self, end_from: int | None = None, end_to: int | None = None
                  ) -> list[tuple[Any, int, int, Any]]:
        """[(key, start, end, value)] of every session with ``end_from <= end <= end_to``
        (None: unbounded), by end, from the time index. To close sessions at stream time T:
        ``fetch_all(None, T - grace)``."""
        out = []
        for pk, value in self._entries(self._indexed(end_from, end_to)):
            key, (start, end) = self._split(pk, 2)
            out.append((key, start, end, value))
        return out

    def expire_before(self, end: int) -> int:
        """Delete the sessions of every key that end below ``end``; returns how many."""
        return self._expire(end)


class JoinBufferView(TimeKeyedView):
    """The records of one side of a stream-stream join: per key, any number of values per
    timestamp, kept in insertion order.

    >>> import tempfile
    >>> from streams.serdes import JsonSerde, KeySerde
    >>> from streams.state.store import TaskStore
    >>> tmp = tempfile.TemporaryDirectory()
    >>> store = TaskStore(tmp.name, ["orders"])
    >>> buf = JoinBufferView(store, "orders", KeySerde(), JsonSerde())
    >>> ids = [buf.add("o-1", 1_000, {"qty": 2}), buf.add("o-1", 1_000, {"qty": 3})]
    >>> buf.fetch("o-1", 500, 1_500)
    [(1000, {'qty': 2}), (1000, {'qty': 3})]
    >>> store.close(); tmp.cleanup()
    """

    def add(self, key: Any, ts: int, value: Any) -> bytes:
        """Append ``value`` at ``ts`` (after the values already there; ``None`` is refused).
        Returns the entry's id (its primary key), for :meth:`put_entry`/:meth:`delete_entry`."""
        if value is None:
            raise ValueError(f"join buffer {self.name!r} cannot hold a null value")
        prefix = key_prefix(self.key_bytes(key)) + time_bytes(ts)
        # The next sequence number after the last one at (key, ts): read from the data, so it
        # survives restarts and rollbacks. The values of one (key, ts) are removed together
        # (by time), so without a first one there is none: a point read answers the usual
        # case, and only a (key, ts) that holds values already costs a seek.
        seq = 0
        first = prefix + _FIRST_SEQ
        if self._exists(first):
            for pk, _ in self.range_bytes(first, prefix_end(prefix)):
                seq = int.from_bytes(pk[-_SEQ:], "big") + 1
        if seq >= 1 << (8 * _SEQ):
            raise ValueError(f"join buffer {self.name!r}: too many values at one timestamp")
        pk = prefix + seq.to_bytes(_SEQ, "big")
        self._write(pk, ts, value)
        return pk

    def _exists(self, kb: bytes) -> bool:
        dirty = self._dirty
        if kb in dirty:
            return dirty[kb] is not None
        return self.store.get(self.name, kb) is not None

    def fetch(self, key: Any, ts_from: int, ts_to: int) -> list[tuple[int, Any]]:
        """[(ts, value)] of ``key`` with ``ts_from <= ts <= ts_to``, by ts then insertion."""
        return self._times(key, ts_from, ts_to)

    def times(self, key: Any, ts_from: int, ts_to: int) -> list[int]:
        """The timestamps of ``key``'s values in ``[ts_from, ts_to]`` (values not decoded)."""
        prefix = key_prefix(self.key_bytes(key))
        at = len(prefix)
        return [time_of(pk, at) for pk, _ in self._scan(prefix, ts_from, ts_to)]

    def expire_before(self, ts: int, since: int | None = None) -> int:
        """Delete the values of every key with a timestamp below ``ts``; returns how many.
        ``since``: nothing is left below it (an earlier call expired up to there), so the scan
        starts there rather than at the tombstones of what that call deleted."""
        return self._expire(ts, since)

    # -- entries by id (a stream-stream join's "unmatched" markers share the buffer's ids) ------
    def fetch_entries(self, key: Any, ts_from: int, ts_to: int) -> list[tuple[bytes, int, Any]]:
        """[(entry id, ts, value)] of ``key`` with ``ts_from <= ts <= ts_to``, by ts then
        insertion."""
        prefix = key_prefix(self.key_bytes(key))
        at = len(prefix)
        return [(pk, time_of(pk, at), self.decode(pk, vb))
                for pk, vb in self._scan(prefix, ts_from, ts_to)]

    def put_entry(self, pk: bytes, ts: int, value: Any) -> None:
        """Store ``value`` under the entry id ``pk`` (made by :meth:`add` on any join buffer
        with the same key serde) at ``ts``."""
        self._write(pk, ts, value)

    def has_entry(self, pk: bytes) -> bool:
        return self.get_by_bytes(pk, _ABSENT) is not _ABSENT

    def delete_entry(self, pk: bytes, ts: int) -> None:
        self._write(pk, ts, None)

    def pop_closed(self, start: int | None, before: int
                   ) -> tuple[list[tuple[Any, int, Any]], int | None]:
        """Delete every entry with ``start <= ts < before`` (``start`` None: unbounded) and
        return them as [(key, ts, value)], by ts then key bytes then insertion, together with
        the smallest timestamp left at or above ``before`` (None: nothing left). One scan of
        the time index; a ``start`` below which nothing is left skips the tombstones of what
        was deleted before."""
        lower = _INDEX if start is None else _INDEX + time_bytes(start)
        pks: list[tuple[bytes, int]] = []
        left: int | None = None
        for ik, _ in self.range_bytes(lower, None):
            t = time_of(ik, 1)
            if t >= before:
                left = t
                break
            pks.append((ik[9:], t))
        out = []
        for pk, t in pks:
            value = self.get_by_bytes(pk)
            if value is None:
                continue
            key, _times = self._split(pk, 1)
            out.append((key, t, value))
            self._write(pk, t, None)
        return out, left



_ABSENT: Any = object()
