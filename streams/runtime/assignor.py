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
                 on_endpoints: Callable[[EndpointMap], None] | None = None) -> None:
        self.shape = TopologyShape.of(topology)
        self.started_ms = int(time.time() * 1000) if started_ms is None else started_ms
        self.on_refused = on_refused
        self.endpoint = endpoint          # this member's "host:port" (None: serves nothing)
        self.on_endpoints = on_endpoints  # called with the group's map on every assignment

    # (aiokafka declares these as classmethods; instances are used the same way)
    def metadata(self,
                 topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        doc = {"fingerprint": self.shape.fingerprint, "started_ms": self.started_ms,
               "shape": asdict(self.shape)}
        add_endpoint(doc, self.endpoint)
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
        out = with_endpoint_map(RangePartitionAssignor.assign(cluster, accepted), docs)
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
