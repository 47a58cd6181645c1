"""Microbenchmark: the per-event cost of driving a Faust-style agent, against the declarative
operator doing the same, through the task's batch path (no broker: ``Task.process`` on
in-memory records in batches of 5000, outputs taken and dropped, commits excluded).

    python tests/bench/bench_agent_overhead.py [--count 200000] [--repeat 5] [--results PATH]

Pairs (each the same work written both ways), ``--repeat`` rounds (default 5) in one process,
each running every variant once in an order rotated each round; the median and min-max per
variant, ratios of the medians:

* pass-through of bytes values (no JSON, so the difference is the driving itself):
  ``map(identity).to(out)`` vs ``async for v in stream: yield v``;
* the same agent as ``stream.items()`` and as a sync generator;
* a counter per key: ``group_by_key().count()`` (+ ``to``) vs
  ``counts[key] += 1; yield counts[key]`` on a table_store.

Results (with the load average at start and end) go to ``--results`` (default
tests/bench/results/agent_overhead.json); the tasks' state to one fresh directory per run
(``--work-dir`` names its parent).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streams import Topology  # noqa: E402
from streams.runtime.compile import subtopologies  # noqa: E402
from streams.runtime.task import Task  # noqa: E402
from streams.state.meta import TaskId  # noqa: E402
from streams.state.store import TaskStore  # noqa: E402
from streams.testing import TestRecord  # noqa: E402
from tests.bench.rounds import RunInfo, add_run_options, spread, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "agent_overhead.json"
BATCH = 5000


def declarative_map() -> Topology:
    t = Topology("ov-map")
    t.stream("in", value="bytes").map(lambda v: v).to("out", value="bytes")
    return t


def agent_values() -> Topology:
    t = Topology("ov-agent")

    @t.agent("in", value="bytes", sink=[t.topic("out", value="bytes")])
    async def passthrough(stream):
        async for value in stream:
            yield value

    return t


def agent_items() -> Topology:
    t = Topology("ov-items")

    @t.agent("in", value="bytes", sink=[t.topic("out", value="bytes")])
    async def passthrough(stream):
        async for _key, value in stream.items():
            yield value

    return t


def agent_sync() -> Topology:
    t = Topology("ov-sync")

    @t.agent("in", value="bytes", sink=[t.topic("out", value="bytes")])
    def passthrough(stream):
        yield from stream

    return t


def declarative_count() -> Topology:
    t = Topology("ov-count")
    t.stream("in").group_by_key().count(name="counts").to("out")
    return t


def agent_count() -> Topology:
    t = Topology("ov-agent-count")
    counts = t.table_store("counts", default=int)

    @t.agent("in", sink=["out"])
    async def count(stream):
        async for key, _value in stream.items():
            counts[key] += 1
            yield counts[key]

    return t


def run(topology: Topology, raws: list[TestRecord], state: Path) -> float:
    """Seconds to push ``raws`` through the topology's task in batches (outputs dropped)."""
    [sub] = subtopologies(topology)
    state.mkdir(parents=True, exist_ok=True)
    store = TaskStore(state / str(TaskId(sub.id, 0)), sub.stores) if sub.stores else None
    task = Task(topology, sub, 0, store)
    started = time.perf_counter()
    for i in range(0, len(raws), BATCH):
        task.process("in", raws[i:i + BATCH])
        task.take_outputs()
    elapsed = time.perf_counter() - started
    task.abandon()
    task.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200_000)
    add_run_options(parser, RESULTS, rounds=5)
    args = parser.parse_args(argv)
    info = RunInfo.start(args, "agent-overhead-")
    raws = [TestRecord("in", 0, i, f"k{i % 1000}".encode(),
                       json.dumps({"i": i, "title": "CEO"}).encode(), i)
            for i in range(args.count)]
    variants = {
        "declarative map": declarative_map, "agent (values)": agent_values,
        "agent (items)": agent_items, "agent (sync generator)": agent_sync,
        "declarative count": declarative_count, "agent count (table_store)": agent_count,
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for rnd, order in enumerate(info.order(list(variants), lambda n: f"[{n}]"), start=1):
        for i, name in enumerate(order):  # rotated, so drift hits every variant alike
            seconds[name].append(run(variants[name](), raws, info.work / f"{rnd}-{i}"))
    med = {name: spread(s, 4)["median"] for name, s in seconds.items()}
    rows = {name: {"seconds": spread(s, 4),
                   "events_per_s": spread((args.count / x for x in s), 0),
                   "us_per_event": round(med[name] / args.count * 1e6, 3)}
            for name, s in seconds.items()}
    pairs = {
        "agent (values) / declarative map": ("agent (values)", "declarative map"),
        "agent (items) / declarative map": ("agent (items)", "declarative map"),
        "agent (sync generator) / declarative map": ("agent (sync generator)", "declarative map"),
        "agent count / declarative count": ("agent count (table_store)", "declarative count"),
    }
    ratios = {label: round(med[a] / med[b], 3) for label, (a, b) in pairs.items()}
    overhead = {label: round((med[a] - med[b]) / args.count * 1e6, 3)
                for label, (a, b) in pairs.items()}
    print(f"{args.count} events, batches of {BATCH}, {args.repeat} rounds (median [min-max])")
    for name, r in rows.items():
        e = r["events_per_s"]
        print(f"  {name:<28} {e['median']:>10,.0f} [{e['min']:,.0f}-{e['max']:,.0f}] events/s"
              f"  {r['us_per_event']:>7.3f} us/event")
    for label, ratio in ratios.items():
        print(f"  time ratio {label}: {ratio:.3f} (+{overhead[label]:.3f} us/event)")
    doc = {"benchmark": "agent_overhead", "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "count": args.count, "batch": BATCH,
           "measure": "Task.process over in-memory records; median and min-max over the "
                      "rounds, ratios of the medians; outputs taken, no commit",
           "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                       "platform": platform.platform()},
           **info.finish(),
           "variants": rows, "time_ratios": ratios, "extra_us_per_event": overhead}
    out = write_results(args.results, json.dumps(doc, indent=2) + "\n")
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
