"""Store views against dict oracles: TaskStore.range, the window, session and join-buffer views.

Every operation sequence may commit (``flush`` + ``store.write``) at any point, so reads merge
three layers: the view's uncommitted writes, the store's buffer and RocksDB. Keys share prefixes
("a", "aa", "ab") and timestamps reach both ends of the signed 64-bit range.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from streams.serdes import JsonSerde, KeySerde
from streams.dsl.builder import StoreSpec
from streams.state.store import TaskStore
from streams.state.store_view import TableView
from streams.state.views import VIEWS, open_view
from streams.state.window_store import (JoinBufferView, SessionStoreView, WindowStoreView,
                                        prefix_end, time_bytes)
from tests.conftest import examples

MIN, MAX = -(1 << 63), (1 << 63) - 1
KEYS = st.sampled_from(["", "a", "aa", "ab", "b", "é"])
TIMES = st.one_of(st.sampled_from([MIN, MIN + 1, -1, 0, 1, MAX - 1, MAX]),
                  st.integers(-50, 50), st.integers(MIN, MAX))
VALUES = st.one_of(st.integers(-3, 3), st.text(max_size=3), st.lists(st.integers(0, 2), max_size=2))
SLOW = settings(max_examples=examples(150), deadline=None)


@contextmanager
def task_store(*tables: str) -> Iterator[TaskStore]:
    with tempfile.TemporaryDirectory() as tmp:
        store = TaskStore(Path(tmp) / "task", list(tables))
        try:
            yield store
        finally:
            store.close()


def spec(name: str, kind: str) -> StoreSpec:
    return StoreSpec(name, JsonSerde(), f"t-{name}-changelog", kind, KeySerde())


def commit(store: TaskStore, *views: Any) -> None:
    for view in views:
        view.flush()
    store.write({})


# -- TaskStore.range ------------------------------------------------------------------------------
RAW_KEYS = st.binary(max_size=3)
range_ops = st.lists(st.one_of(
    st.tuples(st.just("put"), RAW_KEYS, st.binary(min_size=1, max_size=2)),
    st.tuples(st.just("delete"), RAW_KEYS, st.none()),
    st.tuples(st.just("write"), st.none(), st.none()),
    st.tuples(st.just("range"), RAW_KEYS, st.one_of(st.none(), RAW_KEYS)),
), max_size=40)


@SLOW
@given(ops=range_ops)
def test_range_matches_a_dict_across_writes(ops: list[tuple[str, Any, Any]]) -> None:
    oracle: dict[bytes, bytes] = {}
    with task_store("t") as store:
        for op, a, b in ops:
            if op == "put":
                store.put("t", a, b)
                oracle[a] = b
            elif op == "delete":
                store.put("t", a, None)
                oracle.pop(a, None)
            elif op == "write":
                store.write({})
            else:
                want = sorted((k, v) for k, v in oracle.items()
                              if a <= k and (b is None or k < b))
                assert list(store.range("t", a, b)) == want
        assert list(store.range("t")) == sorted(oracle.items())
        store.write({})
        assert list(store.range("t")) == sorted(oracle.items())


def test_range_keeps_its_upper_bound_alive() -> None:
    # rocksdict reads the bound from the ReadOptions while iterating: once they were freed
    # (range had returned), the scan stopped early or ran past ``end``.
    with task_store("t") as store:
        for i in range(1000):
            store.put("t", i.to_bytes(4, "big"), b"v")
        store.write({})
        for _ in range(20):
            it = store.range("t", bytes(4), bytes([0, 0, 3, 0]))
            junk = [b"\xff" * 8 for _ in range(1000)]  # reuse the freed memory
            assert len(list(it)) == 768, len(junk)


def test_range_snapshots_the_buffer_when_called() -> None:
    with task_store("t") as store:
        store.put("t", b"a", b"1")
        store.write({})
        it = store.range("t", b"", None)
        store.put("t", b"b", b"2")
        store.put("t", b"a", None)
        assert list(it) == [(b"a", b"1")]


def test_prefix_end_bounds_every_key_with_the_prefix() -> None:
    assert prefix_end(b"a") == b"b"
    assert prefix_end(b"a\xff\xff") == b"b"
    assert prefix_end(b"\xff\xff") is None
    assert time_bytes(MIN) == bytes(8) and time_bytes(MAX) == b"\xff" * 8
    with pytest.raises(ValueError):
        time_bytes(MAX + 1)


# -- which view for which kind --------------------------------------------------------------------
def test_open_view_picks_the_class_of_the_kind() -> None:
    with task_store("s", "w", "x", "j", "t") as store:
        assert type(open_view(store, spec("s", "store"))) is TableView
        assert type(open_view(store, spec("t", "aggregate"))) is TableView
        assert type(open_view(store, spec("w", "window"))) is WindowStoreView
        assert type(open_view(store, spec("x", "session"))) is SessionStoreView
        assert type(open_view(store, spec("j", "join-buffer"))) is JoinBufferView
        with pytest.raises(ValueError, match="unknown kind"):
            open_view(store, spec("s", "nope"))
    assert {"aggregate", "table", "store", "window", "session", "join-buffer"} <= set(VIEWS)


# -- window store ---------------------------------------------------------------------------------
window_ops = st.lists(st.one_of(
    st.tuples(st.just("put"), KEYS, TIMES, VALUES),
    st.tuples(st.just("delete"), KEYS, TIMES, st.none()),
    st.tuples(st.just("commit"), st.none(), st.none(), st.none()),
    st.tuples(st.just("expire"), st.none(), TIMES, st.none()),
    st.tuples(st.just("fetch"), KEYS, TIMES, TIMES),
    st.tuples(st.just("fetch_all"), st.none(), TIMES, TIMES),
), max_size=30)


def check_windows(view: WindowStoreView, oracle: dict[tuple[str, int], Any]) -> None:
    for (key, start), value in oracle.items():
        assert view.get(key, start) == value
    every = sorted(oracle.items(), key=lambda kv: (kv[0][1], len(kv[0][0].encode()),
                                                    kv[0][0].encode()))
    assert view.fetch_all() == [(k, s, v) for (k, s), v in every]
    for key in {k for k, _ in oracle} | {"a"}:
        assert view.fetch(key, MIN, MAX) == sorted(
            (s, v) for (k, s), v in oracle.items() if k == key)


def apply_window_op(view: WindowStoreView, store: TaskStore, oracle: dict[tuple[str, int], Any],
                    op: tuple[str, Any, Any, Any]) -> None:
    name, key, t, x = op
    if name == "put":
        view.put(key, t, x)
        oracle[(key, t)] = x
    elif name == "delete":
        view.delete(key, t)
        oracle.pop((key, t), None)
    elif name == "commit":
        commit(store, view)
    elif name == "expire":
        gone = [ks for ks in oracle if ks[1] < t]
        assert view.expire_before(t) == len(gone)
        for ks in gone:
            del oracle[ks]
    elif name == "fetch":
        assert view.fetch(key, t, x) == sorted(
            (s, v) for (k, s), v in oracle.items() if k == key and t <= s <= x)
    else:
        got = view.fetch_all(t, x)
        assert sorted((k, s) for k, s, _ in got) == sorted(
            ks for ks in oracle if t <= ks[1] <= x)
        assert [s for _, s, _ in got] == sorted(s for _, s, _ in got)


@SLOW
@given(ops=window_ops)
def test_window_store_matches_a_dict(ops: list[tuple[str, Any, Any, Any]]) -> None:
    oracle: dict[tuple[str, int], Any] = {}
    with task_store("w") as store:
        view = open_view(store, spec("w", "window"))
        assert isinstance(view, WindowStoreView)
        for op in ops:
            apply_window_op(view, store, oracle, op)
        check_windows(view, oracle)
        commit(store, view)
        check_windows(view, oracle)


@SLOW
@given(before=window_ops, failed=window_ops, after=window_ops)
def test_window_store_rollback_undoes_the_record(before: list[Any], failed: list[Any],
                                                 after: list[Any]) -> None:
    oracle: dict[tuple[str, int], Any] = {}
    with task_store("w") as store:
        view = WindowStoreView(store, "w", KeySerde(), JsonSerde())
        for op in before:
            apply_window_op(view, store, oracle, op)
        kept = dict(oracle)
        view.begin()
        for op in failed:
            if op[0] != "commit":  # a record's savepoint never spans a commit
                apply_window_op(view, store, oracle, op)
        view.rollback()
        check_windows(view, kept)
        for op in after:
            apply_window_op(view, store, kept, op)
        check_windows(view, kept)


def test_window_keys_of_shared_prefixes_stay_apart() -> None:
    with task_store("w") as store:
        view = WindowStoreView(store, "w", KeySerde(), JsonSerde())
        view.put("a", 5, "a5")
        view.put("ab", -5, "ab-5")
        commit(store, view)
        view.put("aa", 0, "aa0")
        assert view.fetch("a", MIN, MAX) == [(5, "a5")]
        assert view.fetch("ab", MIN, MAX) == [(-5, "ab-5")]
        assert view.fetch_all() == [("ab", -5, "ab-5"), ("aa", 0, "aa0"), ("a", 5, "a5")]
        assert view.fetch("a", 6, 5) == []
        with pytest.raises(ValueError):
            view.put("a", MAX + 1, 1)


def test_window_changelog_restores_the_same_store() -> None:
    with task_store("w") as store, task_store("w") as replica:
        view = WindowStoreView(store, "w", KeySerde(), JsonSerde())
        view.put("k", 10, 1)
        view.put("k", 20, 2)
        view.put("j", 15, 3)
        records = view.flush()
        store.write({})
        view.expire_before(15)
        records += view.flush()
        store.write({})
        replica.write_raw("w", records)
        copy = WindowStoreView(replica, "w", KeySerde(), JsonSerde())
        assert copy.fetch_all() == view.fetch_all() == [("j", 15, 3), ("k", 20, 2)]
        assert copy.expire_before(16) == 1


# -- session store --------------------------------------------------------------------------------
session_ops = st.lists(st.one_of(
    st.tuples(st.just("put"), KEYS, st.tuples(TIMES, TIMES).map(sorted), VALUES),
    st.tuples(st.just("delete"), KEYS, st.tuples(TIMES, TIMES).map(sorted), st.none()),
    st.tuples(st.just("commit"), st.none(), st.none(), st.none()),
    st.tuples(st.just("expire"), st.none(), TIMES, st.none()),
    st.tuples(st.just("fetch"), KEYS, st.tuples(TIMES, TIMES), st.none()),
), max_size=30)


@SLOW
@given(ops=session_ops, rollback_at=st.integers(0, 30))
def test_session_store_matches_a_dict(ops: list[tuple[str, Any, Any, Any]],
                                      rollback_at: int) -> None:
    oracle: dict[tuple[str, int, int], Any] = {}
    with task_store("s") as store:
        view = open_view(store, spec("s", "session"))
        assert isinstance(view, SessionStoreView)
        for i, (name, key, t, x) in enumerate(ops):
            if i == rollback_at:  # a failed record's writes disappear
                view.begin()
                view.put("a", 0, 1, "doomed")
                view.expire_before(MAX)
                view.rollback()
            if name == "put":
                view.put(key, t[0], t[1], x)
                oracle[(key, t[0], t[1])] = x
            elif name == "delete":
                view.delete(key, t[0], t[1])
                oracle.pop((key, t[0], t[1]), None)
            elif name == "commit":
                commit(store, view)
            elif name == "expire":
                gone = [s for s in oracle if s[2] < t]
                assert view.expire_before(t) == len(gone)
                for s in gone:
                    del oracle[s]
            else:
                earliest_end, latest_start = t
                assert view.fetch_sessions(key, earliest_end, latest_start) == sorted(
                    ((s, e), v) for (k, s, e), v in oracle.items()
                    if k == key and e >= earliest_end and s <= latest_start)
        commit(store, view)
        got = view.fetch_all()
        assert sorted((k, s, e) for k, s, e, _ in got) == sorted(oracle)
        assert [e for _, _, e, _ in got] == sorted(e for _, _, e, _ in got)
        for (k, s, e), v in oracle.items():
            assert view.get(k, s, e) == v
        with pytest.raises(ValueError):
            view.put("a", 2, 1, "end before start")


# -- join buffer ----------------------------------------------------------------------------------
buffer_ops = st.lists(st.one_of(
    st.tuples(st.just("add"), KEYS, st.sampled_from([MIN, -1, 0, 0, 7, MAX]) | TIMES, VALUES),
    st.tuples(st.just("commit"), st.none(), st.none(), st.none()),
    st.tuples(st.just("expire"), st.none(), TIMES, st.none()),
    st.tuples(st.just("fetch"), KEYS, TIMES, TIMES),
    st.tuples(st.just("failed-add"), KEYS, TIMES, VALUES),
), max_size=40)


@SLOW
@given(ops=buffer_ops)
def test_join_buffer_matches_a_list_per_key(ops: list[tuple[str, Any, Any, Any]]) -> None:
    oracle: dict[str, list[tuple[int, Any]]] = {}  # insertion order
    with task_store("j") as store:
        view = open_view(store, spec("j", "join-buffer"))
        assert isinstance(view, JoinBufferView)
        for name, key, t, x in ops:
            if name == "add":
                view.add(key, t, x)
                oracle.setdefault(key, []).append((t, x))
            elif name == "failed-add":
                view.begin()
                view.add(key, t, x)
                view.rollback()
            elif name == "commit":
                commit(store, view)
            elif name == "expire":
                n = sum(1 for vs in oracle.values() for ts, _ in vs if ts < t)
                assert view.expire_before(t) == n
                oracle = {k: [(ts, v) for ts, v in vs if ts >= t] for k, vs in oracle.items()}
            else:
                # stable sort: values of one ts stay in insertion order
                assert view.fetch(key, t, x) == sorted(
                    [(ts, v) for ts, v in oracle.get(key, []) if t <= ts <= x],
                    key=lambda tv: tv[0])
        commit(store, view)
        for key, vs in oracle.items():
            assert view.fetch(key, MIN, MAX) == sorted(vs, key=lambda tv: tv[0])
        with pytest.raises(ValueError):
            view.add("a", 0, None)


# -- through a task: commit, changelog, restore on a new host -------------------------------------
def test_window_store_in_a_topology_survives_a_restore() -> None:
    import dataclasses

    from streams import Topology
    from streams.testing import TopologyTestDriver

    t = Topology("wins")
    # No DSL operator declares window stores yet: turn a process store into one.
    t.stores["w"] = dataclasses.replace(t.store("w"), kind="window")

    def count(key: str, value: dict, stores: dict) -> Any:
        view = stores["w"]
        start = value["ts"] // 10 * 10
        if value.get("fail"):
            view.put(key, start, -1)
            raise RuntimeError("rolled back")
        view.put(key, start, view.get(key, start, 0) + 1)
        view.expire_before(value["ts"] - 100)
        return [(key, view.fetch(key, MIN, MAX))]

    t.stream("in").process(count, stores=["w"]).to("out")
    with TopologyTestDriver(t) as driver:
        for ts in (5, 7, 15):
            driver.pipe("in", "a", {"ts": ts})
        driver.pipe("in", "ab", {"ts": 3})
        driver.pipe("in", "a", {"ts": 8, "fail": True})
        driver.restart(lose_state=True)  # restored from the changelog alone
        driver.pipe("in", "a", {"ts": 16})
        driver.pipe("in", "a", {"ts": 125})  # expires the windows before 25
        assert driver.read_output("out")[-3:] == [
            ("ab", [[0, 1]]), ("a", [[0, 2], [10, 2]]), ("a", [[120, 1]])]
        task = next(iter(driver._tasks.values()))
        assert isinstance(task.table("w"), WindowStoreView)
        assert task.table("w").fetch_all() == [("a", 120, 1)]
