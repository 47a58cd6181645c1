"""Benchmark: the payments topology under exactly_once against at_least_once, same broker, same
run, one ``streams worker`` subprocess per measurement.

    STREAMS_BROKER=127.0.0.1:9092 python tests/bench/bench_payments_eos.py \
        [--backlog 600000] [--accounts 1000] [--warmup 5] [--span 30] \
        [--latency-seconds 20] [--latency-rate 1000] [--commit-intervals 50,200,1000] \
        [--sweep-saturation] \
        [--no-profile] [--repeat 3] [--results PATH] [--work-dir DIR]

Throughput runs the payments topology itself (two sub-topologies joined by the internal credit
topic, two tables with changelogs, three output topics; the bench does no correctness checks,
tests/integration/test_payments* do). Latency runs a simpler pipeline, profile_notifications
(stateless), under both guarantees: on 2 shared cores payments' own work per event leaves too
little headroom at 1,000 events/s (its results queue up and the latency measures the backlog),
and what the guarantee changes is the transactions, not the topology's work.

1. Throughput at saturation (:mod:`tests.bench.saturation`): a backlog of deposits and
   ``--backlog`` payments is produced once; for each run the internal, changelog and output
   topics are recreated and the group deleted, a worker starts on fresh state, and the rate is
   read from the group's committed input offsets between two commit events ``--span`` seconds
   apart after a ``--warmup``. The worker is stopped after the span: the backlog is never
   drained (:class:`~tests.bench.saturation.BacklogTooSmall` if it would be).
2. Latency at ``--latency-rate`` events/s for ``--latency-seconds`` (bench_latency.py's run,
   throughput mode): an external producer stamps each view with its send time, a
   read_committed consumer of the notifications takes receive time - send time. Variants:
   at_least_once, exactly_once with its default commit interval, and exactly_once with each
   ``--commit-intervals`` value (the commit-interval table; with ``--sweep-saturation`` each
   interval also gets saturation runs).

``--repeat`` rounds (default 3), each running every variant once in an order rotated each
round; median and min-max per variant. Then one more exactly-once saturation run under cProfile
(not counted; ``--no-profile`` skips it), its top functions by own time stored. Results (every
run, load average at start and end) go to ``--results`` (default
tests/bench/results/payments_eos.json) with a top-level ``summary``:
``eos_over_alos_throughput``, ``alos_events_per_s``, ``eos_events_per_s``, ``eos_p50_ms``,
``eos_p99_ms``, ``alos_p50_ms``, ``alos_p99_ms`` (each a median/min/max dict) and
``eos_commit_interval_ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import pstats
import random
import shutil
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streams import registry  # noqa: E402
from streams.config import Settings  # noqa: E402
from streams.devtools import generate  # noqa: E402
from streams.kafka import admin  # noqa: E402
from streams.runtime.topics import topic_specs  # noqa: E402
from tests.bench.rounds import RunInfo, add_run_options, delete_groups, spread  # noqa: E402
from tests.bench.rounds import write_results  # noqa: E402
from tests.bench import bench_latency  # noqa: E402
from tests.bench.saturation import measure_group  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "payments_eos.json"
NAME = "payments"
ALOS, EOS = "at_least_once", "exactly_once"


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def default_eos_interval() -> int:
    return Settings(processing_guarantee=EOS).effective_commit_interval_ms


def recreate(kafka: str, inputs_too: bool) -> Any:
    """Fresh topics of the topology (the inputs only if ``inputs_too``) and no group."""
    topology = registry.load(NAME)
    inputs = set(topology.input_topics())
    everything = (topology.input_topics() + topology.output_topics()
                  + topology.internal_topics() + [topology.dlq_topic])
    admin.run(admin.delete_topics(kafka, [t for t in everything
                                          if inputs_too or t not in inputs]))
    admin.run(admin.ensure_topics(kafka, topic_specs(topology, 4)))
    admin.run(delete_groups(kafka, [NAME]))   # the worker reads from the earliest offsets
    return topology


def worker_cmd(guarantee: str, work: Path, interval: int | None, profile: Path | None
               ) -> list[str]:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "worker.toml"
    lines = [f'processing_guarantee = "{guarantee}"']
    if interval is not None:
        lines.append(f"commit_interval_ms = {interval}")
    config.write_text("\n".join(lines) + "\n")
    runner = ["-m", "cProfile", "-o", str(profile)] if profile else []
    return [sys.executable, *runner, "-m", "streams.cli", "worker", NAME, "--config",
            str(config), "--state-dir", str(work / "state"), "--metrics-port",
            os.environ.get("BENCH_METRICS_PORT", "-1")]


def start_worker(kafka: str, guarantee: str, work: Path, interval: int | None = None,
                 profile: Path | None = None) -> subprocess.Popen[bytes]:
    cmd = worker_cmd(guarantee, work, interval, profile)
    shutil.rmtree(work / "state", ignore_errors=True)
    log = open(work / "worker.log", "ab")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, "STREAMS_BROKER": kafka,
                                 "PYTHONPATH": str(ROOT)})


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- throughput at saturation --------------------------------------------------------------------
def produce_backlog(kafka: str, payments: int, accounts: int) -> int:
    """Deposits + ``payments`` payments, produced in chunks (never all in memory)."""
    items = generate.GENERATORS[NAME](random.Random(3), payments,
                                      int(time.time() * 1000), accounts=accounts, step_ms=1)
    total = 0
    while chunk := list(islice(items, 100_000)):
        total += asyncio.run(generate.produce(kafka, chunk))
    return total


def saturation(kafka: str, guarantee: str, interval: int | None, work: Path,
               args: argparse.Namespace, profile: Path | None = None) -> dict[str, Any]:
    topology = recreate(kafka, inputs_too=False)
    proc = start_worker(kafka, guarantee, work, interval, profile=profile)
    try:
        result = asyncio.run(measure_group(kafka, NAME, topology.input_topics(),
                                           warmup_s=args.warmup, span_s=args.span))
        if proc.poll() is not None:
            raise SystemExit(f"{guarantee} worker exited; see {work}")
    finally:
        stop_worker(proc)
    return result.as_dict()


def top_functions(path: Path, n: int = 15) -> list[str]:
    """The ``n`` functions with the most own time, as printed by pstats."""
    stats = pstats.Stats(str(path))
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.stats.values()) or 1.0  # type: ignore[attr-defined]
    return [f"{tt:7.2f}s {100 * tt / total:4.1f}% own, {ct:7.2f}s cum  {Path(f).name}:{line} "
            f"{func}" for (f, line, func), (_cc, _nc, tt, ct, _callers) in rows]


# -- latency at a fixed rate ---------------------------------------------------------------------
def latency(kafka: str, guarantee: str, interval: int | None, work: Path,
            args: argparse.Namespace) -> dict[str, Any]:
    """bench_latency's run (profile_notifications, throughput mode) under ``guarantee``."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "worker.toml"
    config.write_text(f'processing_guarantee = "{guarantee}"\n' + (
        "" if interval is None else f"commit_interval_ms = {interval}\n"))
    variant = {"checkout": ROOT, "args": ["--processing-mode", "throughput", "--config",
                                          str(config)]}
    opts = argparse.Namespace(broker=kafka, partitions=4, rate=args.latency_rate,
                              seconds=args.latency_seconds)
    r = bench_latency.run_latency(variant, opts, work, "latency")
    return {"rate": args.latency_rate, "commit_interval_ms": interval, **r}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backlog", type=int, default=1_200_000,
                    help="payments in the saturation backlog (must outlast warm-up + span)")
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--span", type=float, default=30.0)
    ap.add_argument("--latency-seconds", type=float, default=20)
    ap.add_argument("--latency-rate", type=float, default=1000)
    ap.add_argument("--commit-intervals", default="",
                    help="comma-separated exactly_once commit intervals (ms) to measure the "
                         "latency of, besides the default (e.g. 50,100,200,500,1000)")
    ap.add_argument("--skip-saturation", action="store_true")
    ap.add_argument("--sweep-saturation", action="store_true",
                    help="a saturation run per --commit-intervals value too (else latency only)")
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="skip the extra exactly_once saturation run under cProfile")
    add_run_options(ap, RESULTS)
    args = ap.parse_args(argv)
    kafka = os.environ.get("STREAMS_BROKER", "127.0.0.1:9092")
    if not admin.broker_answers(kafka):
        ap.error(f"no Kafka broker answers at {kafka}")
    info = RunInfo.start(args, "bench-payments-", _log)
    eos_default = default_eos_interval()
    sweep = [int(x) for x in args.commit_intervals.split(",") if x.strip()]
    # (key, guarantee, commit interval or None for the guarantee's default)
    variants: list[tuple[str, str, int | None]] = [(ALOS, ALOS, None), (EOS, EOS, None)]
    variants += [(f"{EOS}@{ms}ms", EOS, ms) for ms in sweep if ms != eos_default]

    if not args.skip_saturation:
        recreate(kafka, inputs_too=True)
        _log(f"producing the backlog: {args.backlog:,} payments")
        backlog = produce_backlog(kafka, args.backlog, args.accounts)
        _log(f"backlog: {backlog:,} records")
    tput: dict[str, list[dict[str, Any]]] = {v[0]: [] for v in variants}
    lat: dict[str, list[dict[str, Any]]] = {v[0]: [] for v in variants}
    orders = info.order(variants, label=lambda v: v[0])
    # Every saturation run first, on the one backlog (the latency runs recreate the inputs).
    for rnd, order in enumerate(orders if not args.skip_saturation else []):
        for key, g, interval in order:
            if interval is not None and not args.sweep_saturation:
                continue
            r = saturation(kafka, g, interval, info.work / f"sat-{key}-{rnd}", args)
            tput[key].append(r)
            _log(f"round {rnd} saturation {key}: {r}")
    profile: list[str] = []
    if args.profile and not args.skip_saturation:
        prof = info.work / "eos-saturation.prof"
        r = saturation(kafka, EOS, None, info.work / "sat-profiled", args, profile=prof)
        profile = top_functions(prof)
        _log("profile of an exactly_once saturation run (not counted): " + json.dumps(r))
        for line in profile:
            print("   ", line)
    for rnd, order in enumerate(orders):
        for key, g, interval in order:
            r = latency(kafka, g, interval, info.work / f"lat-{key}-{rnd}", args)
            lat[key].append(r)
            _log(f"round {rnd} latency {key}: {r}")

    out: dict[str, Any] = {
        "benchmark": "payments_eos", "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "command": " ".join(sys.argv), "broker": kafka,
        "pipeline": {"throughput": "the payments topology (no correctness checks in the bench)",
                     "latency": "profile_notifications (stateless), throughput mode"},
        "exactly_once_default_commit_interval_ms": eos_default,
        "measure": {
            "throughput": f"committed input offsets of the group between two commits >= "
                          f"{args.span:.0f} s apart after a {args.warmup:.0f} s warm-up, on a "
                          f"backlog of {args.backlog:,} payments (tests/bench/saturation.py)",
            "latency": "bench_latency.py's run: view sent (linger 0) -> notification read by a "
                       "read_committed consumer (fetch wait 5 ms), after a 3 s warm-up",
            "spread": "median and min-max over the rounds; the ratio is per round (EOS over "
                      "the at-least-once run of the same round), then its median"},
        **info.finish(),
    }
    summary: dict[str, Any] = {"eos_commit_interval_ms": eos_default}
    if tput[ALOS]:
        out["throughput"] = {k: {"events_per_s": spread((r["rate"] for r in rs), 0),
                                 "runs": rs} for k, rs in tput.items() if rs}
        for k, rs in tput.items():  # per round: over the at-least-once run of the same round
            if not rs:
                continue
            out["throughput"][k]["over_alos"] = spread(
                (r["rate"] / a["rate"] for a, r in zip(tput[ALOS], rs, strict=True)), 3)
        summary["eos_over_alos_throughput"] = out["throughput"][EOS]["over_alos"]
        summary["alos_events_per_s"] = out["throughput"][ALOS]["events_per_s"]
        summary["eos_events_per_s"] = out["throughput"][EOS]["events_per_s"]
    out["latency"] = {k: {"p50_ms": spread((r["p50_ms"] for r in rs), 1),
                          "p99_ms": spread((r["p99_ms"] for r in rs), 1), "runs": rs}
                      for k, rs in lat.items()}
    summary |= {"eos_p50_ms": out["latency"][EOS]["p50_ms"],
                "eos_p99_ms": out["latency"][EOS]["p99_ms"],
                "alos_p50_ms": out["latency"][ALOS]["p50_ms"],
                "alos_p99_ms": out["latency"][ALOS]["p99_ms"]}
    table = []
    for key, g, interval in variants:
        if g != EOS:
            continue
        row: dict[str, Any] = {"commit_interval_ms": interval or eos_default,
                               "p50_ms": out["latency"][key]["p50_ms"],
                               "p99_ms": out["latency"][key]["p99_ms"]}
        if tput[key]:
            row["events_per_s"] = out["throughput"][key]["events_per_s"]
            row["over_alos"] = out["throughput"][key]["over_alos"]
        table.append(row)
    out["commit_interval_table"] = sorted(table, key=lambda row: row["commit_interval_ms"])
    if profile:
        out["profile_eos_saturation_top_own_time"] = profile
    out = {"summary": summary, **out}
    path = write_results(args.results, json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
