"""Benchmark: what driving a Faust-style agent costs against the declarative operators doing
the same work.

Worker mode (the default, the headline): the whole worker, commits included (outputs and
changelog flushed, state and input offsets in one WriteBatch, the group's offsets committed).
A backlog of ``--count`` events keyed by 1,000 keys is produced once to ``--partitions``
partitions; then ``--repeat`` rounds (default 3), each running a worker per variant in an order
rotated each round, each with a fresh consumer group (its topology name) and state directory.
Each variant's rate is read at saturation from the group's committed offsets
(tests/bench/saturation.py ``measure_group``: a span of >= 30 s between two commit events after
a warm-up; a backlog drained within it is refused). The pair: a counter per key,
``group_by_key().count().to(out)`` vs ``counts[key] += 1; yield counts[key]`` on a
``table_store``.

    python tests/bench/bench_agent_overhead.py --broker 127.0.0.1:9092 [--count 4000000]

Results (median and min-max events/s per variant, the load average at start and end) go to
``--results`` (default tests/bench/results/agent_overhead.json) with the headline in
``summary``: ``agent_over_declarative_time`` = {median, min, max} over the rounds of the time
ratio agent / declarative (= declarative events/s / agent events/s of the same round).

Micro mode (``--mode micro``): the per-event cost of the task's batch path alone, no broker
(``Task.process`` on in-memory records in batches of 5000, outputs taken and dropped, commits
excluded), ``--repeat`` rounds (default 5) in one process. Pairs, each the same work written
both ways:

* pass-through of bytes values (no JSON, so the difference is the driving itself):
  ``map(identity).to(out)`` vs ``async for v in stream: yield v``;
* the same agent as ``stream.items()`` and as a sync generator;
* the counter per key as above.

Results go to ``--results`` (default tests/bench/results/agent_overhead_micro.json), summary
key ``agent_over_declarative_time_micro`` (the counter pair's per-round time ratio). The tasks'
state goes to one fresh directory per run (``--work-dir`` names its parent).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
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
from tests.bench.rounds import (RunInfo, add_run_options, fmt_spread, spread,  # noqa: E402
                               write_results)

RESULTS = Path(__file__).resolve().parent / "results" / "agent_overhead.json"
MICRO_RESULTS = Path(__file__).resolve().parent / "results" / "agent_overhead_micro.json"
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


def declarative_count(name: str = "ov-count", source: str = "in", sink: str = "out") -> Topology:
    t = Topology(name)
    t.stream(source).group_by_key().count(name="counts").to(sink)
    return t


def agent_count(name: str = "ov-agent-count", source: str = "in", sink: str = "out"
                ) -> Topology:
    t = Topology(name)
    counts = t.table_store("counts", default=int)

    @t.agent(source, sink=[sink])
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


def micro(args: argparse.Namespace) -> int:
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
    a_count, d_count = pairs["agent count / declarative count"]
    per_round = spread((a / d for a, d in zip(seconds[a_count], seconds[d_count], strict=True)),
                       3)
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
           "variants": rows, "time_ratios": ratios, "extra_us_per_event": overhead,
           "summary": {"agent_over_declarative_time_micro": per_round}}
    out = write_results(args.results, json.dumps(doc, indent=2) + "\n")
    print(f"results written to {out}")
    return 0


# -- worker mode -----------------------------------------------------------------------------------
IN_TOPIC = "bench-agent-overhead-in"
WORKER_VARIANTS = {"declarative": declarative_count, "agent": agent_count}


def serve(variant: str) -> int:
    """Run one variant as a worker in this process until SIGTERM (started by :func:`worker`).
    Environment: BENCH_BROKER, BENCH_APP (topology name = group), BENCH_STATE_DIR."""
    from tests.bench.bench_worker import run as run_worker

    app = os.environ["BENCH_APP"]
    return run_worker(WORKER_VARIANTS[variant](app, IN_TOPIC, f"{app}-out"), app)


def produce_backlog(broker: str, count: int, partitions: int) -> None:
    from aiokafka import AIOKafkaProducer

    from streams.kafka import admin

    async def go() -> None:
        await admin.delete_topics(broker, [IN_TOPIC])
        await admin.ensure_topics(broker, [admin.TopicSpec(IN_TOPIC, partitions)])
        producer = AIOKafkaProducer(bootstrap_servers=broker, acks=1, linger_ms=20,
                                    max_batch_size=1024 * 1024)
        await producer.start()
        try:
            for lo in range(0, count, 50_000):
                futures = [await producer.send(IN_TOPIC, json.dumps({"i": i}).encode(),
                                               key=b"k%d" % (i % 1000))
                           for i in range(lo, min(count, lo + 50_000))]
                await asyncio.gather(*futures)
        finally:
            await producer.stop()

    started = time.monotonic()
    asyncio.run(go())
    print(f"produced {count} events to {IN_TOPIC} ({partitions} partitions) in "
          f"{time.monotonic() - started:.0f} s", flush=True)


def measure_worker(broker: str, variant: str, app: str, state: Path, log: Path,
                   warmup_s: float = 5.0, span_s: float = 30.0) -> dict:
    """Start the variant's worker, read its rate at saturation, stop it."""
    from tests.bench.saturation import measure_group

    env = {**os.environ, "BENCH_BROKER": broker, "BENCH_APP": app,
           "BENCH_STATE_DIR": str(state), "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, __file__, "--serve", variant], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            sat = asyncio.run(measure_group(broker, app, [IN_TOPIC], warmup_s=warmup_s,
                                            span_s=span_s))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
    return {"app": app, **sat.as_dict(), "exit_code": proc.returncode, "log": str(log)}


def cleanup(broker: str, apps: list[str]) -> None:
    from streams.kafka import admin
    from tests.bench.rounds import delete_groups

    async def go() -> None:
        topics = [t for t in await admin.list_topics(broker)
                  if any(t.startswith(f"{app}-") for app in apps)]
        await admin.delete_topics(broker, topics)
        await delete_groups(broker, apps)

    asyncio.run(go())


def worker(args: argparse.Namespace) -> int:
    info = RunInfo.start(args, "agent-overhead-")
    if not args.skip_produce:
        produce_backlog(args.broker, args.count, args.partitions)
    tag = time.strftime("%H%M%S")
    runs: dict[str, list[dict]] = {name: [] for name in WORKER_VARIANTS}
    apps: list[str] = []
    try:
        for rnd, order in enumerate(info.order(list(WORKER_VARIANTS), lambda n: f"[{n}]"),
                                    start=1):
            for name in order:
                app = f"bench-ov-{name}-{tag}-{rnd}"
                apps.append(app)
                res = measure_worker(args.broker, name, app, info.work / app,
                                     info.work / f"{app}.log", args.warmup, args.span)
                runs[name].append(res)
                print(f"round {rnd} {name:<12} {res['rate']:>10,.0f} events/s "
                      f"({res['records']} committed in {res['seconds']:.1f} s)", flush=True)
    finally:
        cleanup(args.broker, apps)
    rates = {name: spread((r["rate"] for r in rs), 0) for name, rs in runs.items()}
    per_round = spread((d["rate"] / a["rate"] for d, a in
                        zip(runs["declarative"], runs["agent"], strict=True)), 3)
    print(f"declarative count: {fmt_spread(rates['declarative'])} events/s")
    print(f"agent count:       {fmt_spread(rates['agent'])} events/s")
    print(f"time agent / declarative per round: {fmt_spread(per_round, 3)}")
    doc = {"benchmark": "agent_overhead", "mode": "worker",
           "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "broker": args.broker,
           "count": args.count, "partitions": args.partitions,
           "measure": "whole worker with commits, rate at saturation from the group's "
                      "committed offsets (tests/bench/saturation.py); median and min-max over "
                      "the rounds; time ratio per round = declarative rate / agent rate",
           "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                       "platform": platform.platform()},
           **info.finish(),
           "runs": runs, "events_per_s": rates,
           "summary": {"agent_over_declarative_time": per_round}}
    out = write_results(args.results, json.dumps(doc, indent=2) + "\n")
    print(f"results written to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["worker", "micro"], default="worker")
    parser.add_argument("--serve", choices=list(WORKER_VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--broker", default=os.environ.get("STREAMS_BROKER", "127.0.0.1:9092"))
    parser.add_argument("--count", type=int, default=None,
                        help="events (default: worker 4000000, micro 200000)")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="worker mode: seconds after the first commit before the span")
    parser.add_argument("--span", type=float, default=30.0,
                        help="worker mode: seconds of processing measured (>= 30 to count)")
    parser.add_argument("--skip-produce", action="store_true",
                        help="worker mode: reuse the backlog of a previous run")
    add_run_options(parser, None, rounds=3)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve)
    if args.mode == "micro":
        args.count = args.count or 200_000
        args.results = args.results or str(MICRO_RESULTS)
        return micro(args)
    args.count = args.count or 4_000_000
    args.results = args.results or str(RESULTS)
    return worker(args)


if __name__ == "__main__":
    sys.exit(main())
