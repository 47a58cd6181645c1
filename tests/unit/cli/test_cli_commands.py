"""The command line without a broker: one-line errors, closed pipes, --version, help texts,
user topologies by reference, topology files that fail to load, describe's edges and checks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from streams import registry
from streams.cli import main
from streams.dsl.describe import agent_writes
from topologies.payments import topology as payments

ROOT = Path(__file__).resolve().parents[3]


def _run(args: list[str]) -> Any:
    return CliRunner().invoke(main, args)


def _one_line_error(result: Any, *fragments: str) -> str:
    text = result.output.strip()
    assert result.exit_code not in (0, None), text
    assert "Traceback" not in text and "\n" not in text, text
    assert text.startswith("error: "), text
    for fragment in fragments:
        assert fragment in text, text
    return text


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's project directory (the current directory), with its own package and a
    ``topologies`` package of one good and one broken topology; the modules it imports are
    forgotten afterwards."""
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "flows.py").write_text(textwrap.dedent("""\
        from streams import Topology
        orders = Topology("shop_orders")
        orders.stream("orders").filter(lambda v: True).to("big-orders")
        loop = Topology("shop_loop")
        loop.stream("a").to("a")
        not_a_topology = 42
        """))
    (tmp_path / "topologies").mkdir()
    (tmp_path / "topologies" / "__init__.py").write_text("")
    (tmp_path / "topologies" / "good.py").write_text(textwrap.dedent("""\
        from streams import Topology
        topology = Topology("good")
        topology.stream("x").to("y")
        """))
    (tmp_path / "topologies" / "broken.py").write_text(textwrap.dedent("""\
        from streams import Topology
        topology = Topology("broken")

        topology.stream("x").mapp(lambda v: v)
        """))
    reference = {k: sys.modules.pop(k) for k in list(sys.modules)
                 if k == "topologies" or k.startswith("topologies.")}
    before = set(sys.modules)
    path = list(sys.path)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.path[:] = path
    for name in set(sys.modules) - before:
        del sys.modules[name]
    sys.modules.update(reference)


# -- closed pipes ----------------------------------------------------------------------------------
def _closed_pipe(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI with its stdout a pipe whose reader is gone before anything is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "streams.cli", *args], stdout=write_end,
                              stderr=subprocess.PIPE, cwd=ROOT, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [["topologies"], ["describe", "trip_stats"], ["--help"]])
def test_a_closed_pipe_ends_quietly_like_a_unix_tool(args: list[str]) -> None:
    done = _closed_pipe(*args)
    assert done.stderr == b""
    assert done.returncode == 141  # 128 + SIGPIPE, as the shell reports `yes | head -1`


def test_a_pipe_closed_while_writing_ends_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    def closed(*_args: Any, **_kwargs: Any) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(click, "echo", closed)
    monkeypatch.setattr("streams.commands.topologies.click.echo", closed)
    result = _run(["topologies"])
    assert result.exit_code == 141
    assert "BrokenPipeError" not in result.output


# -- version and help ------------------------------------------------------------------------------
def test_version() -> None:
    from importlib.metadata import version

    result = _run(["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"streams {version('streams')}"


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[Any]:
    out = []
    for name, cmd in group.commands.items():
        out.append((prefix + (name,), cmd))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, prefix + (name,))
    return out


@pytest.mark.parametrize("path,cmd", _commands(main), ids=lambda x: " ".join(x)
                         if isinstance(x, tuple) else "")
def test_every_command_and_option_has_help(path: tuple[str, ...], cmd: click.Command) -> None:
    assert cmd.help, f"`streams {' '.join(path)}` has no help text"
    for param in cmd.params:
        if isinstance(param, click.Option) and param.name != "help":
            assert param.help, f"`streams {' '.join(path)}` option {param.opts} has no help"
    result = _run([*path, "--help"])
    assert result.exit_code == 0, result.output


def test_worker_flags_explain_themselves() -> None:
    text = _run(["worker", "--help"]).output
    for flag, words in (("--config", "TOML"), ("--state-dir", "RocksDB"),
                        ("--metrics-port", "Prometheus")):
        line = text[text.index(flag):]
        assert words in line[:300], line[:300]


# -- topologies that fail to load, and the user's own ----------------------------------------------
def test_a_broken_topology_file_is_named_and_the_others_listed(project: Path) -> None:
    result = _run(["topologies"])
    assert result.exit_code == 1
    assert "good\n  reads:  x\n  writes: y" in result.stdout
    assert result.stderr.strip() == ("error: topologies/broken.py:4: AttributeError: 'Stream' "
                                     "object has no attribute 'mapp'")


def test_describe_of_a_broken_topology_names_file_and_line(project: Path) -> None:
    _one_line_error(_run(["describe", "broken"]), "topologies/broken.py:4", "mapp")


def test_a_users_own_topology_by_reference(project: Path) -> None:
    result = _run(["describe", "shop.flows:orders"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Topology shop_orders")
    assert registry.load("shop.flows:orders").name == "shop_orders"


@pytest.mark.parametrize("ref,fragment", [
    ("nosuch.module:topology", "no module named 'nosuch'"),
    ("shop.nosuch:topology", "no module named 'shop.nosuch'"),
    ("shop.flows:missing", "module 'shop.flows' has no attribute 'missing'"),
    ("shop.flows:not_a_topology", "shop.flows:not_a_topology is a int, not a streams Topology"),
    ("shop.flows", "module 'shop.flows' has no attribute 'topology'"),
    ("shop.flows:", "module 'shop.flows' has no attribute 'topology'"),
    ("shop..flows:x", "is not a topology reference"),
])
def test_a_bad_reference_is_one_line(project: Path, ref: str, fragment: str) -> None:
    _one_line_error(_run(["describe", ref]), fragment)
    _one_line_error(_run(["worker", ref]), fragment)


# -- describe --------------------------------------------------------------------------------------
def test_describe_refuses_what_a_worker_refuses(project: Path) -> None:
    _one_line_error(_run(["describe", "shop.flows:loop"]), "cannot run",
                    "writes to a topic its own pipeline reads")


def test_payments_agents_show_the_topics_they_write() -> None:
    writes = {a.name: agent_writes(payments, a) for a in payments.agents.values()}
    assert writes == {"deposit": ["account-balances"],
                      "settle": ["payment-results", "account-balances",
                                 "payments-credits-repartition"],
                      "credit": ["account-balances"]}
    text = _run(["describe", "payments"]).output
    assert ("agent settle: tables processed, balances; sinks payment-results, "
            "account-balances, payments-credits-repartition") in text


@pytest.mark.parametrize("name", ["payments", "trip_stats"])
def test_dot_draws_the_edges_mermaid_draws(name: str) -> None:
    mermaid = _run(["describe", name, "--format", "mermaid"]).output.splitlines()
    dot = _run(["describe", name, "--format", "dot"]).output.splitlines()

    def edges(lines: list[str], pattern: str) -> set[tuple[str, ...]]:
        return {m.groups() for m in map(re.compile(pattern).fullmatch, lines) if m}

    m_solid, m_dashed = edges(mermaid, r"  (\w+) --> (\w+)"), edges(mermaid, r"  (\w+) -\.-> (\w+)")
    d_solid = edges(dot, r"  (\w+) -> (\w+);")
    d_dashed = edges(dot, r"  (\w+) -> (\w+) \[style=dashed\];")
    assert m_dashed, "a repartition (internal topic) edge is drawn"
    assert m_solid == d_solid
    assert m_dashed == d_dashed


def test_a_users_topology_reads_its_settings_from_streams_config_dir(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = project / "conf"
    config.mkdir()
    (config / "defaults.toml").write_text("")
    # the file is named after the Topology (its consumer group), not after the reference
    (config / "shop_orders.toml").write_text("commit_interval_ms = -1\n")
    monkeypatch.setenv("STREAMS_CONFIG_DIR", str(config))
    _one_line_error(_run(["worker", "shop.flows:orders", "--broker", "127.0.0.1:1"]),
                    "shop_orders.toml", "commit_interval_ms")
