"""End-to-end latency at a fixed rate and throughput at saturation of profile_notifications in
both processing modes (at-least-once) and under exactly-once.

Standalone script (not collected by pytest)::

    python tests/bench/bench_latency.py [--rate 1000 --seconds 20 --repeat 3]
                                        [--backlog 2000000 --warmup 5 --span 30] [--no-profile]
                                        [--exactly-once] [--eos-intervals 50,200,1000]
                                        [--baseline-checkout /path/to/other/checkout]

Needs a running broker (``--broker``, ``STREAMS_BROKER`` or 127.0.0.1:9092). Variants:
``throughput`` mode, ``latency`` mode; with ``--exactly-once`` also ``exactly_once`` (throughput
mode, its default commit interval; a stateless pipeline, so what it measures is the
transactions, not the topology's work), one ``exactly_once@<N>ms`` per ``--eos-intervals``
value, and optionally the same worker from another checkout of the project as a baseline (e.g.
the code before a change).
``--repeat`` rounds (default 3), each running every variant once in an order rotated each round:

- **throughput at saturation** (:mod:`tests.bench.saturation`), all rounds first: a backlog of
  ``--backlog`` views is produced once; per run the output topics are recreated and the group
  deleted, ``streams worker profile_notifications`` starts on fresh state, and the rate is read
  from the group's committed input offsets between two commits ``--span`` s apart after a
  ``--warmup`` (start-up outside it); the worker is stopped after the span.
- **latency**: fresh topics, start the worker; once it owns its partitions, an external producer
  sends profile views at ``--rate`` events/s for ``--seconds`` (after a 3 s warm-up that is not
  counted), each stamped with its send time (``ts`` field = record timestamp), and an external
  ``read_committed`` consumer of ``profile-view-notifications`` takes ``receive time - ts`` of
  every notification.
  Also read back: the worker's own ``streams_end_to_end_latency_seconds`` histogram (p50/p99
  estimated from its buckets), to show the metric and the outside view agree.
- then one more latency-mode latency run under cProfile (not counted; ``--no-profile`` skips
  it): its top functions by own time are stored.

The producer (linger 0) and the consumer (fetch wait 5 ms) are part of what is measured, as a
user's would be. Results (every run, median and min-max, load average at start and end) go to
``--results`` (default tests/bench/results/latency.json), with a top-level ``summary``:
``throughput_mode_p50_ms``, ``throughput_mode_p99_ms``, ``latency_mode_p50_ms``,
``latency_mode_p99_ms``, ``throughput_mode_events_per_s``, ``latency_mode_events_per_s`` (each
median/min/max), ``eos_p50_ms``, ``eos_p99_ms`` (median/min/max), ``eos_commit_interval_ms``,
and ``latency_over_throughput_events_per_s``, ``eos_over_alos_events_per_s`` (ratios of the
medians; exactly-once over throughput mode). Logs and
worker state go to one fresh directory per run (``--work-dir`` names its parent). The machine
may be shared: compare variants within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import pstats
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from itertools import islice
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streams.config import Settings  # noqa: E402
from streams.devtools import generate  # noqa: E402
from streams.serdes import json_dumps  # noqa: E402
from streams.kafka import admin  # noqa: E402
from tests.bench.rounds import RunInfo, add_run_options, delete_groups, scratch_dir  # noqa: E402
from tests.bench.rounds import spread  # noqa: E402
from tests.bench.rounds import write_results  # noqa: E402
from tests.bench.saturation import measure_group  # noqa: E402

TOPOLOGY = "profile_notifications"
INPUT, OUTPUT, DLQ = "profile-views", "profile-view-notifications", "profile_notifications-dlq"
NOTABLE = ("Recruiter", "Hiring Manager", "CEO", "CTO")
RESULTS = HERE / "results" / "latency.json"
WARMUP_S = 3.0


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def is_notable(view: dict[str, Any]) -> bool:
    """The topology's filter, restated (expected outputs do not come from the code under test)."""
    return any(t in (view.get("viewer_title") or "") for t in NOTABLE)


def fresh_topics(bootstrap: str, partitions: int) -> None:
    admin.run(admin.delete_topics(bootstrap, [INPUT, OUTPUT, DLQ]))
    admin.run(admin.ensure_topics(bootstrap, [admin.TopicSpec(t, partitions)
                                              for t in (INPUT, OUTPUT, DLQ)]))
    # no committed offsets: the worker starts from the earliest offset of the new topics
    admin.run(delete_groups(bootstrap, [TOPOLOGY]))


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def histogram_quantile(text: str, q: float) -> float | None:
    """Prometheus' histogram_quantile over the worker's e2e buckets (linear in a bucket)."""
    buckets = []
    for line in text.splitlines():
        m = re.match(r'streams_end_to_end_latency_seconds_bucket\{.*le="([^"]+)".*\} (\S+)', line)
        if m:
            buckets.append((float(m.group(1)), float(m.group(2))))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_n = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_n) / max(n - prev_n, 1e-9)
        prev_le, prev_n = le, n
    return None


class WorkerRun:
    def __init__(self, variant: dict[str, Any], bootstrap: str, work: Path, tag: str,
                 profile: Path | None = None) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.log_path = work / f"{tag}.log"
        env = {**os.environ, "STREAMS_BROKER": bootstrap, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": str(variant["checkout"])}
        self._log = open(self.log_path, "wb")
        self.started = time.monotonic()
        runner = ["-m", "cProfile", "-o", str(profile)] if profile else []
        self.proc = subprocess.Popen(
            [sys.executable, *runner, "-m", "streams.cli", "worker", TOPOLOGY, "--state-dir",
             str(work / f"{tag}-state"), "--metrics-port", "0", *variant["args"]],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=variant["checkout"], env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_assigned(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while "assigned" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker not assigned:\n{self.log()[-2000:]}")
            time.sleep(0.1)

    def metrics(self) -> str:
        m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", self.log())
        if not m:
            return ""
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            self._log.close()


async def drive(bootstrap: str, rate: float, seconds: float, partitions: int,
                seed: int) -> dict[str, Any]:
    """Produce at ``rate`` for warm-up + ``seconds``; return the latencies (ms) of the
    notifications of events sent after the warm-up."""
    # read_committed: exactly-once outputs count when their transaction commits
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=5, isolation_level="read_committed")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    await consumer.start()
    await producer.start()
    tps = [TopicPartition(OUTPUT, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    total = int(rate * (WARMUP_S + seconds))
    events = generate.events(TOPOLOGY, total, seed=seed)
    measured_from = int(time.time() * 1000) + int(WARMUP_S * 1000)
    latencies: list[float] = []
    expected = 0
    done_sending = asyncio.Event()

    async def receive() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time() * 1000
            for recs in batch.values():
                for r in recs:
                    ts = json.loads(r.value)["ts"]
                    if ts >= measured_from:
                        latencies.append(now - ts)
            if done_sending.is_set() and len(latencies) >= expected:
                return

    receiver = asyncio.ensure_future(receive())
    started = time.monotonic()
    futures = []
    for i, (_topic, key, view) in enumerate(events):
        due = started + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        ts = int(time.time() * 1000)
        view = {**view, "ts": ts}
        if ts >= measured_from and is_notable(view):
            expected += 1
        futures.append(await producer.send(INPUT, json_dumps(view), key=key.encode(),
                                           timestamp_ms=ts))
    await asyncio.gather(*futures)
    send_s = time.monotonic() - started
    done_sending.set()
    try:
        await asyncio.wait_for(receiver, timeout=30)
    except TimeoutError:
        pass
    await producer.stop()
    await consumer.stop()
    return {"latencies": latencies, "expected": expected, "sent": total,
            "achieved_rate": round(total / send_s, 1)}


def run_latency(variant: dict[str, Any], args: argparse.Namespace, work: Path,
                tag: str, profile: Path | None = None) -> dict[str, Any]:
    fresh_topics(args.broker, args.partitions)
    w = WorkerRun(variant, args.broker, work, tag, profile)
    try:
        w.wait_assigned()
        time.sleep(1.0)  # first fetches in flight
        got = asyncio.run(drive(args.broker, args.rate, args.seconds, args.partitions, seed=7))
        text = w.metrics()
    finally:
        code = w.stop()
    lat = got["latencies"]
    out = {"samples": len(lat), "expected": got["expected"], "achieved_rate": got["achieved_rate"],
           "p50_ms": round(percentile(lat, 0.5), 1) if lat else None,
           "p99_ms": round(percentile(lat, 0.99), 1) if lat else None,
           "max_ms": round(max(lat), 1) if lat else None, "exit_code": code}
    p50, p99 = histogram_quantile(text, 0.5), histogram_quantile(text, 0.99)
    out["worker_metric_p50_ms"] = None if p50 is None else round(p50 * 1000, 1)
    out["worker_metric_p99_ms"] = None if p99 is None else round(p99 * 1000, 1)
    return out


def produce_backlog(bootstrap: str, partitions: int, count: int) -> None:
    """Fresh topics holding ``count`` views (produced in chunks, never all in memory)."""
    fresh_topics(bootstrap, partitions)
    views = generate.GENERATORS[TOPOLOGY](random.Random(42), count, int(time.time() * 1000),
                                          step_ms=1)
    while chunk := list(islice(views, 100_000)):
        asyncio.run(generate.produce(bootstrap, chunk))


def run_saturation(variant: dict[str, Any], args: argparse.Namespace, work: Path,
                   tag: str) -> dict[str, Any]:
    """The rate at saturation on the backlog (outputs recreated, group deleted first)."""
    admin.run(admin.delete_topics(args.broker, [OUTPUT, DLQ]))
    admin.run(admin.ensure_topics(args.broker, [admin.TopicSpec(t, args.partitions)
                                                for t in (OUTPUT, DLQ)]))
    admin.run(delete_groups(args.broker, [TOPOLOGY]))
    w = WorkerRun(variant, args.broker, work, tag)
    try:
        got = asyncio.run(measure_group(args.broker, TOPOLOGY, [INPUT], warmup_s=args.warmup,
                                        span_s=args.span))
        if w.proc.poll() is not None:
            raise SystemExit(f"worker exited:\n{w.log()[-2000:]}")
    finally:
        code = w.stop()
    return {**got.as_dict(), "events_per_s": round(got.rate, 1), "exit_code": code}


def top_functions(path: Path, n: int = 15) -> list[str]:
    """The ``n`` functions with the most own time, as pstats has them."""
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values()) or 1.0
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    return [f"{tt:7.2f}s {100 * tt / total:4.1f}% own, {ct:7.2f}s cum  {Path(f).name}:{line} "
            f"{func}" for (f, line, func), (_cc, _nc, tt, ct, _callers) in rows]


def summary(values: list[float]) -> dict[str, float]:
    return spread(values, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default=os.environ.get("STREAMS_BROKER", "127.0.0.1:9092"))
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s (default 1000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run")
    parser.add_argument("--backlog", type=int, default=5_000_000,
                        help="views in the saturation backlog (must outlast warm-up + span)")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--span", type=float, default=30.0)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--skip-saturation", action="store_true")
    parser.add_argument("--exactly-once", action="store_true",
                        help="add the exactly_once variant (throughput mode, its default "
                             "commit interval; bench_payments_eos.py runs it by default)")
    parser.add_argument("--eos-intervals", default="",
                        help="comma-separated commit intervals (ms): one more exactly_once "
                             "variant each (the commit-interval table)")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the extra latency-mode run under cProfile")
    parser.add_argument("--baseline-checkout", default=None,
                        help="another checkout of the project to run as variant 'baseline'")
    add_run_options(parser, RESULTS)
    args = parser.parse_args(argv)
    if not admin.broker_answers(args.broker):
        parser.error(f"no Kafka broker answers at {args.broker}")

    variants: dict[str, dict[str, Any]] = {}
    if args.baseline_checkout:
        base = Path(args.baseline_checkout).resolve()
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=base,
                                capture_output=True, text=True).stdout.strip()
        variants["baseline"] = {"checkout": base, "args": [], "commit": commit}
    variants["throughput"] = {"checkout": ROOT, "args": ["--processing-mode", "throughput"]}
    variants["latency"] = {"checkout": ROOT, "args": ["--processing-mode", "latency"]}
    eos_intervals: list[int | None] = [None] if args.exactly_once or args.eos_intervals else []
    eos_intervals += [int(x) for x in args.eos_intervals.split(",") if x.strip()]
    for interval in eos_intervals:
        key = "exactly_once" if interval is None else f"exactly_once@{interval}ms"
        config = Path(scratch_dir(args.work_dir, "bench-latency-config-")) / f"{key}.toml"
        config.write_text('processing_guarantee = "exactly_once"\n' + (
            "" if interval is None else f"commit_interval_ms = {interval}\n"))
        variants[key] = {"checkout": ROOT, "args": ["--processing-mode", "throughput",
                                                    "--config", str(config)],
                         "commit_interval_ms": interval}

    info = RunInfo.start(args, "bench-latency-", _log)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        k: {"latency": [], "throughput": []} for k in variants}
    orders = info.order(list(variants))
    if not args.skip_saturation:
        # every saturation run first, on one backlog (the latency runs recreate the input)
        _log(f"producing the backlog: {args.backlog:,} views")
        produce_backlog(args.broker, args.partitions, args.backlog)
        for rep, order in enumerate(orders):
            for key in order:
                t = run_saturation(variants[key], args, info.work / f"{key}-{rep}",
                                   f"{key}-sat-{rep}")
                runs[key]["throughput"].append(t)
                _log(f"#{rep} {key:<10} saturation: {t['events_per_s']:,.0f} events/s "
                     f"({t['records']} records in {t['seconds']} s)")
    for rep, order in enumerate(orders):
        for key in order:
            r = run_latency(variants[key], args, info.work / f"{key}-{rep}",
                            f"{key}-lat-{rep}")
            runs[key]["latency"].append(r)
            _log(f"#{rep} {key:<10} latency: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                 f"max {r['max_ms']} ms ({r['samples']}/{r['expected']} samples, "
                 f"{r['achieved_rate']}/s); worker metric p50 {r['worker_metric_p50_ms']} ms, "
                 f"p99 {r['worker_metric_p99_ms']} ms")
    profile: dict[str, Any] = {}
    if args.profile:
        prof = info.work / "latency-mode.prof"
        r = run_latency(variants["latency"], args, info.work / "profiled", "latency-profiled",
                        profile=prof)
        profile = {"run": r, "top_own_time": top_functions(prof)}
        _log(f"profiled latency-mode run (not counted): p50 {r['p50_ms']} ms, "
             f"p99 {r['p99_ms']} ms")
        for line in profile["top_own_time"]:
            print("   ", line)

    by_variant: dict[str, Any] = {}
    print(f"\nprofile_notifications, {args.rate:.0f} events/s for {args.seconds:.0f} s; "
          f"saturation over {args.span:.0f} s; {args.repeat} rounds (median [min-max])")
    print(f"{'variant':<11} {'p50 ms':>22} {'p99 ms':>22} {'events/s at saturation':>28}")
    for key in variants:
        lat, tput = runs[key]["latency"], runs[key]["throughput"]
        row: dict[str, Any] = {"p50_ms": summary([r["p50_ms"] for r in lat]),
               "p99_ms": summary([r["p99_ms"] for r in lat])}
        if tput:
            row["events_per_s"] = summary([t["events_per_s"] for t in tput])
        by_variant[key] = row

        def fmt(s: dict[str, float] | None) -> str:
            return "-" if s is None else f"{s['median']:,.1f} [{s['min']:,.1f}-{s['max']:,.1f}]"
        print(f"{key:<11} {fmt(row['p50_ms']):>22} {fmt(row['p99_ms']):>22} "
              f"{fmt(row.get('events_per_s')):>28}")
    head: dict[str, Any] = {}
    for key in ("throughput", "latency"):
        head[f"{key}_mode_p50_ms"] = by_variant[key]["p50_ms"]
        head[f"{key}_mode_p99_ms"] = by_variant[key]["p99_ms"]
        if "events_per_s" in by_variant[key]:
            head[f"{key}_mode_events_per_s"] = by_variant[key]["events_per_s"]
    if "exactly_once" in by_variant:
        head["eos_p50_ms"] = by_variant["exactly_once"]["p50_ms"]
        head["eos_p99_ms"] = by_variant["exactly_once"]["p99_ms"]
        if "events_per_s" in by_variant["exactly_once"]:
            head["eos_over_alos_events_per_s"] = round(
                by_variant["exactly_once"]["events_per_s"]["median"]
                / by_variant["throughput"]["events_per_s"]["median"], 3)
    if "events_per_s" in by_variant["throughput"]:
        head["latency_over_throughput_events_per_s"] = round(
            by_variant["latency"]["events_per_s"]["median"]
            / by_variant["throughput"]["events_per_s"]["median"], 3)
    if "baseline" in by_variant and "events_per_s" in by_variant["baseline"]:
        for key in ("throughput", "latency"):
            head[f"{key}_over_baseline_events_per_s"] = round(
                by_variant[key]["events_per_s"]["median"]
                / by_variant["baseline"]["events_per_s"]["median"], 3)
    eos_default = Settings(processing_guarantee="exactly_once").effective_commit_interval_ms
    table = sorted(({"commit_interval_ms": v.get("commit_interval_ms") or eos_default,
                     **by_variant[k]} for k, v in variants.items()
                    if k.startswith("exactly_once")), key=lambda r: r["commit_interval_ms"])
    if table:
        head["eos_commit_interval_ms"] = eos_default
    print("summary:", json.dumps(head))
    doc = {
        "summary": head,
        "benchmark": "latency",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "broker": args.broker, "rate": args.rate, "seconds": args.seconds,
        "backlog": args.backlog, "warmup_s": args.warmup, "span_s": args.span,
        "repeat": args.repeat, "partitions": args.partitions,
        "measure": {"latency": "external producer (linger 0, ts = send time) -> worker -> "
                               "external consumer (fetch wait 5 ms); receive time - ts of "
                               "every notification after a 3 s warm-up",
                    "throughput": "committed input offsets of the group between two commits "
                                  ">= span apart after a warm-up, on a backlog produced "
                                  "before the worker started (tests/bench/saturation.py)"},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        **info.finish(),
        "variants": {k: {kk: str(vv) for kk, vv in v.items() if kk != "args"}
                     | {"args": v["args"]} for k, v in variants.items()},
        "by_variant": by_variant, "eos_commit_interval_table": table, "runs": runs,
        "profile_latency_mode": profile,
    }
    out = write_results(args.results, json.dumps(doc, indent=2) + "\n")
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
