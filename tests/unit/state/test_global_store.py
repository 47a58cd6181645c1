"""The local copy of global tables: where a restart resumes, one copy per worker on a host,
and what `streams tables` does with it (no broker needed)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from streams import Topology
from streams.runtime.global_tables import GlobalTables
from streams.state.global_store import GLOBAL_DIR, decide_start, global_dirs
from streams.tables.inspect import get_value
from streams.tables.reset import plan_reset


class Raw(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def _topology() -> Topology:
    t = Topology("g")
    t.global_table("products")
    t.stream("orders").group_by_key().count(name="counts")
    return t


def test_decide_start_resumes_inside_the_topic_and_wipes_a_copy_that_does_not_fit() -> None:
    tp0, tp1 = ("p", 0), ("p", 1)
    assert decide_start({tp0: 5}, {tp0: 0, tp1: 0}, {tp0: 9, tp1: 3}) == (False, {tp0: 5, tp1: 0})
    assert decide_start({tp0: 9}, {tp0: 0}, {tp0: 9}) == (False, {tp0: 9})
    # beyond the end: the topic was recreated; below the start: records it never saw are gone
    assert decide_start({tp0: 10, tp1: 1}, {tp0: 0, tp1: 0}, {tp0: 9, tp1: 3}) == (
        True, {tp0: 0, tp1: 0})
    assert decide_start({tp0: 2}, {tp0: 4}, {tp0: 9}) == (True, {tp0: 4})
    # a partition added to the topic starts at its beginning
    assert decide_start({tp0: 2}, {tp0: 0, tp1: 7}, {tp0: 9, tp1: 8}) == (False, {tp0: 2, tp1: 7})


def test_offsets_are_written_with_the_records_and_survive_a_reopen(tmp_path: Path) -> None:
    t = _topology()
    g = GlobalTables(t, tmp_path)
    g.open()
    g.apply([Raw("products", 0, 0, b"a", b'{"v": 1}'), Raw("products", 1, 0, b"b", b'{"v": 2}'),
             Raw("products", 0, 1, b"a", None)])
    g.close()
    g = GlobalTables(t, tmp_path)
    g.open()
    assert g.offsets == {("products", 0): 2, ("products", 1): 1}
    assert g["products"].get("a") is None and g["products"].get("b") == {"v": 2}
    g.close()


def test_two_workers_on_one_state_dir_get_a_copy_each(tmp_path: Path) -> None:
    t = _topology()
    a, b = GlobalTables(t, tmp_path), GlobalTables(t, tmp_path)
    a.open()
    b.open()
    try:
        assert a.path is not None and b.path is not None
        assert {a.path.name, b.path.name} == {GLOBAL_DIR, f"{GLOBAL_DIR}-1"}
        a.apply([Raw("products", 0, 0, b"a", b'{"v": 1}')])
        b.apply([Raw("products", 0, 0, b"a", b'{"v": 1}'),
                 Raw("products", 0, 1, b"a", b'{"v": 2}')])
    finally:
        a.close()
        b.close()
    assert sorted(p.name for p in global_dirs(tmp_path)) == [GLOBAL_DIR, f"{GLOBAL_DIR}-1"]


def test_tables_get_reads_the_most_advanced_copy_and_reset_deletes_every_copy(
        tmp_path: Path) -> None:
    t = _topology()
    root = tmp_path / t.name
    a, b = GlobalTables(t, root), GlobalTables(t, root)
    a.open()
    b.open()
    a.apply([Raw("products", 0, 0, b"a", b'{"v": 1}')])
    b.apply([Raw("products", 0, 0, b"a", b'{"v": 1}'), Raw("products", 0, 1, b"a", b'{"v": 2}')])
    a.close()
    b.close()
    assert get_value(t, str(tmp_path), "products", "a") == {"v": 2}
    only_global = plan_reset(t, str(tmp_path), 4, ["products"])
    assert only_global.tables == ["products"]
    assert only_global.input_topics == [] and only_global.recreate_topics == []
    assert sorted(p.name for p in only_global.state_dirs) == [GLOBAL_DIR, f"{GLOBAL_DIR}-1"]
    everything = plan_reset(t, str(tmp_path), 4)
    assert everything.tables == ["counts", "products"]
    assert set(global_dirs(root)) <= set(everything.state_dirs)
    only_counts = plan_reset(t, str(tmp_path), 4, ["counts"])
    assert not set(global_dirs(root)) & set(only_counts.state_dirs)


def test_a_copy_written_for_other_global_tables_is_wiped(tmp_path: Path) -> None:
    t = _topology()
    g = GlobalTables(t, tmp_path)
    g.open()
    g.apply([Raw("products", 0, 0, b"a", b'{"v": 1}')])
    g.close()
    other = Topology("g")
    other.global_table("catalog", name="products")  # same name, another topic
    g = GlobalTables(other, tmp_path)
    g.open()
    try:
        assert g.offsets == {} and g["products"].get("a") is None
    finally:
        g.close()
