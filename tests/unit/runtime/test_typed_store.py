"""``ProcessorContext.typed_store``: a processor gets its store as the view class it works with,
or, when the store is of another kind, an error naming the store when the task opens."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streams.serdes import JsonSerde, KeySerde
from streams.runtime.context import ProcessorContext
from streams.state.meta import TaskId
from streams.state.store import TaskStore
from streams.state.store_view import StoreView, TableView
from streams.state.window_store import SessionStoreView, WindowStoreView


class _Task:
    """The part of a task the context reads when it is built, and its stores."""

    def __init__(self, views: dict[str, StoreView]) -> None:
        self.id = TaskId.parse("clicks_0")
        self.partition = 0
        self.topology = SimpleNamespace(name="t")
        self.views = views

    def table(self, name: str) -> StoreView:
        return self.views[name]


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = TaskStore(tmp_path, ["w", "kv"])
    yield s
    s.close()


def test_the_store_comes_back_as_the_class_asked_for(store: TaskStore) -> None:
    window = WindowStoreView(store, "w", KeySerde(), JsonSerde())
    ctx = ProcessorContext(_Task({"w": window}))  # type: ignore[arg-type]
    got = ctx.typed_store("w", WindowStoreView)
    assert got is window
    got.put("k", 0, 1)  # the window store's own API
    assert got.fetch("k", 0, 10) == [(0, 1)]


def test_a_store_of_another_kind_is_an_error_naming_it(store: TaskStore) -> None:
    table = TableView(store, "kv", KeySerde(), JsonSerde())
    ctx = ProcessorContext(_Task({"kv": table}))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"store 'kv' is a TableView, not the SessionStoreView"):
        ctx.typed_store("kv", SessionStoreView)
