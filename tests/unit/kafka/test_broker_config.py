"""The local broker's generated configuration: cluster layout, internal topic replication,
secured listeners (no broker is started here; the integration tests start real ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.devtools import broker


def props(text: str) -> dict[str, str]:
    joined = text.replace("\\\n", "")
    return dict(line.split("=", 1) for line in joined.splitlines()
                if line.strip() and not line.startswith("#"))


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STREAMS_HOME", str(tmp_path))
    return tmp_path


def test_three_nodes_form_one_quorum_on_distinct_ports(home: Path) -> None:
    nodes = broker.cluster_nodes(19092, 3)
    voters = broker._voters(nodes)
    ports = [n.port for n in nodes] + [n.controller_port for n in nodes]
    assert len(set(ports)) == 6
    assert [n.port for n in nodes] == [19092, 19093, 19094]
    assert broker.cluster_bootstrap(19092, 3) == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    assert len({n.paths.data for n in nodes}) == 3, "one data dir per node"
    for node in nodes:
        p = props(node.properties(voters, 3))
        assert p["node.id"] == str(node.node_id)
        assert p["controller.quorum.voters"] == voters
        assert voters.count("@") == 3
        assert p["listeners"].startswith(f"PLAINTEXT://127.0.0.1:{node.port},")
        assert f"CONTROLLER://127.0.0.1:{node.controller_port}" in p["listeners"]
        assert p["log.dirs"] == str(node.paths.data)
        # Group offsets and transactions survive the loss of one broker.
        assert p["offsets.topic.replication.factor"] == "3"
        assert p["transaction.state.log.replication.factor"] == "3"
        assert p["transaction.state.log.min.isr"] == "2"


def test_single_node_keeps_internal_topics_at_one_replica() -> None:
    node = broker.cluster_nodes(9092, 1)[0]
    p = props(node.properties(broker._voters([node]), 1))
    assert p["offsets.topic.replication.factor"] == "1"
    assert p["transaction.state.log.min.isr"] == "1"


def test_secured_listeners_are_advertised_with_scram_and_tls(home: Path) -> None:
    tls = broker.Tls(home / "keystore.pem", home / "ca.pem")
    node = broker.Node(1, 9092, 9093, broker.BrokerPaths(9092),
                       (("SASL_PLAINTEXT", 9094), ("SASL_SSL", 9095)), tls)
    p = props(node.properties("1@127.0.0.1:9093", 1))
    assert p["advertised.listeners"] == ("PLAINTEXT://127.0.0.1:9092,"
                                         "SASL_PLAINTEXT://127.0.0.1:9094,SASL_SSL://127.0.0.1:9095")
    assert "SASL_SSL:SASL_SSL" in p["listener.security.protocol.map"]
    assert p["sasl.enabled.mechanisms"] == "SCRAM-SHA-256,SCRAM-SHA-512"
    for listener in ("sasl_plaintext", "sasl_ssl"):
        assert "ScramLoginModule" in p[f"listener.name.{listener}.scram-sha-512.sasl.jaas.config"]
    assert p["ssl.keystore.location"] == str(home / "keystore.pem")
    assert p["ssl.truststore.type"] == "PEM"


def test_tls_listener_without_certificate_is_refused() -> None:
    with pytest.raises(broker.BrokerError, match="needs the broker's key"):
        broker.start(1, secured={"SSL": 2}, verbose=False)
    with pytest.raises(broker.BrokerError, match="unknown listener"):
        broker.start(1, secured={"GSSAPI": 2}, verbose=False)


def test_cluster_size_cannot_change_under_existing_data(home: Path) -> None:
    (home / "cluster-19092").mkdir()
    (home / "cluster-19092" / "nodes").write_text("3")
    with pytest.raises(broker.BrokerError, match="created with 3 nodes"):
        broker.start_cluster(19092, 2, verbose=False)


def test_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-storage reads an id starting with "-" as an option and refuses to format."""
    import uuid as uuid_module

    dash_first = uuid_module.UUID(bytes=bytes([0xF8]) + bytes(15))  # base64 starts with "-"
    plain = uuid_module.UUID(bytes=bytes(16))
    draws = iter([dash_first, dash_first, plain])
    monkeypatch.setattr(broker.uuid, "uuid4", lambda: next(draws))
    cluster_id = broker._cluster_id()
    assert cluster_id == "A" * 22
