"""A local single-node Apache Kafka broker (KRaft) for development, the demo and the tests.

The broker jars come from Maven Central (``org.apache.kafka:kafka_2.13`` and its runtime
dependencies) and are cached once under ``$STREAMS_HOME/kafka-<version>/libs``; later starts need
no network. ``KAFKA_HOME`` may point at an unpacked Kafka distribution instead (its ``libs/``).

Everything the broker writes (data, log, pid) lives in ``$STREAMS_HOME/broker-<port>/``, so
``stop`` only ever stops the process this module started.

``start_cluster`` runs several KRaft nodes (each broker + controller, all voters of one quorum)
on consecutive ports, one directory each under ``$STREAMS_HOME/cluster-<first port>/``, for
testing replication and broker failures on one machine.
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
from pathlib import Path

from .broker_config import LOG4J, POM, SECURED_PROTOCOLS, BrokerPaths, Node, Tls, streams_home

KAFKA_VERSION = "3.9.1"
DEFAULT_PORT = 9092


class BrokerError(RuntimeError):
    """A broker problem with a one-line explanation for the user."""


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
    # Kafka cluster ids are 16 random bytes in URL-safe base64 without padding. Like Kafka's
    # Uuid.randomUuid, never one starting with "-": the storage tool would read it as an option.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


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


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing is bound to the port (stricter than :func:`port_open`, which misses
    ports held by outgoing connections or sockets that do not listen)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _answers(port: int) -> bool:
    """True once the broker serves metadata (a TCP accept alone comes too early)."""
    from ..kafka.admin import broker_answers

    return broker_answers(f"127.0.0.1:{port}")


def _known_brokers(port: int) -> int:
    from ..kafka.admin import BrokerUnavailable, broker_count, run

    try:
        return run(broker_count(f"127.0.0.1:{port}"))
    except (BrokerUnavailable, OSError):
        return 0


def status(port: int = DEFAULT_PORT) -> tuple[bool, int | None]:
    pid = _read_pid(BrokerPaths(port))
    return (pid is not None and port_open(port)), pid


def _java_options(heap: str, log4j: Path) -> list[str]:
    return ["-Xms128m", f"-Xmx{heap}", "-XX:+UseG1GC", f"-Dlog4j.configuration=file:{log4j}"]


def _format(node: Node, voters: str, nodes: int, cluster_id: str,
            scram_users: dict[str, str] | None) -> None:
    """Write the node's properties; format its storage once (with SCRAM users, if any)."""
    java = _require("java", "run the Kafka broker")
    classpath = broker_classpath(verbose=False)
    paths = node.paths
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.properties.write_text(node.properties(voters, nodes))
    log4j = paths.root / "log4j.properties"
    log4j.write_text(LOG4J.format(log=paths.log_file))
    if (paths.data / "meta.properties").exists():
        return
    scram: list[str] = []
    for user, password in (scram_users or {}).items():
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            scram += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
    fmt = subprocess.run(
        [java, f"-Dlog4j.configuration=file:{log4j}", "-cp", classpath,
         "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(paths.properties),
         *scram], capture_output=True, text=True)
    if fmt.returncode != 0:
        raise BrokerError(f"formatting KRaft storage failed: {_java_error(fmt)}")


def _java_error(result: subprocess.CompletedProcess[str]) -> str:
    """The line of a Java tool's output that says what went wrong (a stack trace's first)."""
    lines = [ln.strip() for ln in (result.stderr + result.stdout).splitlines() if ln.strip()]
    named = [ln for ln in lines if ("Exception" in ln or "Error" in ln) and
             not ln.startswith("at ")]
    return (named or lines or [f"exit code {result.returncode}"])[0][:300]


def _launch(node: Node, heap: str) -> subprocess.Popen[bytes]:
    """Start the node's JVM in the background (its properties and storage must exist)."""
    java = _require("java", "run the Kafka broker")
    classpath = broker_classpath(verbose=False)
    paths = node.paths
    with open(paths.root / "stdout.log", "ab") as out:
        proc = subprocess.Popen(
            [java, *_java_options(heap, paths.root / "log4j.properties"), "-cp", classpath,
             "kafka.Kafka", str(paths.properties)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    paths.pid_file.write_text(str(proc.pid))
    return proc


def _wait_ready(procs: dict[Node, subprocess.Popen[bytes]], timeout: float,
                cluster_size: int = 1) -> None:
    """Wait until every node answers and knows all ``cluster_size`` brokers (a node that has
    just started may not have seen the others register yet; topics created then would get
    fewer replicas)."""
    deadline = time.monotonic() + timeout
    waiting = dict(procs)
    while waiting and time.monotonic() < deadline:
        for node, proc in list(waiting.items()):
            if proc.poll() is not None:
                raise BrokerError(f"kafka node {node.node_id} exited with code "
                                  f"{proc.returncode}; see {node.paths.log_file}")
            if port_open(node.port) and _answers(node.port) and \
                    _known_brokers(node.port) >= cluster_size:
                del waiting[node]
        if waiting:
            time.sleep(0.5)
    if waiting:
        node = next(iter(waiting))
        raise BrokerError(f"kafka did not answer on 127.0.0.1:{node.port} within "
                          f"{timeout:.0f}s; see {node.paths.log_file}")


def start(port: int = DEFAULT_PORT, timeout: float = 90.0, verbose: bool = True,
          secured: dict[str, int] | None = None, scram_users: dict[str, str] | None = None,
          tls: Tls | None = None, heap: str = "1g") -> str:
    """Start the broker in the background (no-op if ours already runs); return its address.

    ``secured`` adds listeners, protocol (SASL_PLAINTEXT, SSL, SASL_SSL) -> port; SASL ones
    authenticate the SCRAM-SHA-256/512 ``scram_users`` (name -> password, stored when the
    storage is formatted), TLS ones present the ``tls`` key and certificate.
    """
    secured = secured or {}
    unknown = set(secured) - set(SECURED_PROTOCOLS)
    if unknown:
        raise BrokerError(f"unknown listener protocol(s) {sorted(unknown)}")
    if any("SSL" in p for p in secured) and tls is None:
        raise BrokerError("a TLS listener needs the broker's key and certificate (tls=)")
    paths = BrokerPaths(port)
    bootstrap = f"127.0.0.1:{port}"
    pid = _read_pid(paths)
    if pid is not None:
        if verbose:
            print(f"kafka already running at {bootstrap} (pid {pid})")
        return bootstrap
    for p in [port, port + 1, *secured.values()]:
        if port_open(p):
            raise BrokerError(f"port {p} is taken by another process; stop it or use --port")
    _require("java", "run the Kafka broker")
    broker_classpath(verbose)  # fetch with a message before anything else
    node = Node(1, port, port + 1, paths, tuple(sorted(secured.items())), tls)
    _format(node, f"1@127.0.0.1:{port + 1}", 1, _cluster_id(), scram_users)
    proc = _launch(node, heap)
    _wait_ready({node: proc}, timeout)
    if verbose:
        print(f"kafka running at {bootstrap} (pid {proc.pid}, log {paths.log_file})")
    return bootstrap


def stop(port: int = DEFAULT_PORT, timeout: float = 30.0) -> bool:
    """Stop the broker this module started on ``port``; False if none was running."""
    return _stop(BrokerPaths(port), timeout)


def _stop(paths: BrokerPaths, timeout: float = 30.0, sig: int = signal.SIGTERM) -> bool:
    pid = _read_pid(paths)
    if pid is None:
        paths.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.2)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    paths.pid_file.unlink(missing_ok=True)
    return True


def kill(port: int = DEFAULT_PORT) -> bool:
    """Kill the broker on ``port`` abruptly (SIGKILL: a crash, for outage tests); False if none
    was running."""
    return _stop(BrokerPaths(port), timeout=30.0, sig=signal.SIGKILL)


def wipe(port: int = DEFAULT_PORT) -> None:
    """Delete the broker's data (it must be stopped)."""
    shutil.rmtree(BrokerPaths(port).data, ignore_errors=True)


# -- a local multi-node cluster ------------------------------------------------------------------
CONTROLLER_OFFSET = 100  # node i's controller listens on port + CONTROLLER_OFFSET + i


def cluster_root(port: int) -> Path:
    return streams_home() / f"cluster-{port}"


def cluster_nodes(port: int, nodes: int | None = None) -> list[Node]:
    """The nodes of the cluster whose first broker port is ``port``: node i (0-based) serves
    clients on ``port + i``; without ``nodes``, the size recorded when it was started."""
    if nodes is None:
        try:
            nodes = int((cluster_root(port) / "nodes").read_text())
        except (OSError, ValueError):
            return []
    return [Node(i + 1, port + i, port + CONTROLLER_OFFSET + i,
                 BrokerPaths(port + i, f"cluster-{port}/node-{i + 1}")) for i in range(nodes)]


def cluster_bootstrap(port: int, nodes: int) -> str:
    return ",".join(f"127.0.0.1:{port + i}" for i in range(nodes))


def _voters(nodes: list[Node]) -> str:
    return ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)


def start_cluster(port: int, nodes: int = 3, timeout: float = 180.0, verbose: bool = True,
                  heap: str = "512m") -> str:
    """Start a local KRaft cluster of ``nodes`` combined broker+controller processes (all
    quorum voters) on ports ``port .. port+nodes-1``; return its bootstrap list. Nodes of it
    that already run are kept."""
    if nodes < 1:
        raise BrokerError("a cluster needs at least one node")
    recorded = cluster_nodes(port)
    if recorded and len(recorded) != nodes:
        raise BrokerError(f"the cluster at port {port} was created with {len(recorded)} nodes; "
                          f"stop it and delete {cluster_root(port)} to change its size")
    members = cluster_nodes(port, nodes)
    down = [n for n in members if _read_pid(n.paths) is None]
    for node in down:
        for p in (node.port, node.controller_port):
            if port_open(p):
                raise BrokerError(f"port {p} is taken by another process; stop it or use --port")
    _require("java", "run the Kafka broker")
    broker_classpath(verbose)
    root = cluster_root(port)
    root.mkdir(parents=True, exist_ok=True)
    (root / "nodes").write_text(str(nodes))
    id_file = root / "cluster.id"
    if not id_file.exists():
        id_file.write_text(_cluster_id())
    cluster_id = id_file.read_text().strip()
    voters = _voters(members)
    for node in down:
        _format(node, voters, nodes, cluster_id, None)
    # All at once: a KRaft quorum elects a leader only when a majority of voters runs.
    _wait_ready({node: _launch(node, heap) for node in down}, timeout, cluster_size=nodes)
    bootstrap = cluster_bootstrap(port, nodes)
    if verbose:
        print(f"kafka cluster of {nodes} running at {bootstrap} (data under {root})")
    return bootstrap


def start_node(port: int, node_id: int, timeout: float = 120.0, heap: str = "512m") -> int:
    """(Re)start one stopped node of the cluster at ``port``; return its pid."""
    members = cluster_nodes(port)
    node = next((n for n in members if n.node_id == node_id), None)
    if node is None:
        raise BrokerError(f"no node {node_id} in the cluster at port {port}")
    pid = _read_pid(node.paths)
    if pid is not None:
        return pid
    proc = _launch(node, heap)
    # It is back once it sees every node that runs (itself included).
    running = sum(1 for n in members if _read_pid(n.paths) is not None)
    _wait_ready({node: proc}, timeout, cluster_size=running)
    return proc.pid


def kill_node(port: int, node_id: int) -> bool:
    """SIGKILL one node of the cluster (a crash: no controlled shutdown); False if it was
    not running."""
    node = next((n for n in cluster_nodes(port) if n.node_id == node_id), None)
    if node is None:
        raise BrokerError(f"no node {node_id} in the cluster at port {port}")
    return _stop(node.paths, timeout=10.0, sig=signal.SIGKILL)


def cluster_status(port: int) -> list[tuple[Node, int | None]]:
    """Each node of the cluster at ``port`` with its pid (None: not running)."""
    return [(n, _read_pid(n.paths) if port_open(n.port) else None)
            for n in cluster_nodes(port)]


def stop_cluster(port: int, timeout: float = 60.0) -> int:
    """Stop every running node of the cluster at ``port``; return how many were running."""
    members = cluster_nodes(port)
    running = [n for n in members if _read_pid(n.paths) is not None]
    # SIGTERM to all first: a node's controlled shutdown waits for the others' quorum, so
    # stopping them one after the other would make the last ones wait for nothing.
    for node in running:
        pid = _read_pid(node.paths)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
    for node in running:
        _stop(node.paths, timeout)
    return len(running)
