"""Find reference and user topologies: modules under the ``topologies`` package, each exposing
a ``Topology`` object named ``topology``."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from .dsl.topology import Topology


class UnknownTopology(LookupError):
    pass


def _package():
    # Prefer ./topologies (a user's project) over the installed reference package.
    cwd = str(Path.cwd())
    if (Path.cwd() / "topologies" / "__init__.py").exists() and cwd not in sys.path:
        sys.path.insert(0, cwd)
    return importlib.import_module("topologies")


def names() -> list[str]:
    pkg = _package()
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def load(name: str) -> Topology:
    if name not in names():
        raise UnknownTopology(f"unknown topology {name!r} (known: {', '.join(names())})")
    module = importlib.import_module(f"topologies.{name}")
    topology = getattr(module, "topology", None)
    if not isinstance(topology, Topology):
        raise UnknownTopology(f"topologies/{name}.py does not define `topology = Topology(...)`")
    return topology
