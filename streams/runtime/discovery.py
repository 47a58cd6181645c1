"""Prometheus file-based service discovery: each running worker announces its metrics endpoint.

A worker writes one JSON file into the discovery directory (setting ``discovery_dir``) once its
metrics server has bound its port — the real port, also when the configured one was taken and a
free one was used — in Prometheus' ``file_sd`` format::

    [{"targets": ["127.0.0.1:9400"],
      "labels": {"topology": "trip_stats", "worker_id": "host-1234", "guarantee": "at_least_once"}}]

``config/prometheus.yml`` reads ``<discovery_dir>/*.json``, so Prometheus scrapes exactly the
workers that run, whatever their ports. The file is written atomically (a temporary file renamed
over it: Prometheus never reads half a file) and removed when the worker stops cleanly, so its
target disappears. A worker killed with SIGKILL (or a host that lost power) cannot remove it:
the target stays, its scrapes fail, ``up == 0`` and ``StreamsWorkerDown`` fires — the crash is
noticed rather than silently forgotten. Deleting the file acknowledges it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings

log = logging.getLogger(__name__)


def worker_id() -> str:
    """This process among all workers: ``<hostname>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def target_address(host: str, port: int) -> str:
    """What Prometheus connects to: a wildcard bind address means "this host", reachable on
    loopback here and by name from elsewhere; IPv6 literals go in brackets."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"


@dataclass
class Registration:
    """One worker's discovery file; :meth:`remove` on clean shutdown."""

    path: Path

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # a stale file only makes Prometheus report the worker down
            log.warning("could not remove discovery file %s: %s", self.path, exc)


def register(directory: str | Path, topology: str, host: str, port: int,
             guarantee: str) -> Registration:
    """Write the ``file_sd`` file of this worker (topology, metrics endpoint) into ``directory``
    (created if missing) and return its registration.

    >>> import tempfile, json
    >>> d = tempfile.mkdtemp()
    >>> reg = register(d, "trip_stats", "127.0.0.1", 9420, "at_least_once")
    >>> json.loads(reg.path.read_text())[0]["targets"]
    ['127.0.0.1:9420']
    >>> reg.remove(); reg.path.exists()
    False
    """
    wid = worker_id()
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{topology}-{wid}.json"
    doc = [{"targets": [target_address(host, port)],
            "labels": {"topology": topology, "worker_id": wid, "guarantee": guarantee}}]
    # Not *.json: Prometheus' glob never picks up the half-written temporary.
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
            fh.flush()
            os.fsync(fh.fileno())
        # (mkstemp's 0600 would hide it from a Prometheus running as another user)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Registration(path)


def announce(settings: Settings, topology: str, host: str, port: int) -> Registration | None:
    """:func:`register` with the worker's settings; None when ``discovery_dir`` is empty
    (discovery off) or cannot be written: then one warning, and the worker runs on (its
    metrics are served, only Prometheus does not find them)."""
    if not settings.discovery_dir:
        return None
    try:
        return register(settings.discovery_dir, topology, host, port,
                        settings.processing_guarantee)
    except OSError as exc:
        log.warning("not announced to Prometheus: cannot write to discovery_dir %s: %s",
                    settings.discovery_dir, exc.strerror or exc)
        return None


__all__ = ["Registration", "announce", "register", "target_address", "worker_id"]
