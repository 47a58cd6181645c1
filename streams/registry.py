"""Find topologies: the reference/user modules under the ``topologies`` package by name
(``trip_stats``), or any importable module by reference (``pkg.module:attr``, as ``faust -A``).

Each module exposes a :class:`~streams.dsl.topology.Topology`: the attribute named after the
colon, else ``topology``. A module that fails to import is reported as one line naming its
file and line (:class:`TopologyLoadError`).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
import traceback
from pathlib import Path

from .dsl.topology import Topology


class UnknownTopology(LookupError):
    pass


class TopologyLoadError(RuntimeError):
    """A topology module raised while it was imported; the message names the file and line."""


def _ensure_cwd_on_path() -> None:
    # The current directory first, as `python -m` has it (a console script does not): a
    # user's ./topologies or own package wins over the installed reference package.
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def _package():
    if (Path.cwd() / "topologies" / "__init__.py").exists():
        _ensure_cwd_on_path()
    return importlib.import_module("topologies")


def names() -> list[str]:
    """The topologies under the ``topologies`` package."""
    pkg = _package()
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def is_reference(ref: str) -> bool:
    """Whether ``ref`` names a module (``pkg.module[:attr]``) rather than a topology of the
    ``topologies`` package."""
    return ":" in ref or "." in ref


def load(ref: str) -> Topology:
    """The topology ``ref`` names: ``trip_stats`` (``topologies/trip_stats.py``) or
    ``pkg.module:attr`` / ``pkg.module`` (attribute ``topology``)."""
    if is_reference(ref):
        return _load_reference(ref)
    if ref not in names():
        raise UnknownTopology(f"unknown topology {ref!r} (known: {', '.join(names())}; "
                              "or give your own as package.module:attribute)")
    module = _import(f"topologies.{ref}")
    topology = getattr(module, "topology", None)
    if not isinstance(topology, Topology):
        raise UnknownTopology(f"topologies/{ref}.py does not define `topology = Topology(...)`")
    return topology


def _load_reference(ref: str) -> Topology:
    module_name, _, attr = ref.partition(":")
    attr = attr or "topology"
    if not module_name or not all(p.isidentifier() for p in module_name.split(".")) \
            or not all(p.isidentifier() for p in attr.split(".")):
        raise UnknownTopology(f"{ref!r} is not a topology reference (package.module:attribute)")
    _ensure_cwd_on_path()
    try:
        module = _import(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name) and \
                module_name[len(exc.name):len(exc.name) + 1] in ("", "."):
            raise UnknownTopology(f"no module named {exc.name!r} (for {ref!r}; is its "
                                  "directory the current one or on PYTHONPATH?)") from None
        raise
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UnknownTopology(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, Topology):
        raise UnknownTopology(f"{module_name}:{attr} is a {type(obj).__name__}, not a "
                              "streams Topology")
    return obj


def _import(module_name: str) -> object:
    """Import ``module_name``; an error inside the module's own code (not a missing module of
    the reference itself) becomes a :class:`TopologyLoadError` naming the file and line."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise
        raise TopologyLoadError(_where(exc, module_name)) from exc
    except Exception as exc:  # noqa: BLE001 - any error of the user's module, in one line
        raise TopologyLoadError(_where(exc, module_name)) from exc


def _where(exc: BaseException, module_name: str) -> str:
    """``path:line: Type: message`` for the innermost frame of ``exc`` in the module's file
    (a SyntaxError's own position), else in any file outside the streams package."""
    what = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    what = what.rstrip(": ")
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_shown(exc.filename)}:{exc.lineno}: {type(exc).__name__}: {exc.msg}"
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    origin = spec.origin if spec is not None else None
    frames = traceback.extract_tb(exc.__traceback__)
    package = str(Path(__file__).resolve().parent)
    mine = [f for f in frames if origin and Path(f.filename).resolve() == Path(origin).resolve()]
    user = [f for f in frames if not str(Path(f.filename).resolve()).startswith(package)
            and "importlib" not in f.filename]
    candidates = mine or user or list(frames)
    if not candidates:
        return f"{module_name}: {what}"
    frame = candidates[-1]
    return f"{_shown(frame.filename)}:{frame.lineno}: {what}"


def _shown(filename: str) -> str:
    """A path relative to the current directory when it is below it."""
    try:
        return str(Path(filename).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return filename


def load_all() -> tuple[list[Topology], list[str]]:
    """Every topology of the ``topologies`` package that loads, and one line per one that does
    not (its file and line)."""
    loaded, errors = [], []
    for name in names():
        try:
            loaded.append(load(name))
        except (TopologyLoadError, UnknownTopology) as exc:
            errors.append(str(exc))
    return loaded, errors
