"""The local broker's generated configuration: where each node keeps its files, and the
``server.properties`` of a node (listeners, KRaft quorum, SCRAM and TLS when asked).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def streams_home() -> Path:
    return Path(os.environ.get("STREAMS_HOME", Path.home() / ".cache" / "streams"))


@dataclass(frozen=True)
class BrokerPaths:
    port: int
    # Under streams_home(): "broker-<port>" for the single broker, "cluster-<port>/node-<id>"
    # for a node of a local cluster.
    subdir: str = ""

    @property
    def root(self) -> Path:
        return streams_home() / (self.subdir or f"broker-{self.port}")

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def pid_file(self) -> Path:
        return self.root / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def properties(self) -> Path:
        return self.root / "server.properties"


POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streams.local</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version></dependency>
    <!-- Kafka 3.9 logs through slf4j 1.7 + reload4j; without a binding it prints nothing. -->
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId>
      <version>1.7.36</version></dependency>
  </dependencies>
</project>
"""

SERVER_PROPERTIES = """process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners={listeners}
advertised.listeners={advertised}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map={protocol_map}
log.dirs={data}
num.partitions=1
auto.create.topics.enable=true
# Internal topics must not ask for more replicas than there are brokers, or transactions and
# group offsets never become available; on a cluster they get 3 copies, 2 in sync.
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=8
default.replication.factor={replicas}
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=8
group.initial.rebalance.delay.ms=0
log.cleaner.backoff.ms=5000
"""

# Extra listeners (SASL_PLAINTEXT, SSL, SASL_SSL) for testing secured clients. SASL users are
# SCRAM credentials stored in the cluster metadata when the storage is formatted.
SCRAM_JAAS = ("listener.name.{listener}.scram-sha-{bits}.sasl.jaas.config="
              "org.apache.kafka.common.security.scram.ScramLoginModule required;\n")
# The broker's key and certificate chain, and the CA it trusts, as PEM files (no JKS needed).
TLS_PROPERTIES = """ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={truststore}
"""
SECURED_PROTOCOLS = ("SASL_PLAINTEXT", "SSL", "SASL_SSL")


@dataclass(frozen=True)
class Tls:
    """PEM files for TLS listeners: ``keystore`` holds the broker's unencrypted private key and
    its certificate chain; ``truststore`` the CA certificates it trusts."""

    keystore: Path
    truststore: Path


@dataclass(frozen=True)
class Node:
    """One KRaft process (broker + controller) of a local cluster."""

    node_id: int
    port: int
    controller_port: int
    paths: BrokerPaths
    # Extra client listeners, protocol -> port, named after their protocol.
    secured: tuple[tuple[str, int], ...] = ()
    tls: Tls | None = None

    def properties(self, voters: str, nodes: int) -> str:
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        extra = ""
        for protocol, port in self.secured:
            listeners.append(f"{protocol}://127.0.0.1:{port}")
            protocols.append(f"{protocol}:{protocol}")
            if protocol.startswith("SASL_"):
                for bits in (256, 512):
                    extra += SCRAM_JAAS.format(listener=protocol.lower(), bits=bits)
        if any(p.startswith("SASL_") for p, _ in self.secured):
            extra += "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512\n"
        if self.tls is not None:
            extra += TLS_PROPERTIES.format(keystore=self.tls.keystore,
                                           truststore=self.tls.truststore)
        text = SERVER_PROPERTIES.format(
            node_id=self.node_id, voters=voters,
            listeners=",".join([*listeners, f"CONTROLLER://127.0.0.1:{self.controller_port}"]),
            advertised=",".join(listeners), protocol_map=",".join(protocols),
            data=self.paths.data, replicas=min(3, nodes), min_isr=2 if nodes >= 3 else 1)
        return text + extra


LOG4J = """log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""
