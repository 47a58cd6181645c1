"""SASL/SCRAM end to end: a private broker with a SASL_PLAINTEXT listener whose only user is
stored as SCRAM-SHA-256/512 credentials; `streams generate` and a `streams worker` connect
through it with the right password and process records, and with a wrong (or missing) password
fail with one line that does not contain the password.

The broker runs on its own ports and under its own STREAMS_HOME (the shared development broker
is not touched). The test reads the results through the broker's PLAINTEXT listener, which the
framework's clients never see: they are given only the SASL listener's address.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.devtools import generate
from streams.devtools import broker

from tests.conftest import ROOT, WorkerProcess, read_topic

pytestmark = pytest.mark.broker

USER = "alice"
PASSWORD = "Scram-Pa55-" + "x" * 8
NAME = "profile_notifications"
NOTABLE = ("Recruiter", "Hiring Manager", "CEO", "CTO")
COUNT = 2000


def _free_ports(n: int) -> list[int]:
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(23000, 23900, 4)  # below the ephemeral port range
        ports = list(range(base, base + n))
        if all(broker.port_free(p) for p in ports):
            return ports
    raise AssertionError("no free ports")


@pytest.fixture(scope="module")
def scram_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, dict]]:
    """(plaintext address, SASL address, env for the CLI) of a private SCRAM-enabled broker."""
    if shutil.which("java") is None:
        pytest.skip("java is not installed")
    home = tmp_path_factory.mktemp("scram-home")
    saved = {k: os.environ.get(k) for k in ("STREAMS_HOME", "KAFKA_HOME")}
    cache = broker.streams_home() / f"kafka-{broker.KAFKA_VERSION}"
    if not os.environ.get("KAFKA_HOME") and (cache / "complete").exists():
        os.environ["KAFKA_HOME"] = str(cache)  # reuse the fetched jars
    os.environ["STREAMS_HOME"] = str(home)
    port, _controller, sasl_port, _ = _free_ports(4)
    try:
        broker.start(port, verbose=False, secured={"SASL_PLAINTEXT": sasl_port},
                     scram_users={USER: PASSWORD},
                     heap="512m")
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "STREAMS_BROKER": f"127.0.0.1:{sasl_port}",
               "STREAMS_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
               "STREAMS_SASL_MECHANISM": "SCRAM-SHA-256", "STREAMS_SASL_USERNAME": USER}
        yield f"127.0.0.1:{port}", f"127.0.0.1:{sasl_port}", env
    finally:
        broker.stop(port)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def notable(events: list[tuple[str, Any, Any]]) -> Counter:
    """Oracle: (profile_id, viewer_id, viewer_title) of the views by notable viewers."""
    return Counter((v["profile_id"], v["viewer_id"], v["viewer_title"]) for _, _, v in events
                   if any(t in (v.get("viewer_title") or "") for t in NOTABLE))


def test_worker_processes_through_scram_with_the_right_password(
        scram_broker: tuple[str, str, dict], tmp_path: Path) -> None:
    plain, sasl, env = scram_broker
    env = {**env, "STREAMS_SASL_PASSWORD": PASSWORD}
    # The producer and admin client of `streams generate` (topics created here) go through SCRAM.
    gen = cli("generate", NAME, "--count", str(COUNT), "--seed", "7", env=env)
    assert gen.returncode == 0, gen.stderr
    assert PASSWORD not in gen.stdout + gen.stderr
    want = notable(generate.events(NAME, COUNT, 7))
    worker = WorkerProcess(NAME, sasl, tmp_path / "state", tmp_path / "worker.log",
                           extra_env={k: env[k] for k in env if k.startswith("STREAMS_")})
    try:
        out = read_topic(plain, "profile-view-notifications", expect=sum(want.values()),
                         timeout=120)
        assert worker.running, worker.log()[-2000:]
    finally:
        code = worker.terminate()
    got = Counter((r.key.decode(), json.loads(r.value)["viewer_id"],
                   json.loads(r.value)["viewer_title"]) for r in out)
    assert got == want
    assert code == 0
    assert PASSWORD not in worker.log()
    # `consume --count` uses an admin client and a consumer: it works and prints no secret.
    counted = cli("consume", "profile-view-notifications", "--count", env=env)
    assert counted.returncode == 0, counted.stderr
    assert f": {sum(want.values())} records" in counted.stdout
    assert PASSWORD not in counted.stdout + counted.stderr


@pytest.mark.parametrize("password", ["wrong-" + PASSWORD, None])
def test_wrong_or_missing_password_fails_with_one_line(
        scram_broker: tuple[str, str, dict], tmp_path: Path, password: str | None) -> None:
    _plain, _sasl, env = scram_broker
    env = dict(env)
    if password is None:
        env.pop("STREAMS_SASL_PASSWORD", None)
    else:
        env["STREAMS_SASL_PASSWORD"] = password
    result = cli("worker", NAME, "--state-dir", str(tmp_path), "--metrics-port", "-1", env=env)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0
    assert len(output.splitlines()) == 1, output
    assert "Traceback" not in output
    assert PASSWORD not in output
    if password is None:
        assert "STREAMS_SASL_PASSWORD is not set" in output
    else:
        assert "refused the credentials" in output and USER in output
