"""``streams topologies|describe|worker|generate``: what a topology is and how it runs."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import click

from .. import registry
from ..config import PROCESSING_MODES, load_settings
from ..dsl.topology import Topology
from ..kafka import admin
from ..kafka.clients import KafkaConnection
from ..logs import LOG_FORMATS
from .errors import UserError
from .options import FiniteFloat, broker_option, topology_argument
from .progress import TerminalProgress


def checked(topology: Topology) -> Topology:
    """``topology`` if a worker would accept its shape, else the worker's reason as one line
    (the same check: its sub-topologies and topic plan, before any topic exists)."""
    from ..runtime.topics import plan_topics

    try:
        _, problems = plan_topics(topology, {}, 1)
    except ValueError as exc:
        problems = [str(exc)]
    if problems:
        raise UserError(f"topology {topology.name!r} cannot run: {problems[0]}")
    return topology


@click.command("topologies")
def topologies_cmd() -> None:
    """List the topologies under topologies/ with the topics they read and write. One that
    fails to load is named (file and line) on stderr; the others are still listed (exit 1)."""
    loaded, errors = registry.load_all()
    for t in loaded:
        click.echo(f"{t.name}\n  reads:  {', '.join(t.input_topics())}\n"
                   f"  writes: {', '.join(t.output_topics())}")
    for line in errors:
        click.echo(f"error: {line}", err=True)
    if errors:
        sys.exit(1)


@click.command("describe")
@topology_argument
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "dot"]), default="text",
              show_default=True, help="mermaid / dot: a flowchart for rendering tools")
def describe_cmd(name: str, fmt: str) -> None:
    """Show a topology's graph, topics and tables (refusing, as a worker does, a topology
    that cannot run)."""
    click.echo(checked(registry.load(name)).describe(fmt))


@click.command("worker")
@topology_argument
@click.option("--config", "config_file", default=None, metavar="FILE",
              help="TOML settings file read after config/defaults.toml and config/NAME.toml")
@click.option("--state-dir", default=None, metavar="DIR",
              help="where the RocksDB state of this worker's tasks lives (default: "
                   "STREAMS_STATE_DIR, else state_dir in the config)")
@click.option("--metrics-port", type=click.IntRange(-1, 65535), default=None,
              help="port of the Prometheus /metrics server on 127.0.0.1 (default: "
                   "metrics_port in the config; 0: any free port, -1: none)")
@broker_option
@click.option("--processing-mode", type=click.Choice(PROCESSING_MODES), default=None,
              help="trade batch size for promptness (default: processing.mode in the config, "
                   "else throughput)")
@click.option("--log-level", default="INFO", show_default=True,
              help="DEBUG, INFO, WARNING or ERROR")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text",
              show_default=True, help="json: one object per line (ts, level, logger, message, "
                                      "topology) for log shippers")
def worker_cmd(name: str, config_file: str | None, state_dir: str | None,
               metrics_port: int | None, broker: str | None, processing_mode: str | None,
               log_level: str, log_format: str) -> None:
    """Run one worker of topology NAME (or package.module:attribute) until SIGTERM/SIGINT."""
    import signal

    from .. import logs

    # Until the worker's event loop installs its handlers, a stop request simply exits cleanly
    # (nothing has been consumed yet).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    from ..runtime.worker import run_worker

    if not isinstance(logging.getLevelName(log_level.upper()), int):
        raise UserError(f"unknown log level {log_level!r} (DEBUG, INFO, WARNING, ERROR)")
    topology = checked(registry.load(name))
    settings = load_settings(topology.name, config_file, state_dir=state_dir,
                             metrics_port=metrics_port, broker=broker,
                             processing_mode=processing_mode)
    # Checked before aiokafka's own logging is switched on: a refused login or an absent
    # broker is reported as one line, not also as aiokafka's connection errors.
    if not admin.broker_answers(KafkaConnection.from_settings(settings)):
        raise UserError(f"no Kafka broker answers at {settings.broker} "
                        "(start one with `streams kafka start` or set STREAMS_BROKER)")
    logs.configure(topology.name, log_level, log_format)
    sys.exit(run_worker(topology, settings))


@click.command("generate")
@click.argument("name")
@click.option("--count", type=click.IntRange(min=1), default=1000, show_default=True,
              help="how many events")
@click.option("--rate", type=FiniteFloat(), default=None,
              help="events per second (default: as fast as possible)")
@click.option("--seed", type=int, default=42, show_default=True,
              help="the same seed gives the same events")
@click.option("--accounts", type=click.IntRange(min=2), default=None,
              help="payments only: number of accounts (default: count / 20, at least 10)")
@click.option("--start", type=click.IntRange(min=0), default=None,
              help="event time of the first event, epoch ms (default: just after the latest "
                   "event time already in NAME's input topics, or now if later)")
@broker_option
def generate_cmd(name: str, count: int, rate: float | None, seed: int, accounts: int | None,
                 start: int | None, broker: str | None) -> None:
    """Write realistic input events for reference topology NAME (progress on a terminal).
    Event time continues where the previous run left it (see --start)."""
    from datetime import UTC, datetime

    from ..devtools import generate
    from ..runtime.topics import topic_specs

    topology = registry.load(name)
    settings = load_settings(topology.name, broker=broker)
    bootstrap = KafkaConnection.from_settings(settings)
    try:
        generate.check_options(name, accounts)
    except ValueError as exc:  # an option that does not fit this generator
        raise UserError(str(exc)) from None
    if start is None:
        start = asyncio.run(generate.continued_start(bootstrap, name))
    items = generate.events(name, count, seed, start_ms=start, rate=rate, accounts=accounts)
    asyncio.run(admin.ensure_topics(bootstrap, topic_specs(topology, settings.partitions),
                                    admin.Replication.from_settings(settings)))
    progress = TerminalProgress("sent", len(items))
    try:
        sent = asyncio.run(generate.produce(bootstrap, items, rate, progress=progress.update))
    finally:
        progress.close()
    topics = sorted({t for t, _, _ in items})
    began = datetime.fromtimestamp(start / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    click.echo(f"sent {sent} events to {', '.join(topics)} (event time from {began}, {start})")


def commands() -> list[Any]:
    return [topologies_cmd, describe_cmd, worker_cmd, generate_cmd]
