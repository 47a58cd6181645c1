"""The routing map: every member learns from its assignment which endpoint holds each partition,
and a key is placed exactly where Kafka's default partitioner (the producers') puts it."""

from __future__ import annotations

import json
from typing import Any

from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.partitioner import murmur2

from streams import Topology
from streams.runtime.assignor import ShapeCheckingAssignor, read_endpoint_map, with_endpoint_map
from streams.serving.routing import Routes, TableRouter, key_partition
from topologies.payments import topology as payments
from topologies.trip_stats import topology as trip_stats

PAYMENT_TOPICS = ["deposits", "payments", "payments-credits-repartition"]


class Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}


def assignors(*endpoints: str | None, topology: Topology = payments
              ) -> tuple[list[ShapeCheckingAssignor], list[dict[str, Any]]]:
    """Assignors of members with these endpoints, and what each one's on_endpoints got."""
    seen: list[dict[str, Any]] = [{} for _ in endpoints]
    out = []
    for i, endpoint in enumerate(endpoints):
        out.append(ShapeCheckingAssignor(topology, lambda why: None, started_ms=i,
                                         endpoint=endpoint, on_endpoints=seen[i].update))
    return out, seen


def test_key_partition_is_murmur2_as_the_java_client_computes_it() -> None:
    for key in (b"acc0", b"berlin", b"", "zürich".encode(), bytes(range(256)), b"k" * 20_000):
        for n in (1, 4, 7):
            assert key_partition(key, n) == (murmur2(key) & 0x7FFFFFFF) % n


def test_every_member_learns_the_whole_map_and_it_matches_the_assignment() -> None:
    (a, b, c), seen = assignors("10.0.0.1:9400", "10.0.0.2:9400", None)
    members = {f"m{i}": x.metadata(PAYMENT_TOPICS) for i, x in enumerate((a, b, c))}
    out = b.assign(Cluster(), members)  # any member may lead
    for i, x in enumerate((a, b, c)):
        x.on_assignment(out[f"m{i}"])
    # the member without an endpoint gets partitions but is in nobody's map
    assert seen[0] == seen[1] == seen[2] and set(seen[0]) == {"10.0.0.1:9400", "10.0.0.2:9400"}
    for member, endpoint in (("m0", "10.0.0.1:9400"), ("m1", "10.0.0.2:9400")):
        got = {(t, p) for t, ps in seen[0][endpoint].items() for p in ps}
        assert got == {(tp.topic, tp.partition) for tp in out[member].partitions()}
        assert got  # (each holds some)
    routes = Routes(seen[0])
    mine = {(tp.topic, tp.partition) for tp in out["m2"].partitions()}
    assert mine and all(routes.owner(t, p) is None for t, p in mine)


def test_a_refused_member_serves_nothing_and_other_keys_of_user_data_are_kept() -> None:
    other = Topology("payments", version="other")
    other.stream("deposits").to("elsewhere")
    (a,), _ = assignors("h1:1")
    (b,), _ = assignors("h2:2", topology=other)
    members = {"m0": a.metadata(PAYMENT_TOPICS), "m1": b.metadata(PAYMENT_TOPICS)}
    out = a.assign(Cluster(), members)
    endpoints = read_endpoint_map(json.loads(out["m0"].user_data))
    assert list(endpoints) == ["h1:1"]
    assert "refused" in json.loads(out["m1"].user_data)
    # a key another part of the assignor puts in user_data survives the endpoint map
    base = {"m0": ConsumerProtocolMemberAssignment(0, [("deposits", [0])],
                                                   json.dumps({"standby": [1]}).encode())}
    doc = json.loads(with_endpoint_map(base, {"m0": {"endpoint": "h1:1"}})["m0"].user_data)
    assert doc == {"standby": [1], "endpoints": {"h1:1": {"deposits": [0]}}}


def test_an_assignment_without_a_map_clears_the_routes() -> None:
    (a,), seen = assignors("h1:1")
    seen[0]["stale"] = {"deposits": [0]}
    got: list[Any] = []
    a.on_endpoints = got.append
    a.on_assignment(ConsumerProtocolMemberAssignment(0, [("deposits", [0])], b""))
    assert got == [{}]
    assert not Routes(got[0])
    malformed = {"endpoints": {"h": {"t": [0, "x", None]}, "bad": 3}}
    assert read_endpoint_map(malformed) == {"h": {"t": [0]}}


def test_a_key_is_routed_to_the_owner_of_its_partition() -> None:
    routes = Routes({"a:1": {"deposits": [0, 1], "payments": [0, 1]},
                     "b:2": {"deposits": [2, 3], "payments": [2, 3]}})
    router = TableRouter(payments, {t: 4 for t in PAYMENT_TOPICS})
    assert router.topic["balances"] in PAYMENT_TOPICS
    for account in (f"acc{i}" for i in range(50)):
        partition, owner = router.owner("balances", account, routes)
        assert partition == (murmur2(account.encode()) & 0x7FFFFFFF) % 4
        assert owner == ("a:1" if partition < 2 else "b:2")


def test_windowed_and_repartitioned_tables_route_by_their_own_topics() -> None:
    partitions = {t: 4 for t in trip_stats.input_topics() + trip_stats.repartition_topics()}
    router = TableRouter(trip_stats, partitions)
    per_city = ["rides-per-city-1m", "rides-per-city-5m"]
    assert all(router.topic[t] == "rides" for t in per_city)
    for by_driver in ("driver-totals", "busy-drivers"):
        assert router.topic[by_driver] == "trip_stats-rides-by-driver-repartition"
    assert router.topic["rider-sessions"] == "trip_stats-rides-by-rider-repartition"
    routes = Routes({"x:1": {"rides": [0, 1, 2, 3]}})
    assert router.owner(per_city[0], "berlin", routes)[1] == "x:1"
    assert router.owner("driver-totals", "d1", routes)[1] is None  # nobody holds it yet
