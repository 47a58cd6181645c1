"""``streams tables reset``: Kafka Streams' application-reset tool and ``cleanUp()`` in one.

Resetting a table means re-deriving it from the input, so the plan covers the sub-topologies
that hold the tables *and* everything upstream of them through repartition topics; every table
in that closure must be reset together (resetting one while its neighbour keeps its state would
double-count the neighbour when the input is replayed).
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..dsl.topology import Topology
from ..kafka import admin
from ..kafka.admin import Replication, TopicSpec
from ..kafka.clients import Kafka
from ..runtime.compile import SubTopology, subtopologies
from ..state.global_store import global_dirs
from ..state.store import TaskStore
from ..runtime.topics import CHANGELOG_CONFIG, REPARTITION_CONFIG, written_repartitions


class ResetRefused(RuntimeError):
    pass


@dataclass
class ResetPlan:
    topology: str
    tables: list[str]
    input_topics: list[str]        # group offsets -> earliest
    recreate_topics: list[TopicSpec]  # changelog + repartition: delete and create empty
    state_dirs: list[Path]         # local RocksDB task directories to delete

    def describe(self) -> list[str]:
        lines = [f"reset plan for topology {self.topology}: tables {', '.join(self.tables)}"]
        lines.append(f"  1. check consumer group {self.topology!r} has no live members")
        lines.append(f"  2. reset group {self.topology!r} offsets to earliest on: "
                     f"{', '.join(self.input_topics) or '-'}")
        lines.append("  3. delete and recreate: " +
                     (", ".join(s.name for s in self.recreate_topics) or "-"))
        lines.append("  4. delete local state: " +
                     (", ".join(str(p) for p in self.state_dirs) or "- (none on this host)"))
        return lines


def _upstream(sub: SubTopology, subs: list[SubTopology]) -> list[SubTopology]:
    """The sub-topologies that write a repartition topic ``sub`` reads."""
    internal = {s.topic for s in sub.sources if s.internal}
    return [other for other in subs if internal & set(written_repartitions(other))]


def plan_reset(topology: Topology, state_dir: str, partitions: int,
               tables: list[str] | None = None) -> ResetPlan:
    known = [*topology.stores, *topology.global_tables]
    for t in tables or []:
        if t not in known:
            raise LookupError(f"topology {topology.name!r} has no table {t!r} "
                              f"(tables: {', '.join(known) or 'none'})")
    plan = _plan_reset(topology, state_dir, partitions,
                       [t for t in tables or [] if t in topology.stores],
                       only_global=bool(tables) and all(t in topology.global_tables
                                                        for t in tables or []))
    # Global tables have no changelog (their topic is one) and no group offsets: resetting
    # one deletes this host's copies, which the next worker loads from the topic again.
    chosen = [g for g in topology.global_tables if not tables or g in tables]
    if chosen:
        plan.tables += chosen
        plan.state_dirs += global_dirs(Path(state_dir) / topology.name)
    return plan


def _plan_reset(topology: Topology, state_dir: str, partitions: int, tables: list[str],
                only_global: bool) -> ResetPlan:
    if only_global:
        return ResetPlan(topology.name, [], [], [], [])
    subs = subtopologies(topology)
    if tables:
        chosen = {s.id for s in subs if set(s.stores) & set(tables)}
        frontier = [s for s in subs if s.id in chosen]
        while frontier:
            sub = frontier.pop()
            for up in _upstream(sub, subs):
                if up.id not in chosen:
                    chosen.add(up.id)
                    frontier.append(up)
        affected = [s for s in subs if s.id in chosen]
        involved = [t for s in affected for t in s.stores]
        missing = [t for t in involved if t not in tables]
        if missing:
            raise ResetRefused(f"tables {', '.join(tables)} share input with "
                               f"{', '.join(missing)}; reset them together")
    else:
        affected = subs
    stores = [t for s in affected for t in s.stores]
    inputs = list(dict.fromkeys(src.topic for s in affected for src in s.sources
                                if not src.internal))
    repartition = list(dict.fromkeys(src.topic for s in affected for src in s.sources
                                     if src.internal))
    recreate = [TopicSpec(t, partitions, REPARTITION_CONFIG) for t in repartition]
    recreate += [TopicSpec(topology.stores[t].changelog, partitions, CHANGELOG_CONFIG)
                 for t in stores]
    root = Path(state_dir) / topology.name
    dirs = sorted(p for s in affected for p in root.glob(f"{glob.escape(s.id)}_*") if p.is_dir())
    return ResetPlan(topology.name, stores, inputs, recreate, dirs)


def _refusal(group: str, members: int) -> str:
    return (f"consumer group {group!r} has {members} live member(s); stop its workers first "
            "(or use --force)")


async def live_members_refusal(bootstrap: Kafka, group: str, force: bool) -> str | None:
    """Why a reset of ``group`` would be refused now (live members, no --force), or None."""
    members = await admin.group_members(bootstrap, group)
    return _refusal(group, members) if members and not force else None


async def execute_reset(plan: ResetPlan, bootstrap: Kafka, force: bool,
                        say: Callable[[str], None],
                        replication: Replication = Replication()) -> None:
    members = await admin.group_members(bootstrap, plan.topology)
    if members and not force:
        raise ResetRefused(_refusal(plan.topology, members))
    say(f"[1/4] consumer group {plan.topology!r}: {members} live members")
    names = [s.name for s in plan.recreate_topics]
    # Recreate internal topics with the partition counts they had (derived from the inputs).
    sizes = await admin.topic_partitions(bootstrap, names)
    specs = [TopicSpec(s.name, len(sizes[s.name]) if sizes.get(s.name) else s.partitions, s.config)
             for s in plan.recreate_topics]
    await admin.delete_topics(bootstrap, names)
    await admin.ensure_topics(bootstrap, specs, replication)
    # Offsets of the recreated repartition topics go back to 0 too (they may outlive deletion).
    reset = await admin.reset_group_to_earliest(
        bootstrap, plan.topology,
        plan.input_topics + [s.name for s in plan.recreate_topics
                             if s.name.endswith("-repartition")])
    say(f"[2/4] offsets reset to earliest on {len(reset)} partitions")
    say(f"[3/4] recreated {len(names)} topics: {', '.join(names) or '-'}")
    for path in plan.state_dirs:
        TaskStore.destroy(path)  # (one line naming a directory that cannot be deleted)
    say(f"[4/4] deleted {len(plan.state_dirs)} local state directories")
