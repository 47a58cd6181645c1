"""Closing windows and expiring join records read the time index from where the previous close
stopped, not from its start: what was closed before is only tombstones there, and rescanning
them on every batch made closing cost grow with everything closed since the last compaction."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import tempfile

import pytest

from streams import JoinWindows, Topology, TumblingWindows
from streams.serdes import JsonSerde, KeySerde
from streams.state.store import TaskStore
from streams.state.window_store import JoinBufferView, WindowStoreView
from streams.testing import TopologyTestDriver


def spy(monkeypatch: pytest.MonkeyPatch, cls: type, method: str) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    real = getattr(cls, method)

    def recording(self: Any, *args: Any) -> Any:
        calls.append(args)
        return real(self, *args)
    monkeypatch.setattr(cls, method, recording)
    return calls


def test_window_close_scans_from_the_last_close(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy(monkeypatch, WindowStoreView, "fetch_all_stamped")
    t = Topology("close_scan")
    (t.stream("in", timestamp="ts").group_by_key()
     .window(TumblingWindows(size=timedelta(seconds=10), grace=timedelta(0)))
     .count(name="counts", emit="final").to("out"))
    with TopologyTestDriver(t) as d:
        for ts in (1_000, 12_000, 25_000, 37_000):
            d.pipe("in", "k", {"ts": ts})
        # every window closed exactly once, in order
        assert [v["window_start"] for _, v in d.read_output("out")] == [0, 10_000, 20_000]
    closes = [c for c in calls if c[1] >= 0]
    assert closes[0][0] is None                        # the first close: from the start
    for before, after in zip(closes, closes[1:], strict=False):
        assert after[0] == before[1] + 1               # then from where the last one stopped


def test_join_expiry_scans_from_the_last_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy(monkeypatch, JoinBufferView, "expire_before")
    t = Topology("expire_scan")
    a, b = t.stream("a", timestamp="ts"), t.stream("b", timestamp="ts")
    a.join(b, lambda x, y: {"a": x["ts"], "b": y["ts"]}, JoinWindows(before=10, after=10),
           name="j").to("out")
    with TopologyTestDriver(t) as d:
        for ts in (100, 200, 300, 400):
            d.pipe("a", "k", {"ts": ts})
            d.pipe("b", "k", {"ts": ts + 5})
        assert [v for _, v in d.read_output("out")] == [
            {"a": ts, "b": ts + 5} for ts in (100, 200, 300, 400)]
    assert calls[0][1] is None                         # the first expiry: from the start
    assert any(since is not None for _before, since in calls)
    for i, (before, since) in enumerate(calls):        # then from where an earlier one ended
        assert since is None or (since <= before and since in [c[0] for c in calls[:i]])


def test_expire_before_since_leaves_what_is_below_since() -> None:
    """The contract ``since`` relies on: the caller promises nothing is left below it."""
    with tempfile.TemporaryDirectory() as tmp:
        store = TaskStore(tmp, ["j"])
        buf = JoinBufferView(store, "j", KeySerde(), JsonSerde())
        buf.add("k", 5, 1)
        buf.add("k", 15, 2)
        assert buf.expire_before(20, since=10) == 1
        assert buf.fetch("k", 0, 100) == [(5, 1)]
        assert buf.expire_before(20) == 1
        assert buf.expire_before(30, since=30) == 0
        store.close()
