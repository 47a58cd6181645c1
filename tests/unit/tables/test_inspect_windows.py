"""`streams tables get/list` on windowed tables: every window of a key, windows counted once
(not their time index entries). The stores are written with the real window/session views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streams import Topology
from streams.dsl.window_specs import HoppingWindows, SessionWindows, SlidingWindows, TumblingWindows
from streams.runtime.compile import subtopologies
from streams.state.store import TaskStore
from streams.state.views import open_view
from streams.tables import inspect


def _topology(kind: str, window: Any) -> Topology:
    """A topology with one windowed table "w"."""
    t = Topology("inspect-win")
    t.stream("in").group_by(lambda v: v["k"], name="by-k").window(window).count(name="w")
    assert t.stores["w"].kind == kind and t.stores["w"].window == window
    return t


def _write(t: Topology, root: Path, partition: int, rows: list[tuple[Any, ...]]) -> None:
    sub = next(s for s in subtopologies(t) if "w" in s.stores)
    store = TaskStore(root / t.name / f"{sub.id}_{partition}", sub.stores)
    try:
        view = open_view(store, t.stores["w"])
        for row in rows:
            view.put(*row)
        view.flush()
        store.write({})
    finally:
        store.close()


def test_window_store_get_lists_every_window_of_the_key_with_ends(tmp_path: Path) -> None:
    t = _topology("window", TumblingWindows(size=60_000, grace=30_000))
    _write(t, tmp_path, 0, [("berlin", 120_000, {"rides": 2}), ("berlin", 60_000, {"rides": 5}),
                            ("berl", 60_000, {"rides": 1})])
    _write(t, tmp_path, 1, [("paris", 0, {"rides": 9})])
    got = inspect.get_windows(t, str(tmp_path), "w", "berlin")
    assert got == [{"window_start": 60_000, "window_end": 120_000, "value": {"rides": 5}},
                   {"window_start": 120_000, "window_end": 180_000, "value": {"rides": 2}}]
    assert inspect.get_windows(t, str(tmp_path), "w", "paris")[0]["value"] == {"rides": 9}
    with pytest.raises(LookupError, match="no windows"):
        inspect.get_windows(t, str(tmp_path), "w", "rome")
    counts = []
    for part in (0, 1):
        sub = next(s for s in subtopologies(t) if "w" in s.stores)
        store = TaskStore(tmp_path / t.name / f"{sub.id}_{part}", sub.stores, read_only=True)
        try:
            counts.append(inspect.count_windows(store, "w"))
            assert store.count_keys("w")[0] == 2 * counts[-1][0]  # + one index entry each
        finally:
            store.close()
    assert counts == [(3, 2), (1, 1)]  # (windows, distinct keys)


def test_session_store_get_gives_stored_bounds(tmp_path: Path) -> None:
    t = _topology("session", SessionWindows(gap=1_800_000, grace=30_000))
    _write(t, tmp_path, 0, [("rider1", 10, 20, {"rides": 2}), ("rider1", 5_000_000, 5_000_000,
                                                              {"rides": 1})])
    assert inspect.get_windows(t, str(tmp_path), "w", "rider1") == [
        {"window_start": 10, "window_end": 20, "value": {"rides": 2}},
        {"window_start": 5_000_000, "window_end": 5_000_000, "value": {"rides": 1}}]


def test_describe_window_specs() -> None:
    d = inspect.describe_window
    assert d(TumblingWindows(size=60_000, grace=30_000)) == "tumbling 60000 ms, grace 30000 ms"
    assert d(HoppingWindows(size=300_000, advance=60_000, grace=30_000)) == \
        "hopping 300000 ms every 60000 ms, grace 30000 ms"
    assert d(SessionWindows(gap=1_800_000, grace=30_000)) == \
        "session gap 1800000 ms, grace 30000 ms"
    assert d(SlidingWindows(max_difference=600_000, grace=30_000)) == \
        "sliding 600000 ms, grace 30000 ms"
    assert inspect.window_end(SlidingWindows(max_difference=10), 5) == 15
    assert inspect.window_end(HoppingWindows(size=10, advance=5), 5) == 15


def test_cli_get_prints_one_line_per_window(tmp_path: Path, monkeypatch) -> None:
    from streams import cli, registry

    t = _topology("window", TumblingWindows(size=60_000, grace=30_000))
    _write(t, tmp_path, 0, [("berlin", 60_000, {"rides": 5}), ("berlin", 120_000, {"rides": 2})])
    monkeypatch.setattr(registry, "load", lambda name: t)
    r = CliRunner().invoke(cli.main, ["tables", "get", "x", "w", "berlin", "--json",
                                      "--state-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert [__import__("json").loads(x)["window_start"] for x in lines] == [60_000, 120_000]
    r = CliRunner().invoke(cli.main, ["tables", "get", "x", "w", "berlin",
                                      "--state-dir", str(tmp_path)])
    assert r.output.splitlines() == ['berlin [60000, 120000): {"rides":5}',
                                     'berlin [120000, 180000): {"rides":2}']


def test_table_infos_of_a_windowed_table(tmp_path: Path, monkeypatch) -> None:
    from streams.kafka import admin

    async def committed(*_a: Any) -> dict:
        return {}

    async def ends(*_a: Any) -> dict:
        return {0: 6, 1: 2}

    monkeypatch.setattr(admin, "committed_offsets", committed)
    monkeypatch.setattr(admin, "end_offsets", ends)
    t = _topology("window", TumblingWindows(size=60_000, grace=30_000))
    _write(t, tmp_path, 0, [("berlin", 60_000, 1), ("berlin", 120_000, 2), ("rome", 0, 3)])
    _write(t, tmp_path, 1, [("paris", 0, 4)])
    (info,) = admin.run(inspect.table_infos(t, str(tmp_path), "unused:9092"))
    assert info.window == "tumbling 60000 ms, grace 30000 ms"
    assert info.windows == 4 and info.keys == 3 and info.keys_exact
    assert info.as_dict()["windows"] == 4
