"""The ``streams`` command line. Errors are one line on stderr and a non-zero exit.

Every option is checked before anything connects to Kafka (numbers by their click type and
range, settings by :func:`streams.config.load_settings`): a bad value is one line naming the
option, or the setting and the file it came from, and exit status 2 (options) or 1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import sys
from typing import Any

import click

from . import registry
from .config import PROCESSING_MODES, ConfigError, load_settings
from .devtools import broker
from .kafka import admin
from .kafka.clients import KafkaConnection, client_kwargs
from .logs import LOG_FORMATS
from .state.store import StateCorrupted, StateStorageError, StoreLocked


class UserError(click.ClickException):
    """A failure explained in one line."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class OptionError(click.UsageError):
    """A bad command line (an option's value, an unknown command) in one line, exit 2: click
    would print the usage and a hint around it."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class FiniteFloat(click.ParamType):
    """A finite float in ``(low, inf)`` (``low`` excluded): click's FloatRange lets ``nan``
    through every bound check."""

    name = "float"

    def __init__(self, low: float = 0.0) -> None:
        self.low = low

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number <= self.low:
            self.fail(f"{value!r} is not a finite number > {self.low:g}", param, ctx)
        return number


PORT = click.IntRange(1, 65535)


_EXPECTED = (registry.UnknownTopology, ConfigError, broker.BrokerError, admin.BrokerUnavailable,
             StoreLocked, StateCorrupted, StateStorageError, LookupError, FileNotFoundError,
             PermissionError, TimeoutError)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if isinstance(exc, OptionError):
                raise
            raise OptionError(exc.format_message()) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except _EXPECTED as exc:
            raise UserError(str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__
                            ) from exc
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - no traceback for users
            if os.environ.get("STREAMS_DEBUG"):
                raise
            name = type(exc).__name__
            text = str(exc).strip().splitlines()
            raise UserError(f"{name}: {text[0]}" if text else name) from exc


def _broker_option(f: Any) -> Any:
    # STREAMS_BROKER is read by load_settings (not as click's envvar), so that an error names
    # the variable rather than the option
    return click.option("--broker", default=None,
                        help="bootstrap address (default: STREAMS_BROKER, else "
                             "127.0.0.1:9092)")(f)


def _bootstrap(value: str | None) -> KafkaConnection:
    """The cluster to talk to: its address (``--broker`` first) and the security settings."""
    return KafkaConnection.from_settings(load_settings(broker=value))


@click.group(cls=_Group)
def main() -> None:
    """Stateful stream processing on Apache Kafka."""
    # aiokafka logs connection failures itself; the CLI reports them as one line instead.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


# -- kafka -----------------------------------------------------------------------------------------
@main.group(cls=_Group)
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
@click.option("--port", type=PORT, default=broker.DEFAULT_PORT, show_default=True)
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
@click.option("--port", type=PORT, default=broker.DEFAULT_PORT, show_default=True)
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


# -- topologies ------------------------------------------------------------------------------------
@main.command("topologies")
def topologies_cmd() -> None:
    """List the topologies with the topics they read and write."""
    for name in registry.names():
        t = registry.load(name)
        click.echo(f"{name}\n  reads:  {', '.join(t.input_topics())}\n"
                   f"  writes: {', '.join(t.output_topics())}")


@main.command("describe")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "dot"]), default="text")
def describe_cmd(name: str, fmt: str) -> None:
    """Show a topology's graph, topics and tables."""
    click.echo(registry.load(name).describe(fmt))


@main.command("worker")
@click.argument("name")
@click.option("--config", "config_file", default=None, help="extra TOML settings file")
@click.option("--state-dir", default=None, help="default: STREAMS_STATE_DIR, else the config")
@click.option("--metrics-port", type=click.IntRange(-1, 65535), default=None,
              help="0: any free port, -1: no metrics server")
@_broker_option
@click.option("--processing-mode", type=click.Choice(PROCESSING_MODES), default=None,
              help="trade batch size for promptness (default: processing.mode in the config, "
                   "else throughput)")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text",
              show_default=True, help="json: one object per line (ts, level, logger, message, "
                                      "topology) for log shippers")
def worker_cmd(name: str, config_file: str | None, state_dir: str | None,
               metrics_port: int | None, broker: str | None, processing_mode: str | None,
               log_level: str, log_format: str) -> None:
    """Run one worker of topology NAME until SIGTERM/SIGINT."""
    import signal

    from . import logs

    # Until the worker's event loop installs its handlers, a stop request simply exits cleanly
    # (nothing has been consumed yet).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    from .runtime.worker import run_worker

    if not isinstance(logging.getLevelName(log_level.upper()), int):
        raise UserError(f"unknown log level {log_level!r}")
    topology = registry.load(name)
    settings = load_settings(name, config_file, state_dir=state_dir, metrics_port=metrics_port,
                             broker=broker, processing_mode=processing_mode)
    # Checked before aiokafka's own logging is switched on: a refused login or an absent
    # broker is reported as one line, not also as aiokafka's connection errors.
    if not admin.broker_answers(KafkaConnection.from_settings(settings)):
        raise UserError(f"no Kafka broker answers at {settings.broker} "
                        "(start one with `streams kafka start` or set STREAMS_BROKER)")
    logs.configure(name, log_level, log_format)
    sys.exit(run_worker(topology, settings))


@main.command("generate")
@click.argument("name")
@click.option("--count", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--rate", type=FiniteFloat(), default=None,
              help="events per second (default: as fast as possible)")
@click.option("--seed", default=42, show_default=True)
@click.option("--accounts", type=click.IntRange(min=2), default=None,
              help="payments only: number of accounts (default: count / 20, at least 10)")
@click.option("--start", type=click.IntRange(min=0), default=None,
              help="event time of the first event, epoch ms (default: just after the latest "
                   "event time already in NAME's input topics, or now if later)")
@_broker_option
def generate_cmd(name: str, count: int, rate: float | None, seed: int, accounts: int | None,
                 start: int | None, broker: str | None) -> None:
    """Write realistic input events for reference topology NAME. Event time continues where
    the previous run left it (see --start)."""
    from datetime import UTC, datetime

    from .devtools import generate
    from .runtime.topics import topic_specs

    topology = registry.load(name)
    settings = load_settings(name, broker=broker)
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
    sent = asyncio.run(generate.produce(bootstrap, items, rate))
    topics = sorted({t for t, _, _ in items})
    began = datetime.fromtimestamp(start / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    click.echo(f"sent {sent} events to {', '.join(topics)} (event time from {began}, {start})")


@main.command("consume", hidden=False)
@click.argument("topic")
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--timeout", type=FiniteFloat(), default=5.0, show_default=True,
              help="seconds to wait for LIMIT records")
@click.option("--count", "count_only", is_flag=True, help="only print how many records TOPIC holds")
@_broker_option
def consume_cmd(topic: str, limit: int, timeout: float, count_only: bool,
                broker: str | None) -> None:
    """Print up to LIMIT records of TOPIC from the beginning (key, value as JSON lines)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    if count_only:
        ends = asyncio.run(admin.end_offsets(_bootstrap(broker), topic))
        if not ends:
            raise LookupError(f"topic {topic!r} does not exist")
        click.echo(f"{topic}: {sum(ends.values())} records in {len(ends)} partitions")
        return

    async def read() -> list[Any]:
        parts = (await admin.topic_partitions(_bootstrap(broker), [topic])).get(topic)
        if not parts:
            raise LookupError(f"topic {topic!r} does not exist")
        c = AIOKafkaConsumer(**client_kwargs(_bootstrap(broker)), enable_auto_commit=False)
        await c.start()
        try:
            c.assign([TopicPartition(topic, p) for p in parts])
            await c.seek_to_beginning()
            out: list[Any] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while len(out) < limit and loop.time() < deadline:
                for recs in (await c.getmany(timeout_ms=300)).values():
                    out.extend(recs)
            return out[:limit]
        finally:
            await c.stop()

    for rec in asyncio.run(read()):
        key = rec.key.decode(errors="replace") if rec.key else None
        value = rec.value.decode(errors="replace") if rec.value else None
        click.echo(json.dumps({"partition": rec.partition, "offset": rec.offset, "key": key,
                               "value": value}))


# -- tables ----------------------------------------------------------------------------------------
@main.group(cls=_Group)
def tables() -> None:
    """List, read and reset a topology's tables."""


def _state_dir_option(f: Any) -> Any:
    return click.option("--state-dir", default=None,  # STREAMS_STATE_DIR: load_settings
                        help="state directory of the workers on this host")(f)


@tables.command("list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@_state_dir_option
@_broker_option
def tables_list(name: str | None, as_json: bool, state_dir: str | None, broker: str | None) -> None:
    """Every table of NAME (or of all topologies): kind, partitions, keys, bytes, offsets."""
    from .tables.inspect import table_infos

    names = [name] if name else registry.names()
    rows = []
    for topo_name in names:
        topology = registry.load(topo_name)
        settings = load_settings(topo_name, state_dir=state_dir, broker=broker)
        rows += asyncio.run(table_infos(topology, settings.state_dir,
                                        KafkaConnection.from_settings(settings),
                                        processing_guarantee=settings.processing_guarantee))
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no tables")
    for r in rows:
        ends = ", ".join(f"{p}:{o}" for p, o in sorted(r.changelog_end_offsets.items()))
        click.echo(f"{r.topology}/{r.table}  kind={r.kind}  partitions={r.partitions}  "
                   f"keys={r.keys if r.keys_exact else f'~{r.keys} (estimate)'} "
                   f"(local tasks {','.join(r.local_tasks) or '-'})"
                   f"  bytes={r.bytes_on_disk}  guarantee={r.processing_guarantee}")
        if r.window is not None:
            click.echo(f"  windows: {r.window}; {r.windows} stored")
        if r.kind == "versioned":
            click.echo(f"  versions: {r.versions} stored; history retention {r.history_ms} ms")
        if r.kind == "global":  # every worker holds all of it; its topic is its changelog
            click.echo(f"  topic {r.changelog} (all partitions, the changelog) end offsets "
                       f"[{ends}]")
        else:
            click.echo(f"  changelog {r.changelog} end offsets [{ends}]")
        click.echo("  committed input offsets: " + (", ".join(
            f"{k}={v}" for k, v in r.committed_input_offsets.items()) or "-"))
        click.echo("  local input offsets:     " + (", ".join(
            f"{k}={v}" for k, v in sorted(r.local_input_offsets.items())) or "-"))
        if r.processing_guarantee == "exactly_once":
            for task, offs in sorted(r.task_offsets.items()):
                click.echo(f"  task {task}: last committed transaction: " + (", ".join(
                    f"{k}={v}" for k, v in sorted(offs.items())) or "-"))


@tables.command("get")
@click.argument("name")
@click.argument("table")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True)
@click.option("--as-of", "as_of", type=int, default=None,
              help="versioned tables: the value as of this time (epoch ms)")
@click.option("--versions", "all_versions", is_flag=True,
              help="versioned tables: every stored version of KEY, oldest first")
@_state_dir_option
def tables_get(name: str, table: str, key: str, as_json: bool, as_of: int | None,
               all_versions: bool, state_dir: str | None) -> None:
    """Print the value of KEY in TABLE (from this host's state); for a windowed table every
    window of KEY, one line each (with --json: {"window_start", "window_end", "value"}); for
    a versioned table the latest value, or with --as-of the value as of that time, or with
    --versions every version (with --json: {"timestamp", "value"}, value null: deleted)."""
    from .serdes import json_dumps
    from .tables.inspect import get_value, get_versions, get_windows, is_windowed

    topology = registry.load(name)
    settings = load_settings(name, state_dir=state_dir)
    if all_versions:
        for v in get_versions(topology, settings.state_dir, table, key):
            text = json_dumps(v if as_json else v["value"]).decode()
            click.echo(text if as_json else f"{key} @{v['timestamp']}: {text}")
        return
    if is_windowed(topology, table):
        for w in get_windows(topology, settings.state_dir, table, key):
            if as_json:
                click.echo(json_dumps(w).decode())
            else:
                s, e = w["window_start"], w["window_end"]
                bounds = f"[{s}, {e})" if _end_exclusive(topology, table) else f"[{s}, {e}]"
                click.echo(f"{key} {bounds}: {json_dumps(w['value']).decode()}")
        return
    value = get_value(topology, settings.state_dir, table, key, as_of=as_of)
    text = json_dumps(value).decode()
    click.echo(text if as_json else f"{key}: {text}")


def _end_exclusive(topology: Any, table: str) -> bool:
    from .dsl.window_specs import HoppingWindows, TumblingWindows
    from .tables.inspect import window_spec

    return isinstance(window_spec(topology.stores[table]), (TumblingWindows, HoppingWindows))


@tables.command("reset")
@click.argument("name")
@click.argument("table_names", metavar="[TABLE...]", nargs=-1)
@click.option("--dry-run", is_flag=True, help="print the plan, change nothing")
@click.option("--force", is_flag=True, help="go ahead even if workers are running")
@_state_dir_option
@_broker_option
def tables_reset(name: str, table_names: tuple[str, ...], dry_run: bool, force: bool,
                 state_dir: str | None, broker: str | None) -> None:
    """Reset tables to be rebuilt from the input: group offsets to earliest, changelog and
    repartition topics recreated, local state deleted."""
    from .tables.reset import ResetRefused, execute_reset, plan_reset

    topology = registry.load(name)
    settings = load_settings(name, state_dir=state_dir, broker=broker)
    if not topology.stores and not topology.global_tables:
        raise UserError(f"topology {name!r} has no tables")
    try:
        plan = plan_reset(topology, settings.state_dir, settings.partitions, list(table_names))
    except ResetRefused as exc:
        raise UserError(str(exc)) from None
    for line in plan.describe():
        click.echo(line)
    if dry_run:
        click.echo("dry run: nothing changed")
        return
    try:
        asyncio.run(execute_reset(plan, KafkaConnection.from_settings(settings), force,
                                  click.echo, admin.Replication.from_settings(settings)))
    except ResetRefused as exc:
        raise UserError(str(exc)) from None
    click.echo("reset done")


if __name__ == "__main__":
    main()
