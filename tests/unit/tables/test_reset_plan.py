"""Which topics, offsets and directories `streams tables reset` touches (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams import Topology
from streams.runtime.compile import subtopologies
from streams.tables.reset import ResetRefused, plan_reset


def _two_pipelines() -> Topology:
    t = Topology("plans")
    t.stream("a").group_by(lambda v: v["k"], name="by-k").count(name="counts-a")
    s = t.stream("b").group_by(lambda v: v["k"], name="by-kb")
    s.count(name="counts-b")
    s.reduce(lambda x, y: y, name="latest-b")
    return t


def test_reset_of_one_table_touches_only_its_pipeline(tmp_path: Path) -> None:
    t = _two_pipelines()
    for sub in subtopologies(t):
        (tmp_path / "plans" / f"{sub.id}_0").mkdir(parents=True)
    (tmp_path / "plans" / "a-other_0").mkdir()  # another sub-topology whose id starts alike
    plan = plan_reset(t, str(tmp_path), 4, ["counts-a"])
    assert plan.input_topics == ["a"]
    assert sorted(s.name for s in plan.recreate_topics) == [
        "plans-by-k-repartition", "plans-counts-a-changelog"]
    subs = {topic: sub.id for sub in subtopologies(t) for topic in sub.topics}
    assert sorted(p.name for p in plan.state_dirs) == sorted(
        [f"{subs['a']}_0", f"{subs['plans-by-k-repartition']}_0"])
    changelog = next(s for s in plan.recreate_topics if s.name.endswith("changelog"))
    assert changelog.config["cleanup.policy"] == "compact"


def test_tables_sharing_input_must_be_reset_together(tmp_path: Path) -> None:
    with pytest.raises(ResetRefused, match="latest-b"):
        plan_reset(_two_pipelines(), str(tmp_path), 4, ["counts-b"])
    plan = plan_reset(_two_pipelines(), str(tmp_path), 4, ["counts-b", "latest-b"])
    assert plan.input_topics == ["b"]


def test_full_reset_covers_every_table_and_input(tmp_path: Path) -> None:
    plan = plan_reset(_two_pipelines(), str(tmp_path), 4)
    assert sorted(plan.tables) == ["counts-a", "counts-b", "latest-b"]
    assert sorted(plan.input_topics) == ["a", "b"]
    assert sorted(s.name for s in plan.recreate_topics) == [
        "plans-by-k-repartition", "plans-by-kb-repartition", "plans-counts-a-changelog",
        "plans-counts-b-changelog", "plans-latest-b-changelog"]
    text = "\n".join(plan.describe())
    for spec in plan.recreate_topics:
        assert spec.name in text, f"the printed plan must name {spec.name}"


def test_unknown_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="no table 'nope'"):
        plan_reset(_two_pipelines(), str(tmp_path), 4, ["nope"])
