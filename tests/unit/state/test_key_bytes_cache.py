"""StoreView.key_bytes keeps the last str key's bytes; keys that can change in place are
serialized every time."""

from __future__ import annotations

from pathlib import Path

from streams.serdes import JsonSerde, KeySerde
from streams.state.store import TaskStore
from streams.state.store_view import StoreView


def test_key_bytes_follow_the_key(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "s", ["t"])
    try:
        view = StoreView(store, "t", KeySerde(), JsonSerde())
        a, b = "user-a", "user-b"
        assert [view.key_bytes(k) for k in (a, a, b, a, b, b)] == [
            b"user-a", b"user-a", b"user-b", b"user-a", b"user-b", b"user-b"]
        key = ["region", 1]  # a JSON key changed in place between two calls
        assert view.key_bytes(key) == b'["region",1]'
        key[1] = 2
        assert view.key_bytes(key) == b'["region",2]'
    finally:
        store.close()
