"""A local single-node Apache Kafka broker (KRaft) for development, the demo and the tests.

The broker jars come from Maven Central (``org.apache.kafka:kafka_2.13`` and its runtime
dependencies) and are cached once under ``$STREAMS_HOME/kafka-<version>/libs``; later starts need
no network. ``KAFKA_HOME`` may point at an unpacked Kafka distribution instead (its ``libs/``).

Everything the broker writes (data, log, pid) lives in ``$STREAMS_HOME/broker-<port>/``, so
``stop`` only ever stops the process this module started.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "3.9.1"
DEFAULT_PORT = 9092


class BrokerError(RuntimeError):
    """A broker problem with a one-line explanation for the user."""


def streams_home() -> Path:
    return Path(os.environ.get("STREAMS_HOME", Path.home() / ".cache" / "streams"))


@dataclass(frozen=True)
class BrokerPaths:
    port: int

    @property
    def root(self) -> Path:
        return streams_home() / f"broker-{self.port}"

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
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=true
# One broker: internal topics must not ask for more replicas than exist, or transactions and
# group offsets never become available.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
group.initial.rebalance.delay.ms=0
log.cleaner.backoff.ms=5000
"""

LOG4J = """log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""


def _require(tool: str, purpose: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise BrokerError(
            f"{tool} not found: it is needed to {purpose}; install it, or set STREAMS_BROKER "
            "to an existing Kafka cluster"
        )
    return path


def broker_classpath(verbose: bool = True) -> str:
    """Return the broker's Java classpath, fetching the jars with Maven on first use."""
    kafka_home = os.environ.get("KAFKA_HOME")
    if kafka_home:
        libs = Path(kafka_home) / "libs"
        if not libs.is_dir():
            raise BrokerError(f"KAFKA_HOME={kafka_home} has no libs/ directory")
        return str(libs / "*")
    cache = streams_home() / f"kafka-{KAFKA_VERSION}"
    libs = cache / "libs"
    marker = cache / "complete"
    if not marker.exists():
        mvn = _require("mvn", "fetch the Kafka broker from Maven Central")
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "pom.xml").write_text(POM.format(version=KAFKA_VERSION))
        if verbose:
            print(f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central into {libs} ...",
                  flush=True)
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(cache / "pom.xml"), "dependency:copy-dependencies",
             f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
            capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["(no output)"]
            raise BrokerError(f"maven could not fetch the Kafka broker: {tail[0]}")
        marker.write_text(KAFKA_VERSION)
    return str(libs / "*")


def _cluster_id() -> str:
    # Kafka cluster ids are 16 random bytes in URL-safe base64 without padding.
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True


def _read_pid(paths: BrokerPaths) -> int | None:
    try:
        pid = int(paths.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _answers(port: int) -> bool:
    """True once the broker serves metadata (a TCP accept alone comes too early)."""
    from .admin import broker_answers

    return broker_answers(f"127.0.0.1:{port}")


def status(port: int = DEFAULT_PORT) -> tuple[bool, int | None]:
    pid = _read_pid(BrokerPaths(port))
    return (pid is not None and port_open(port)), pid


def start(port: int = DEFAULT_PORT, timeout: float = 90.0, verbose: bool = True) -> str:
    """Start the broker in the background (no-op if ours already runs); return its address."""
    paths = BrokerPaths(port)
    bootstrap = f"127.0.0.1:{port}"
    pid = _read_pid(paths)
    if pid is not None:
        if verbose:
            print(f"kafka already running at {bootstrap} (pid {pid})")
        return bootstrap
    if port_open(port):
        raise BrokerError(f"port {port} is taken by another process; stop it or use --port")
    java = _require("java", "run the Kafka broker")
    classpath = broker_classpath(verbose)
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.properties.write_text(SERVER_PROPERTIES.format(
        port=port, controller_port=port + 1, data=paths.data))
    log4j = paths.root / "log4j.properties"
    log4j.write_text(LOG4J.format(log=paths.log_file))
    log_opt = f"-Dlog4j.configuration=file:{log4j}"
    if not (paths.data / "meta.properties").exists():
        fmt = subprocess.run(
            [java, log_opt, "-cp", classpath, "kafka.tools.StorageTool", "format",
             "-t", _cluster_id(), "-c", str(paths.properties)],
            capture_output=True, text=True)
        if fmt.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed: {fmt.stderr.strip()[-300:]}")
    with open(paths.root / "stdout.log", "ab") as out:
        proc = subprocess.Popen(
            [java, "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", log_opt, "-cp", classpath,
             "kafka.Kafka", str(paths.properties)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    paths.pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(f"kafka exited with code {proc.returncode}; see {paths.log_file}")
        if port_open(port) and _answers(port):
            if verbose:
                print(f"kafka running at {bootstrap} (pid {proc.pid}, log {paths.log_file})")
            return bootstrap
        time.sleep(0.5)
    raise BrokerError(f"kafka did not answer on {bootstrap} within {timeout:.0f}s; "
                      f"see {paths.log_file}")


def stop(port: int = DEFAULT_PORT, timeout: float = 30.0) -> bool:
    """Stop the broker this module started on ``port``; False if none was running."""
    paths = BrokerPaths(port)
    pid = _read_pid(paths)
    if pid is None:
        paths.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.2)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    paths.pid_file.unlink(missing_ok=True)
    return True


def wipe(port: int = DEFAULT_PORT) -> None:
    """Delete the broker's data (it must be stopped)."""
    shutil.rmtree(BrokerPaths(port).data, ignore_errors=True)
