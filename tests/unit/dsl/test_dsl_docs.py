"""The DSL documents itself with examples that run: every public operator shows one, and each
example's output is what the TopologyTestDriver really produces."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest

import streams.dsl
from streams.dsl import (agent_tables, agent_topics, grouped, stream, table, topology, window_ops,
                         window_specs)

MODULES = sorted(info.name for info in pkgutil.iter_modules(streams.dsl.__path__,
                                                             "streams.dsl."))

# What users call: each public method (not a dunder, constructor or plain accessor) of these
# classes shows an example.
PUBLIC_CLASSES = [topology.Topology, stream.Stream, grouped.GroupedStream, table.Table,
                  table.GlobalTable, window_ops.WindowedStream, window_ops.WindowedTable,
                  agent_tables.AgentTable, agent_tables.WindowedAgentTable,
                  agent_tables.WindowSet, agent_topics.TopicRef, agent_topics.InternalTopic,
                  window_specs.TumblingWindows, window_specs.HoppingWindows,
                  window_specs.SlidingWindows, window_specs.SessionWindows,
                  window_specs.JoinWindows]
ACCESSORS = {"name", "topic", "topology", "sources", "global_tables", "agents", "agent_tables",
             "send_topics", "internal_sends", "size_ms", "advance_ms", "grace_ms",
             "max_difference_ms", "gap_ms", "before_ms", "after_ms", "close_time"}


@pytest.mark.parametrize("name", MODULES)
def test_every_example_in_the_dsl_runs_and_shows_what_it_prints(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), verbose=False)
    assert result.failed == 0, name
    defines_public = any(cls.__module__ == name for cls in PUBLIC_CLASSES)
    assert result.attempted > 0 or not defines_public, f"{name}: no example found"


def _methods_without_example() -> list[str]:
    missing = []
    for cls in PUBLIC_CLASSES:
        if ">>>" not in (cls.__doc__ or ""):
            missing.append(cls.__qualname__)
        for attr in dir(cls):              # inherited methods too (a base's example counts)
            if attr.startswith("_") or attr in ACCESSORS:
                continue
            member = inspect.getattr_static(cls, attr)
            fn = member.fget if isinstance(member, property) else member
            fn = fn.__func__ if isinstance(fn, (staticmethod, classmethod)) else fn
            if not inspect.isfunction(fn) or not fn.__module__.startswith("streams."):
                continue
            if ">>>" not in (fn.__doc__ or ""):
                missing.append(f"{cls.__qualname__}.{attr}")
    return missing


def test_every_public_dsl_method_has_an_example() -> None:
    assert _methods_without_example() == []


def test_the_examples_are_found_per_method() -> None:
    """The check above looks at each method's own docstring (a class-level example does not
    count for a method)."""
    original = stream.Stream.map.__doc__
    try:
        stream.Stream.map.__doc__ = "New value per record."
        assert _methods_without_example() == ["Stream.map"]
    finally:
        stream.Stream.map.__doc__ = original
