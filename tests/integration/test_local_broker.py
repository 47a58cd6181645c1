"""``streams kafka start|status|stop``: the local development broker, driven through the CLI.

Each test uses its own port and its own ``STREAMS_HOME`` (the broker's data, log and pid file go
to a temporary directory), and stops whatever broker it started.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.devtools import broker
from streams.kafka import admin

from tests.conftest import produce, read_topic

AVOID = {9092, 19092, 29092}


def _free(port: int) -> bool:
    return broker.port_free(port) and broker.port_free(port + 1)


def pick_port() -> int:
    """A port whose neighbour (the KRaft controller port) is free too; random, so that
    concurrent runs rarely collide. Below the ephemeral range (32768+), where an outgoing
    connection's local port could take it between the check and the broker's bind."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(21000, 21900, 2)
        if port not in AVOID and _free(port):
            return port
    raise AssertionError("no free port pair in 21000-21900")


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "streams"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "streams.cli"]
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _alive(pid: int) -> bool:
    return broker._pid_alive(pid)


@pytest.fixture
def home_env(tmp_path: Path) -> dict[str, str]:
    """Environment for the CLI: a private STREAMS_HOME, with the broker jars of the usual one."""
    env = {**os.environ, "STREAMS_HOME": str(tmp_path / "home")}
    env.pop("STREAMS_BROKER", None)
    if not env.get("KAFKA_HOME"):
        cache = broker.streams_home() / f"kafka-{broker.KAFKA_VERSION}"
        if (cache / "complete").exists():
            env["KAFKA_HOME"] = str(cache)
        elif shutil.which("mvn") is None:
            pytest.skip("no cached Kafka jars, no KAFKA_HOME and no mvn to fetch them")
        else:
            env["STREAMS_HOME"] = str(broker.streams_home())  # fetch into the shared cache
    return env


@pytest.fixture
def cli_broker(home_env: dict[str, str]) -> Iterator[tuple[int, dict[str, str]]]:
    """A port for a broker the test starts through the CLI; stopped afterwards whatever happens."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("java is not installed")
    port = pick_port()
    yield port, home_env
    cli("kafka", "stop", "--port", str(port), env=home_env, timeout=60)
    pid_file = Path(home_env["STREAMS_HOME"]) / f"broker-{port}" / "broker.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    if _alive(pid):  # the CLI could not stop it: end the process this test started
        os.kill(pid, signal.SIGKILL)


@pytest.mark.broker
def test_start_twice_status_produce_consume_stop(cli_broker: tuple[int, dict[str, str]]) -> None:
    port, env = cli_broker
    bootstrap = f"127.0.0.1:{port}"

    before = cli("kafka", "status", "--port", str(port), env=env)
    assert before.returncode != 0 and "stopped" in before.stdout, before

    t0 = time.monotonic()
    first = cli("kafka", "start", "--port", str(port), env=env)
    print(f"start: {time.monotonic() - t0:.1f}s: {first.stdout.strip()}")
    assert first.returncode == 0, first.stdout + first.stderr
    m = re.search(rf"kafka running at 127\.0\.0\.1:{port} \(pid (\d+)", first.stdout)
    assert m, first.stdout
    pid = int(m.group(1))
    assert _alive(pid)

    second = cli("kafka", "start", "--port", str(port), env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already running" in second.stdout, second.stdout
    assert f"pid {pid}" in second.stdout, second.stdout
    assert second.stderr.strip() == "", second.stderr

    status = cli("kafka", "status", "--port", str(port), env=env)
    assert status.returncode == 0, status
    assert "running" in status.stdout and f"pid {pid}" in status.stdout, status.stdout

    # The broker works: a record goes in and comes back out.
    topic = f"local-broker-test-{os.getpid()}"
    admin.run(admin.ensure_topics(bootstrap, [admin.TopicSpec(topic, 1)]))
    produce(bootstrap, [(topic, "k1", {"hello": "world"}), (topic, "k2", b"raw bytes")])
    records = read_topic(bootstrap, topic, expect=2, timeout=60)
    assert [(r.key, r.value) for r in records] == [(b"k1", b'{"hello":"world"}'),
                                                  (b"k2", b"raw bytes")]
    consumed = cli("consume", topic, "--broker", bootstrap, "--limit", "2", env=env)
    assert consumed.returncode == 0, consumed.stderr
    assert '"key": "k1"' in consumed.stdout and "raw bytes" in consumed.stdout, consumed.stdout

    stop = cli("kafka", "stop", "--port", str(port), env=env, timeout=60)
    assert stop.returncode == 0 and "kafka stopped" in stop.stdout, stop
    assert not _alive(pid)
    assert not broker.port_open(port)

    after = cli("kafka", "status", "--port", str(port), env=env)
    assert after.returncode != 0 and "stopped" in after.stdout, after

    again = cli("kafka", "stop", "--port", str(port), env=env)
    assert again.returncode == 0 and "not running" in again.stdout, again


def test_start_without_java_is_one_clear_line(tmp_path: Path) -> None:
    """No java on PATH and no KAFKA_HOME: one error line naming java and STREAMS_BROKER."""
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not (Path(d) / "java").exists()]
    env = {**os.environ, "PATH": os.pathsep.join(path), "STREAMS_HOME": str(tmp_path / "home")}
    for var in ("KAFKA_HOME", "JAVA_HOME", "STREAMS_BROKER", "STREAMS_DEBUG"):
        env.pop(var, None)
    assert shutil.which("java", path=env["PATH"]) is None
    port = pick_port()
    result = subprocess.run([sys.executable, "-m", "streams.cli", "kafka", "start", "--port",
                             str(port)], env=env, capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result
    assert len(lines) == 1, result.stderr
    assert "java" in lines[0] and "STREAMS_BROKER" in lines[0], lines[0]
    assert lines[0].startswith("error:"), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not broker.port_open(port)
    assert not (tmp_path / "home" / f"broker-{port}" / "broker.pid").exists()


def test_start_on_a_taken_port_is_one_clear_line(tmp_path: Path) -> None:
    """A port someone else listens on: refused in one line, nothing started."""
    env = {**os.environ, "STREAMS_HOME": str(tmp_path / "home")}
    env.pop("STREAMS_DEBUG", None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "streams.cli", "kafka", "start",
                                 "--port", str(port)], env=env, capture_output=True, text=True,
                                timeout=60, stdin=subprocess.DEVNULL)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result
    assert len(lines) == 1 and "taken" in lines[0] and str(port) in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "home" / f"broker-{port}" / "broker.pid").exists()
