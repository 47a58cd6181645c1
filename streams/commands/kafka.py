"""``streams kafka start|stop|status``: the local broker for development, demo and tests."""

from __future__ import annotations

import re
import sys

import click

from ..devtools import broker
from .errors import Group, OptionError
from .options import PORT


@click.group(cls=Group)
def kafka() -> None:
    """A local Apache Kafka (KRaft) for development, demo and tests: one broker, or a
    cluster of several with --nodes."""


@kafka.command("start")
@click.option("--port", type=PORT, default=broker.DEFAULT_PORT, show_default=True,
              help="client port (of the first node with --nodes)")
@click.option("--nodes", type=click.IntRange(1, 9), default=1, show_default=True,
              help="> 1: a local KRaft cluster on ports PORT..PORT+NODES-1, one process each")
@click.option("--heap", default=None, help="JVM heap per node (default 1g, 512m per cluster node)")
def kafka_start(port: int, nodes: int, heap: str | None) -> None:
    """Fetch (once), format and start the broker (or cluster) on 127.0.0.1:PORT."""
    if heap is not None and not re.fullmatch(r"[1-9][0-9]*[kKmMgG]?", heap):
        raise OptionError(f"Invalid value for '--heap': {heap!r} is not a JVM heap size "
                          "(e.g. 512m, 2g)")
    if nodes > 1:
        broker.start_cluster(port, nodes, heap=heap or "512m")
    else:
        broker.start(port, heap=heap or "1g")


@kafka.command("stop")
@click.option("--port", type=PORT, default=broker.DEFAULT_PORT, show_default=True,
              help="client port of the broker (of the first node of a cluster)")
def kafka_stop(port: int) -> None:
    """Stop the broker (or cluster) that `streams kafka start` started."""
    if broker.cluster_nodes(port):
        stopped = broker.stop_cluster(port)
        click.echo(f"kafka cluster stopped ({stopped} nodes were running)" if stopped
                   else "kafka cluster was not running")
    elif broker.stop(port):
        click.echo("kafka stopped")
    else:
        click.echo("kafka was not running")


@kafka.command("status")
@click.option("--port", type=PORT, default=broker.DEFAULT_PORT, show_default=True,
              help="client port of the broker (of the first node of a cluster)")
def kafka_status(port: int) -> None:
    """Say whether the local broker runs (exit 0) or not (exit 1); for a cluster, each node
    (exit 0 only when all run)."""
    if broker.cluster_nodes(port):
        nodes = broker.cluster_status(port)
        for node, pid in nodes:
            state = f"running (pid {pid})" if pid else "stopped"
            click.echo(f"node {node.node_id} at 127.0.0.1:{node.port}: {state}")
        if not all(pid for _, pid in nodes):
            sys.exit(1)
        return
    running, pid = broker.status(port)
    if running:
        click.echo(f"kafka running at 127.0.0.1:{port} (pid {pid})")
    else:
        click.echo("kafka stopped")
        sys.exit(1)
