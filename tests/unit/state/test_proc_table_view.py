"""``TableView`` directly: serialize at put, decode on get, per-record savepoints.

All of these failed on the view before this change (it buffered Python objects until the
commit and had no savepoint).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.serdes import JsonSerde, KeySerde
from streams.runtime.processors import MAX_RECORD_BYTES
from streams.state.store import TaskStore
from streams.state.store_view import TableView


class CountingJson(JsonSerde):
    """JsonSerde that counts its calls."""

    def __init__(self) -> None:
        self.encoded = self.decoded = 0

    def serialize(self, obj: Any) -> bytes | None:
        self.encoded += 1
        return super().serialize(obj)

    def deserialize(self, data: bytes | None) -> Any:
        self.decoded += 1
        return super().deserialize(data)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TaskStore]:
    s = TaskStore(tmp_path / "task", ["t"])
    yield s
    s.close()


@pytest.fixture
def serde() -> CountingJson:
    return CountingJson()


@pytest.fixture
def view(store: TaskStore, serde: CountingJson) -> TableView:
    return TableView(store, "t", KeySerde(), serde)


def test_the_buffer_holds_the_value_as_it_was_put(view: TableView) -> None:
    """Mutating the object after ``put`` (or the copy ``get`` returned) changes nothing."""
    agg = {"n": 1}
    view.put("a", agg)
    agg["n"] = 99
    got = view.get("a")
    assert got == {"n": 1}
    got["n"] = 42
    assert view.get("a") == {"n": 1}
    assert view.flush() == [(b"a", b'{"n":1}')]


def test_values_have_the_serde_type_before_and_after_the_commit(view: TableView,
                                                                store: TaskStore) -> None:
    """A tuple comes back as the list JSON decodes, before the commit as after it."""
    view.put("a", (1, 2))
    before = view.get("a")
    view.flush()
    store.write({})
    assert before == view.get("a") == [1, 2]


def test_round_tripping_scalars_are_not_decoded_again(view: TableView,
                                                      serde: CountingJson) -> None:
    """A counter updated many times in a commit interval: one encode per put, no decode."""
    for _ in range(100):
        view.put("c", view.get("c", 0) + 1)
    assert view.get("c") == 100
    assert serde.decoded == 0 and serde.encoded == 100
    view.put("d", {"n": 1})
    view.get("d")
    assert serde.decoded == 1  # mutable values are decoded afresh


def test_put_that_cannot_serialize_raises_and_keeps_the_previous_value(view: TableView) -> None:
    view.put("a", 1)
    with pytest.raises(TypeError):
        view.put("a", object())
    with pytest.raises(ValueError, match="exceeds"):
        view.put("a", "x" * MAX_RECORD_BYTES)
    assert view.get("a") == 1
    assert view.flush() == [(b"a", b"1")]


def test_rollback_restores_every_entry_written_since_begin(view: TableView,
                                                           store: TaskStore) -> None:
    view.put("committed", "c0")
    view.flush()
    store.write({})
    view.put("dirty", {"v": 1})
    view.put("counter", 5)
    view.begin()
    view.put("dirty", {"v": 2})
    view.put("dirty", {"v": 3})
    view.put("counter", 6)
    view.put("new", "n")
    view.delete("committed")
    assert (view.get("dirty"), view.get("counter"), view.get("new"), view.get("committed")) == \
        ({"v": 3}, 6, "n", None)
    view.rollback()
    assert (view.get("dirty"), view.get("counter"), view.get("new"), view.get("committed")) == \
        ({"v": 1}, 5, None, "c0")
    # the buffer is as it was at begin(): same entries, same order
    assert view.flush() == [(b"dirty", b'{"v":1}'), (b"counter", b"5")]


def test_release_keeps_the_writes_and_ends_the_savepoint(view: TableView) -> None:
    view.begin()
    view.put("a", 1)
    view.release()
    view.begin()
    view.put("b", 2)
    view.rollback()  # undoes only what followed the second begin
    assert view.get("a") == 1 and view.get("b") is None
    assert view.flush() == [(b"a", b"1")]
