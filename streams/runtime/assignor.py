"""One topology shape per consumer group: workers running different versions of a topology
never share its partitions.

Two versions of a topology in one group would each process some of the partitions, and a key
whose records pass through both (a repartition, a task moving) ends up with mixed arithmetic.
Kafka Streams carries its metadata in the group protocol; so does this framework.

**How (aiokafka internals, overridden in this one place).** A consumer's partition assignor
advertises member metadata in its JoinGroup request (:meth:`ShapeCheckingAssignor.metadata`,
``user_data``), and the group leader's :meth:`~ShapeCheckingAssignor.assign` receives every
member's metadata. The assignor puts the topology's :class:`TopologyShape` (its declared
version, nodes, tables, topics) and its fingerprint in ``user_data``; the leader assigns the
partitions (by range, as before) only among the members running the *group's* shape, and gives
every other member an empty assignment whose ``user_data`` says what differs. That member's
:meth:`~ShapeCheckingAssignor.on_assignment` reports it, and its worker stops with that line.

The group's shape is the one of its longest-running member (earliest start, by the workers'
clocks): a newcomer never displaces the workers already running.

**Endpoints (interactive queries).** A member that serves its tables over HTTP puts its
``host:port`` in its metadata (key ``endpoint``); the leader gives every accepted member the
whole map of endpoint -> partitions (key ``endpoints`` of the assignment's ``user_data``), as
Kafka Streams hands every member its partitions-by-host, so any worker can tell who owns a key
(:mod:`streams.serving.routing`).

**Standby replicas.** With ``num_standby_replicas`` > 0 (the leader's setting decides) every
member also reports its local state per task (``task_offsets``: task id -> changelog offset
sum; ``previous_active``: the tasks it ran) and the leader assigns whole tasks with
:func:`~streams.runtime.task_assignment.assign_tasks` instead of ranges: actives to members
with caught-up state, standbys elsewhere. Each member's standby tasks travel in its
assignment's ``user_data`` (``standby``); :meth:`~ShapeCheckingAssignor.on_assignment` hands
them to the worker.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, UTC
from typing import Any

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.protocol import (ConsumerProtocolMemberAssignment,
                                           ConsumerProtocolMemberMetadata)

from ..dsl import nodes as n
from ..dsl.topology import Topology
from .compile import subtopologies
from .task_assignment import MemberTasks, assign_tasks


class TopologyMismatch(RuntimeError):
    """This worker's topology differs from the one its consumer group runs."""


@dataclass(frozen=True)
class TopologyShape:
    """What must be equal for two workers to share a group: the declared version, the
    operator graph, the tables and the topics (not the code inside a ``map``)."""

    name: str
    version: str
    nodes: tuple[str, ...]
    tables: tuple[str, ...]
    topics: tuple[str, ...]

    @classmethod
    def of(cls, topology: Topology) -> TopologyShape:
        lines: list[str] = []

        def walk(node: n.Node, path: str) -> None:
            here = f"{path} -> {node.label()}" if path else node.label()
            lines.append(here)
            for child in node.children:
                walk(child, here)

        for source in topology.sources:
            walk(source, "")
        for agent in topology.agents.values():
            lines.append(f"agent {agent.name}: tables {', '.join(agent.store_names())}; "
                         f"sinks {', '.join(agent.sinks)}")
        tables = [f"{name} ({spec.kind})" for name, spec in topology.stores.items()]
        tables += [f"{name} (global)" for name in topology.global_tables]
        topics = set(topology.input_topics() + topology.output_topics()
                     + topology.internal_topics())
        return cls(topology.name, topology.version, tuple(sorted(lines)), tuple(sorted(tables)),
                   tuple(sorted(topics)))

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TopologyShape:
        return cls(str(doc["name"]), str(doc["version"]), tuple(doc["nodes"]),
                   tuple(doc["tables"]), tuple(doc["topics"]))

    @property
    def fingerprint(self) -> str:
        doc = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(doc).hexdigest()[:16]

    def differences(self, group: TopologyShape) -> str:
        """What this shape has that ``group``'s has not (+) and the reverse (-), briefly."""
        out = []
        if self.version != group.version:
            out.append(f"version {self.version!r} (group: {group.version!r})")
        for what, mine, theirs in (("tables", self.tables, group.tables),
                                   ("topics", self.topics, group.topics),
                                   ("nodes", self.nodes, group.nodes)):
            added = sorted((Counter(mine) - Counter(theirs)).elements())
            removed = sorted((Counter(theirs) - Counter(mine)).elements())
            if what == "nodes":  # a path per node: name only each changed node's last step
                added = [p.rsplit(" -> ", 1)[-1] for p in added]
                removed = [p.rsplit(" -> ", 1)[-1] for p in removed]
            items = [f"+{x}" for x in added] + [f"-{x}" for x in removed]
            if items:
                more = f" (+{len(items) - 4} more)" if len(items) > 4 else ""
                out.append(f"{what} {', '.join(items[:4])}{more}")
        return "; ".join(out) or "same shape, other fingerprint"


def _decode(user_data: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(user_data)
        return doc if isinstance(doc, dict) else None
    except ValueError:
        return None


class ShapeCheckingAssignor(AbstractPartitionAssignor):
    """Range assignment among the members running the group's topology shape; every other
    member is refused (see the module docstring). ``on_refused(line)`` is called in a refused
    member, with one line saying what differs."""

    name = "streams-shape"  # the group protocol: every member must offer it
    version = 0

    def __init__(self, topology: Topology, on_refused: Callable[[str], None],
                 started_ms: int | None = None, endpoint: str | None = None,
                 on_endpoints: Callable[[EndpointMap], None] | None = None,
                 standby_replicas: int = 0,
                 local_tasks: Callable[[], dict[str, int]] | None = None,
                 on_standby: Callable[[list[str]], None] | None = None) -> None:
        self.shape = TopologyShape.of(topology)
        self.started_ms = int(time.time() * 1000) if started_ms is None else started_ms
        self.on_refused = on_refused
        self.endpoint = endpoint          # this member's "host:port" (None: serves nothing)
        self.on_endpoints = on_endpoints  # called with the group's map on every assignment
        # standby replicas: see the module docstring
        self.standby_replicas = standby_replicas
        self.local_tasks = local_tasks  # task id -> changelog offset sum of local state
        self.on_standby = on_standby    # called with this member's standby task ids
        self.tasks = _TaskLayout(topology)
        self.previous_active: list[str] = []

    # (aiokafka declares these as classmethods; instances are used the same way)
    def metadata(self,
                 topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        doc = {"fingerprint": self.shape.fingerprint, "started_ms": self.started_ms,
               "shape": asdict(self.shape)}
        add_endpoint(doc, self.endpoint)
        doc.update(self._task_state_keys())
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics),
                                              json.dumps(doc).encode())

    def assign(self, cluster: ClusterMetadata,
               members: Mapping[str, ConsumerProtocolMemberMetadata]
               ) -> dict[str, ConsumerProtocolMemberAssignment]:
        docs = {m: _decode(meta.user_data) for m, meta in members.items()}
        runs = sorted((doc["started_ms"], m) for m, doc in docs.items()
                      if doc is not None and "fingerprint" in doc)
        if not runs:
            return RangePartitionAssignor.assign(cluster, members)
        group = docs[runs[0][1]]
        assert group is not None
        accepted = {m: meta for m, meta in members.items()
                    if (docs[m] or {}).get("fingerprint") == group["fingerprint"]}
        if self.standby_replicas > 0:
            out = self._assign_tasks(cluster, accepted, docs)
        else:
            out = RangePartitionAssignor.assign(cluster, accepted)
        out = with_endpoint_map(out, docs)
        for member in members.keys() - accepted.keys():
            refusal = {"refused": self._refusal(docs[member], group)}
            out[member] = ConsumerProtocolMemberAssignment(self.version, [],
                                                           json.dumps(refusal).encode())
        return out

    @staticmethod
    def _refusal(mine: dict[str, Any] | None, group: dict[str, Any]) -> str:
        theirs = TopologyShape.from_json(group["shape"])
        since = datetime.fromtimestamp(group["started_ms"] / 1000, UTC)
        if mine is None or "shape" not in mine:
            what = "this worker sent no topology shape"
        else:
            shape = TopologyShape.from_json(mine["shape"])
            what = shape.differences(theirs)
        return (f"topology {theirs.name!r} differs from the version its consumer group runs "
                f"(fingerprint {group['fingerprint']}, running since "
                f"{since:%Y-%m-%d %H:%M:%S} UTC): {what}; roll out a new version by stopping "
                f"every worker of the old one first, or under a new topology name (README: "
                f"rolling out a new version)")

    def on_assignment(self,
                      assignment: ConsumerProtocolMemberAssignment) -> None:
        doc = _decode(assignment.user_data) if assignment.user_data else None
        if doc is not None and "refused" in doc:
            self.on_refused(str(doc["refused"]))
        if self.on_endpoints is not None:
            self.on_endpoints(read_endpoint_map(doc))
        self._take_task_state(assignment, doc)

    # -- standby replicas (task state in the group protocol) --------------------------------------
    def _task_state_keys(self) -> dict[str, Any]:
        """This member's ``task_offsets`` and ``previous_active`` for the leader."""
        offsets = self.local_tasks() if self.local_tasks is not None else {}
        return {"task_offsets": offsets, "previous_active": self.previous_active}

    def _assign_tasks(self, cluster: ClusterMetadata,
                      members: Mapping[str, ConsumerProtocolMemberMetadata],
                      docs: Mapping[str, dict[str, Any] | None]
                      ) -> dict[str, ConsumerProtocolMemberAssignment]:
        """Whole tasks to members by their local state, standbys in ``user_data``."""
        reports = {m: _member_tasks(docs.get(m)) for m in members}
        tasks = self.tasks.tasks(cluster)
        # partition by partition (a member gets all the sub-topologies of a partition, as
        # with range assignment), so no member ends up with all the stateful work
        order = sorted(tasks, key=lambda t: (int(t.rpartition("_")[2]), t))
        plan = assign_tasks(order, self.tasks.stateful(tasks), reports, self.standby_replicas)
        out = {}
        for member in members:
            topics: dict[str, list[int]] = {}
            for task in plan.active[member]:
                for topic, partition in tasks[task]:
                    topics.setdefault(topic, []).append(partition)
            user_data = json.dumps({"standby": plan.standby[member]}).encode()
            out[member] = ConsumerProtocolMemberAssignment(
                self.version, sorted((t, sorted(ps)) for t, ps in topics.items()), user_data)
        return out

    def _take_task_state(self, assignment: ConsumerProtocolMemberAssignment,
                         doc: dict[str, Any] | None) -> None:
        """Remember the tasks this member now runs (reported at the next rebalance) and hand
        its standby tasks to the worker (none when the leader assigns no standbys)."""
        self.previous_active = self.tasks.of_partitions(assignment.partitions())
        standby = [str(t) for t in (doc or {}).get("standby", [])]
        if self.on_standby is not None:
            self.on_standby(standby)


class _TaskLayout:
    """The topology's tasks in terms of topic partitions: task id ``<sub>_<partition>``."""

    def __init__(self, topology: Topology) -> None:
        self.subs = subtopologies(topology)
        self.sub_of_topic = {t: s.id for s in self.subs for t in s.topics}
        self.with_state = {s.id for s in self.subs if s.stores}

    def tasks(self, cluster: ClusterMetadata) -> dict[str, list[tuple[str, int]]]:
        """Task id -> its topic partitions, for the topics the cluster knows."""
        out: dict[str, list[tuple[str, int]]] = {}
        for sub in self.subs:
            for topic in sub.topics:
                for partition in sorted(cluster.partitions_for_topic(topic) or ()):
                    out.setdefault(f"{sub.id}_{partition}", []).append((topic, partition))
        return out

    def stateful(self, tasks: Iterable[str]) -> set[str]:
        return {t for t in tasks if t.rpartition("_")[0] in self.with_state}

    def of_partitions(self, tps: Iterable[tuple[str, int]]) -> list[str]:
        return sorted({f"{self.sub_of_topic[t]}_{p}" for t, p in tps if t in self.sub_of_topic})


def _member_tasks(doc: dict[str, Any] | None) -> MemberTasks:
    """A member's reported task state (nothing, for a member that reports none)."""
    doc = doc or {}
    offsets = doc.get("task_offsets")
    previous = doc.get("previous_active")
    return MemberTasks(
        {str(k): int(v) for k, v in offsets.items()} if isinstance(offsets, dict) else {},
        frozenset(str(t) for t in previous) if isinstance(previous, list) else frozenset())


# -- endpoints: where each member serves its tables ------------------------------------------------
#: endpoint ("host:port") -> topic -> the partitions its member was assigned
EndpointMap = dict[str, dict[str, list[int]]]
ENDPOINT_KEY = "endpoint"    # member metadata: the member's own endpoint
ENDPOINTS_KEY = "endpoints"  # assignment user_data: the group's EndpointMap


def add_endpoint(doc: dict[str, Any], endpoint: str | None) -> dict[str, Any]:
    """Put this member's endpoint in its metadata document (nothing if it serves none)."""
    if endpoint:
        doc[ENDPOINT_KEY] = endpoint
    return doc


def endpoint_map(assignments: Mapping[str, ConsumerProtocolMemberAssignment],
                 docs: Mapping[str, dict[str, Any] | None]) -> EndpointMap:
    """Every member's endpoint with the partitions assigned to it (members without one are
    left out: nobody can ask them)."""
    out: EndpointMap = {}
    for member, assignment in assignments.items():
        endpoint = (docs.get(member) or {}).get(ENDPOINT_KEY)
        if isinstance(endpoint, str) and endpoint:
            topics = out.setdefault(endpoint, {})
            for topic, partitions in assignment.assignment:
                topics.setdefault(topic, []).extend(sorted(partitions))
    return out


def with_endpoint_map(assignments: dict[str, ConsumerProtocolMemberAssignment],
                      docs: Mapping[str, dict[str, Any] | None]
                      ) -> dict[str, ConsumerProtocolMemberAssignment]:
    """The assignments, each with the group's :data:`EndpointMap` added to its JSON
    ``user_data`` (other keys there are kept)."""
    endpoints = endpoint_map(assignments, docs)
    out = {}
    for member, a in assignments.items():
        doc = (_decode(a.user_data) if a.user_data else None) or {}
        doc[ENDPOINTS_KEY] = endpoints
        out[member] = ConsumerProtocolMemberAssignment(a.version, a.assignment,
                                                       json.dumps(doc).encode())
    return out


def read_endpoint_map(doc: dict[str, Any] | None) -> EndpointMap:
    """The :data:`EndpointMap` of an assignment's decoded ``user_data`` ({} without one,
    e.g. from a leader that sends none); malformed entries are skipped."""
    raw = (doc or {}).get(ENDPOINTS_KEY)
    out: EndpointMap = {}
    if not isinstance(raw, dict):
        return out
    for endpoint, topics in raw.items():
        if not isinstance(topics, dict):
            continue
        out[str(endpoint)] = {str(t): [p for p in ps if isinstance(p, int)]
                              for t, ps in topics.items() if isinstance(ps, list)}
    return out


__all__ = ["EndpointMap", "ShapeCheckingAssignor", "TopologyMismatch", "TopologyShape",
           "add_endpoint", "endpoint_map", "read_endpoint_map", "with_endpoint_map"]
