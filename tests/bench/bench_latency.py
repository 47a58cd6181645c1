"""End-to-end latency and throughput of profile_notifications in both processing modes.

Standalone script (not collected by pytest)::

    python tests/bench/bench_latency.py [--rate 1000 --seconds 20 --repeat 3 --count 200000]
                                        [--baseline-checkout /path/to/other/checkout]

Needs a running broker (``STREAMS_BROKER`` or 127.0.0.1:9092). ``--repeat`` rounds (default 3),
each running every variant once in an order rotated each round (``throughput`` mode,
``latency`` mode, and optionally the same worker from another checkout of the project as a
baseline, e.g. the code before this change); per run (each on fresh topics and a deleted
consumer group):

- **latency**: fresh topics, start ``streams worker profile_notifications``; once it owns its
  partitions, an external producer sends profile views at ``--rate`` events/s for
  ``--seconds`` (after a 3 s warm-up that is not counted), each stamped with its send time
  (``ts`` field = record timestamp), and an external consumer of
  ``profile-view-notifications`` takes ``receive time - ts`` of every notification. Also read
  back: the worker's own ``streams_end_to_end_latency_seconds`` histogram (p50/p99 estimated
  from its buckets), to show the metric and the outside view agree.
- **throughput**: fresh topics, ``--count`` views produced first, then the worker is started;
  events/s = count / (seconds from process start until the output holds every notification),
  as in bench_profile_notifications.py, and also from its partition assignment (without the
  interpreter's start-up).

The producer (linger 0) and the consumer (fetch wait 5 ms) are part of what is measured, as a
user's would be. Results (every run, median and min-max, load average at start and end) go to
``--results`` (default tests/bench/results/latency.json); logs and worker state to one fresh
directory per run (``--work-dir`` names its parent). The machine may be shared: compare
variants within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streams.devtools import generate  # noqa: E402
from streams.serdes import json_dumps  # noqa: E402
from streams.kafka import admin  # noqa: E402
from tests.bench.rounds import RunInfo, add_run_options, delete_groups, spread  # noqa: E402
from tests.bench.rounds import write_results  # noqa: E402

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
    def __init__(self, variant: dict[str, Any], bootstrap: str, work: Path, tag: str) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.log_path = work / f"{tag}.log"
        env = {**os.environ, "STREAMS_BROKER": bootstrap, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": str(variant["checkout"])}
        self._log = open(self.log_path, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", TOPOLOGY, "--state-dir",
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
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=5)
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
                tag: str) -> dict[str, Any]:
    fresh_topics(args.broker, args.partitions)
    w = WorkerRun(variant, args.broker, work, tag)
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


async def _drain_time(w: WorkerRun, bootstrap: str, partitions: int,
                      expected: int) -> tuple[float, float | None]:
    """Seconds from process start, and from its partition assignment, until the output holds
    ``expected`` records (one probe consumer, polled every 20 ms)."""
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await probe.start()
    tps = [TopicPartition(OUTPUT, p) for p in range(partitions)]
    assigned: float | None = None
    try:
        while True:
            n = sum((await probe.end_offsets(tps)).values())
            now = time.monotonic()
            if assigned is None and "assigned" in w.log():
                assigned = now
            if n >= expected:
                return now - w.started, None if assigned is None else now - assigned
            if w.proc.poll() is not None or now - w.started > 300:
                raise SystemExit(f"{n}/{expected} outputs\n{w.log()[-2000:]}")
            await asyncio.sleep(0.02)
    finally:
        await probe.stop()


def run_throughput(variant: dict[str, Any], args: argparse.Namespace, work: Path,
                   tag: str) -> dict[str, Any]:
    fresh_topics(args.broker, args.partitions)
    events = generate.events(TOPOLOGY, args.count, seed=42)
    expected = sum(is_notable(v) for _, _, v in events)
    asyncio.run(generate.produce(args.broker, events))
    w = WorkerRun(variant, args.broker, work, tag)
    try:
        elapsed, since_assigned = asyncio.run(
            _drain_time(w, args.broker, args.partitions, expected))
    finally:
        code = w.stop()
    return {"seconds": round(elapsed, 3), "events_per_s": round(args.count / elapsed, 1),
            "seconds_after_assignment": None if since_assigned is None
            else round(since_assigned, 3),
            "events_per_s_after_assignment": None if not since_assigned
            else round(args.count / since_assigned, 1),
            "expected": expected, "exit_code": code}


def summary(values: list[float]) -> dict[str, float]:
    return spread(values, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default=os.environ.get("STREAMS_BROKER", "127.0.0.1:9092"))
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s (default 1000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run")
    parser.add_argument("--count", type=int, default=200_000, help="events for throughput")
    parser.add_argument("--partitions", type=int, default=4)
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

    info = RunInfo.start(args, "bench-latency-", _log)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        k: {"latency": [], "throughput": []} for k in variants}
    for rep, order in enumerate(info.order(list(variants))):
        for key in order:
            variant = variants[key]
            work = info.work / f"{key}-{rep}"   # own state dir per run
            r = run_latency(variant, args, work, f"{key}-lat-{rep}")
            runs[key]["latency"].append(r)
            _log(f"#{rep} {key:<10} latency: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                 f"max {r['max_ms']} ms ({r['samples']}/{r['expected']} samples, "
                 f"{r['achieved_rate']}/s); worker metric p50 {r['worker_metric_p50_ms']} ms, "
                 f"p99 {r['worker_metric_p99_ms']} ms")
            t = run_throughput(variant, args, work, f"{key}-tput-{rep}")
            runs[key]["throughput"].append(t)
            _log(f"#{rep} {key:<10} throughput: {t['events_per_s']:,.0f} events/s "
                 f"({t['seconds']} s from start; {t['events_per_s_after_assignment']} events/s "
                 f"after the assignment)")

    report: dict[str, Any] = {}
    print(f"\nprofile_notifications, {args.rate:.0f} events/s for {args.seconds:.0f} s, "
          f"{args.count} events for throughput, {args.repeat} repeats (median [min-max])")
    print(f"{'variant':<11} {'p50 ms':>22} {'p99 ms':>22} {'events/s':>28} "
          f"{'events/s after assignment':>28}")
    for key in variants:
        lat, tput = runs[key]["latency"], runs[key]["throughput"]
        rep = {"p50_ms": summary([r["p50_ms"] for r in lat]),
               "p99_ms": summary([r["p99_ms"] for r in lat]),
               "events_per_s": summary([t["events_per_s"] for t in tput]),
               "events_per_s_after_assignment": summary(
                   [t["events_per_s_after_assignment"] or 0.0 for t in tput])}
        report[key] = rep

        def fmt(s: dict[str, float]) -> str:
            return f"{s['median']:,.1f} [{s['min']:,.1f}-{s['max']:,.1f}]"
        print(f"{key:<11} {fmt(rep['p50_ms']):>22} {fmt(rep['p99_ms']):>22} "
              f"{fmt(rep['events_per_s']):>28} "
              f"{fmt(rep['events_per_s_after_assignment']):>28}")
    ratios = {}
    for measure in ("events_per_s", "events_per_s_after_assignment"):
        if "baseline" in report:
            for key in ("throughput", "latency"):
                ratios[f"{key}_over_baseline_{measure}"] = round(
                    report[key][measure]["median"] / report["baseline"][measure]["median"], 3)
        ratios[f"latency_over_throughput_{measure}"] = round(
            report["latency"][measure]["median"] / report["throughput"][measure]["median"], 3)
    print("ratios:", json.dumps(ratios))
    doc = {
        "benchmark": "latency",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "broker": args.broker, "rate": args.rate, "seconds": args.seconds,
        "count": args.count, "repeat": args.repeat, "partitions": args.partitions,
        "measure": {"latency": "external producer (linger 0, ts = send time) -> worker -> "
                               "external consumer (fetch wait 5 ms); receive time - ts of "
                               "every notification after a 3 s warm-up",
                    "throughput": "count / seconds from worker start (and from its partition "
                                  "assignment) until the output holds every expected "
                                  "notification (input produced first)"},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        **info.finish(),
        "variants": {k: {kk: str(vv) for kk, vv in v.items() if kk != "args"}
                     | {"args": v["args"]} for k, v in variants.items()},
        "summary": report, "ratios": ratios, "runs": runs,
    }
    out = write_results(args.results, json.dumps(doc, indent=2) + "\n")
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
