"""The ``streams`` command line. Errors are one line on stderr and a non-zero exit.

Every option is checked before anything connects to Kafka (numbers by their click type and
range, settings by :func:`streams.config.load_settings`): a bad value is one line naming the
option, or the setting and the file it came from, and exit status 2 (options) or 1.

The commands live in :mod:`streams.commands` by concern (errors and shared options, the local
broker, topologies and workers, ``consume``); the ``tables`` commands are here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from collections.abc import Iterable
from typing import Any

import click

from . import registry
from .commands import consume as consume_commands
from .commands import topologies as topology_commands
from .commands.errors import Group, MainGroup, OptionError, UserError
from .commands.kafka import kafka
from .commands.options import bootstrap as _bootstrap
from .commands.options import broker_option as _broker_option
from .commands.options import state_dir_option as _state_dir_option
from .config import load_settings
from .kafka import admin
from .kafka.clients import KafkaConnection

__all__ = ["OptionError", "UserError", "admin", "main"]


def _version() -> str:
    try:
        return version("streams")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


@click.group(cls=MainGroup)
@click.version_option(_version(), "--version", "-V", prog_name="streams",
                      message="%(prog)s %(version)s")
def main() -> None:
    """Stateful stream processing on Apache Kafka.

    NAME is a topology under topologies/ (see `streams topologies`) or your own, given as
    package.module:attribute (the attribute defaults to `topology`)."""
    # aiokafka logs connection failures itself; the CLI reports them as one line instead.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


main.add_command(kafka)
for _command in (*topology_commands.commands(), consume_commands.consume_cmd):
    main.add_command(_command)


# -- tables ----------------------------------------------------------------------------------------
@main.group(cls=Group)
def tables() -> None:
    """List, read and reset a topology's tables."""


@tables.command("list")
@click.argument("name", metavar="[NAME|MODULE:ATTR]", required=False)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@_state_dir_option
@_broker_option
def tables_list(name: str | None, as_json: bool, state_dir: str | None, broker: str | None) -> None:
    """Every table of NAME (or of all topologies): kind, partitions, keys, size, offsets.

    bytes= is the table's own RocksDB column family in this host's tasks (SST files and
    memtables, RocksDB's size properties); task-dirs= the whole task directories that hold it,
    shared with the task's other tables (WAL, metadata, logs)."""
    from .tables.inspect import table_infos

    errors: list[str] = []
    if name:
        topologies = [registry.load(name)]
    else:
        topologies, errors = registry.load_all()
    rows = []
    for topology in topologies:
        settings = load_settings(topology.name, state_dir=state_dir, broker=broker)
        rows += asyncio.run(table_infos(topology, settings.state_dir,
                                        KafkaConnection.from_settings(settings),
                                        processing_guarantee=settings.processing_guarantee))
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
    elif not rows:
        click.echo("no tables")
    for r in [] if as_json else rows:
        ends = ", ".join(f"{p}:{o}" for p, o in sorted(r.changelog_end_offsets.items()))
        click.echo(f"{r.topology}/{r.table}  kind={r.kind}  partitions={r.partitions}  "
                   f"keys={r.keys if r.keys_exact else f'~{r.keys} (estimate)'} "
                   f"(local tasks {','.join(r.local_tasks) or '-'})"
                   f"  bytes={r.bytes_on_disk} (column family)  task-dirs={r.task_bytes_on_disk}"
                   f"  guarantee={r.processing_guarantee}")
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
    for line in errors:  # the topologies that do not load, after the others' tables
        click.echo(f"error: {line}", err=True)
    if errors:
        sys.exit(1)


@tables.command("get")
@click.argument("name")
@click.argument("table")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output, one JSON per line")
@click.option("--as-of", "as_of", type=int, default=None,
              help="versioned tables: the value as of this time (epoch ms)")
@click.option("--versions", "all_versions", is_flag=True,
              help="versioned tables: every stored version of KEY, oldest first")
@click.option("--worker", default=None, metavar="URL|auto",
              help="ask a running worker over HTTP (it forwards to the key's owner): its "
                   "http://host:port, or auto to find one through the consumer group; "
                   "default: this host's state")
@_state_dir_option
@_broker_option
def tables_get(name: str, table: str, key: str, as_json: bool, as_of: int | None,
               all_versions: bool, worker: str | None, state_dir: str | None,
               broker: str | None) -> None:
    """Print the value of KEY in TABLE (from this host's state); for a windowed table every
    window of KEY, one line each (with --json: {"window_start", "window_end", "value"}); for
    a versioned table the latest value, or with --as-of the value as of that time, or with
    --versions every version (with --json: {"timestamp", "value"}, value null: deleted).
    With --worker, a running worker answers from its committed state, whichever host holds
    KEY."""
    from .serdes import json_dumps
    from .tables.inspect import get_value, get_versions, get_windows, is_windowed

    topology = registry.load(name)
    if worker is not None:
        if all_versions:
            raise UserError("--versions reads this host's state only (no --worker)")
        value = _remote_get(topology.name, table, key, as_of, worker, broker)
        windows = value.get("windows")
        if windows is None:
            text = json_dumps(value["value"]).decode()
            click.echo(text if as_json else f"{key}: {text}")
            return
        _print_windows(topology, table, key, windows, as_json)
        return
    settings = load_settings(topology.name, state_dir=state_dir)
    if all_versions:
        for v in get_versions(topology, settings.state_dir, table, key):
            text = json_dumps(v if as_json else v["value"]).decode()
            click.echo(text if as_json else f"{key} @{v['timestamp']}: {text}")
        return
    if is_windowed(topology, table):
        _print_windows(topology, table, key, get_windows(topology, settings.state_dir, table, key),
                       as_json)
        return
    value = get_value(topology, settings.state_dir, table, key, as_of=as_of)
    text = json_dumps(value).decode()
    click.echo(text if as_json else f"{key}: {text}")


def _remote_get(name: str, table: str, key: str, as_of: int | None, worker: str,
                broker: str | None) -> dict[str, Any]:
    """A worker's answer for KEY; ``auto``: the first of the group's workers that answers."""
    from .serving.client import WorkerUnavailable, get_key, group_endpoints

    if worker != "auto":
        candidates = [worker]
    else:
        candidates = group_endpoints(_bootstrap(broker), name)
        if not candidates:
            raise UserError(f"no running worker of {name!r} serves its tables (none in its "
                            "consumer group advertises an HTTP endpoint)")
    problem = ""
    for candidate in candidates:
        try:
            return get_key(candidate, table, key, as_of)
        except WorkerUnavailable as exc:
            problem = str(exc)
    raise UserError(problem)


def _print_windows(topology: Any, table: str, key: str, windows: Iterable[dict[str, Any]],
                   as_json: bool) -> None:
    """One line per window: its JSON, or ``KEY [start, end): value``."""
    from .serdes import json_dumps

    for w in windows:
        if as_json:
            click.echo(json_dumps(w).decode())
        else:
            s, e = w["window_start"], w["window_end"]
            bounds = f"[{s}, {e})" if _end_exclusive(topology, table) else f"[{s}, {e}]"
            click.echo(f"{key} {bounds}: {json_dumps(w['value']).decode()}")


def _end_exclusive(topology: Any, table: str) -> bool:
    from .dsl.window_specs import HoppingWindows, TumblingWindows
    from .tables.inspect import window_spec

    return isinstance(window_spec(topology.stores[table]), (TumblingWindows, HoppingWindows))


@tables.command("reset")
@click.argument("name", metavar="NAME|MODULE:ATTR")
@click.argument("table_names", metavar="[TABLE...]", nargs=-1)
@click.option("--dry-run", is_flag=True,
              help="print the plan and whether it would be refused, change nothing")
@click.option("--force", is_flag=True, help="go ahead even if workers are running")
@_state_dir_option
@_broker_option
def tables_reset(name: str, table_names: tuple[str, ...], dry_run: bool, force: bool,
                 state_dir: str | None, broker: str | None) -> None:
    """Reset tables to be rebuilt from the input: group offsets to earliest, changelog and
    repartition topics recreated, local state deleted. A dry run asks the broker too: it
    fails (exit 1) when the broker does not answer or live workers would refuse the reset."""
    from .tables.reset import ResetRefused, execute_reset, live_members_refusal, plan_reset

    topology = registry.load(name)
    settings = load_settings(topology.name, state_dir=state_dir, broker=broker)
    if not topology.stores and not topology.global_tables:
        raise UserError(f"topology {topology.name!r} has no tables")
    try:
        plan = plan_reset(topology, settings.state_dir, settings.partitions, list(table_names))
    except ResetRefused as exc:
        raise UserError(str(exc)) from None
    kafka = KafkaConnection.from_settings(settings)
    if dry_run:
        # the real reset's first step, asked before the plan is shown (broker down: one line)
        refusal = asyncio.run(live_members_refusal(kafka, plan.topology, force))
        for line in plan.describe():
            click.echo(line)
        if refusal:
            raise UserError(f"{refusal} (dry run: nothing changed)")
        click.echo("dry run: nothing changed")
        return
    for line in plan.describe():
        click.echo(line)
    try:
        asyncio.run(execute_reset(plan, kafka, force, click.echo,
                                  admin.Replication.from_settings(settings)))
    except ResetRefused as exc:
        raise UserError(str(exc)) from None
    click.echo("reset done")


if __name__ == "__main__":
    main()
