"""Benchmark: failover of a stateful task after kill -9 of its owner, with and without a
standby replica.

Topology (tests/bench/failover_runner.py): ``failover-in`` (1 partition) -> per-key count and
running total, table ``failover-totals`` (the shape of trip_stats' driver totals) -> every
update to ``failover-out``. State: ``--keys`` distinct keys (default 1,000,000).

Steps:

1. Once: recreate the topics, produce one record per key, run one worker until the group has
   committed all of them (its changelog then holds ``--keys`` records), stop it.
2. Each round runs the variants ``standby0`` (num_standby_replicas = 0, today's behaviour) and
   ``standby1`` in a rotated order. A variant: fresh state dirs; worker A starts and restores
   the table from the changelog; worker B joins. With a standby, B keeps a standby copy and the
   benchmark waits until B's copy has read the whole changelog (its RocksDB meta, read-only).
   Without, the benchmark makes sure that B never held the task (range assignment may move the
   task to B when it joins; then both stop and the variant starts over), so B has no state.
3. kill -9 of A, then one probe record to ``failover-in``. Measured (wall clock of this
   process and the workers' log timestamps, one host): ``total`` = kill -> the probe's output
   read from ``failover-out``; ``detect`` = kill -> B's new assignment (bounded below by the
   session timeout: the group only notices a killed member when its session expires);
   ``takeover`` = B's new assignment -> the probe's output (opening, restoring, processing);
   the changelog records B restored on promotion (from its log).

Both workers: session_timeout_ms 6000 (``--session-timeout-ms``; the broker's default
group.min.session.timeout.ms), other settings default (at-least-once, throughput mode).

Usage:
  python tests/bench/bench_failover.py --broker 127.0.0.1:9092 --keys 1000000
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
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streams.kafka.admin import committed_offsets, delete_topics, ensure_topics  # noqa: E402
from streams.runtime.compile import subtopologies  # noqa: E402
from streams.runtime.topics import topic_specs  # noqa: E402
from streams.state.meta import TaskMeta  # noqa: E402
from streams.state.store import TaskStore  # noqa: E402
from tests.bench.failover_runner import IN_TOPIC, OUT_TOPIC, TABLE, topology  # noqa: E402
from tests.bench.rounds import (RunInfo, add_run_options, delete_groups,  # noqa: E402
                                fmt_spread, spread, write_results)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "failover.json"
RUNNER = HERE / "failover_runner.py"
GROUP = topology.name
(SUB,) = [s for s in subtopologies(topology) if s.stores]
TASK = f"{SUB.id}_0"
CHANGELOG = topology.stores[TABLE].changelog
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", re.M)


def log(msg: str) -> None:
    print(msg, flush=True)


# -- workers --------------------------------------------------------------------------------------
class Worker:
    def __init__(self, broker: str, state: Path, log_path: Path, standbys: int,
                 session_timeout_ms: int) -> None:
        self.state, self.log_path = state, log_path
        env = {**os.environ, "BENCH_BROKER": broker, "BENCH_STATE_DIR": str(state),
               "FAILOVER_STANDBYS": str(standbys),
               "FAILOVER_SESSION_TIMEOUT_MS": str(session_timeout_ms), "PYTHONUNBUFFERED": "1"}
        self._out = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, str(RUNNER)], stdout=self._out,
                                     stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, what: str, pattern: str, start: int = 0, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log()[start:]):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited while waiting for {what}:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}:\n{self.log()[-3000:]}")

    def last_assignment(self) -> str:
        lines = [ln for ln in self.log().splitlines() if "assigned " in ln and "-> tasks" in ln]
        return lines[-1] if lines else ""

    def owns_task(self) -> bool:
        return f"'{TASK}'" in self.last_assignment()

    def ever_owned_task(self) -> bool:
        return any(f"'{TASK}'" in ln for ln in self.log().splitlines() if "-> tasks" in ln)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._out.close()


def log_time(line_start: str) -> float:
    found = LOG_TIME.match(line_start)
    assert found, line_start
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


# -- setup ----------------------------------------------------------------------------------------
async def produce_keys(broker: str, keys: int) -> float:
    started = time.monotonic()
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks=1, linger_ms=20,
                                max_batch_size=1024 * 1024)
    await producer.start()
    try:
        futures = []
        batch = producer.create_batch()
        for i in range(keys):
            key, value = b"key-%08d" % i, b'{"v":%d}' % (i % 100)
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, IN_TOPIC, partition=0))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        futures.append(await producer.send_batch(batch, IN_TOPIC, partition=0))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def reset_topics(broker: str) -> None:
    await delete_groups(broker, [GROUP])
    names = [s.name for s in topic_specs(topology, 1)]
    await delete_topics(broker, names)
    await ensure_topics(broker, topic_specs(topology, 1))


def build_state(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Topics, input and the changelog of ``--keys`` keys, built by one worker."""
    asyncio.run(reset_topics(args.broker))
    produce_s = asyncio.run(produce_keys(args.broker, args.keys))
    log(f"produced {args.keys:,} input records in {produce_s:.1f}s")
    started = time.monotonic()
    w = Worker(args.broker, work / "setup-state", work / "setup.log", 0,
               args.session_timeout_ms)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            done = asyncio.run(committed_offsets(args.broker, GROUP, [IN_TOPIC]))
            if done.get((IN_TOPIC, 0), 0) >= args.keys:
                break
            if w.proc.poll() is not None:
                raise RuntimeError(f"setup worker exited:\n{w.log()[-3000:]}")
            time.sleep(1)
        else:
            raise RuntimeError("setup worker did not process the input in 900s")
    finally:
        w.stop()
    build_s = time.monotonic() - started
    log(f"state of {args.keys:,} keys built by one worker in {build_s:.1f}s")
    return {"produce_seconds": round(produce_s, 2), "build_seconds": round(build_s, 2)}


async def changelog_end(broker: str) -> int:
    c = AIOKafkaConsumer(bootstrap_servers=broker)
    await c.start()
    try:
        tp = TopicPartition(CHANGELOG, 0)
        return (await c.end_offsets([tp]))[tp]
    finally:
        await c.stop()


def standby_position(state: Path) -> int:
    path = state / topology.name / TASK
    if not (path / "CURRENT").exists():
        return -1
    try:
        store = TaskStore(path, [TABLE], read_only=True)
    except Exception:  # noqa: BLE001 - being created right now: try again
        return -1
    try:
        return TaskMeta.decode(store.meta()).changelog.get(CHANGELOG, 0)
    finally:
        store.close()


# -- one failover ---------------------------------------------------------------------------------
async def wait_probe(broker: str, key: bytes, start: dict[TopicPartition, int],
                     timeout: float) -> float:
    c = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
    await c.start()
    try:
        tp = TopicPartition(OUT_TOPIC, 0)
        c.assign([tp])
        c.seek(tp, start[tp])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await c.getmany(tp, timeout_ms=20)
            for rec in batch.get(tp, []):
                if rec.key == key:
                    return time.time()
        raise RuntimeError("the probe's output never arrived")
    finally:
        await c.stop()


async def out_end(broker: str) -> dict[TopicPartition, int]:
    c = AIOKafkaConsumer(bootstrap_servers=broker)
    await c.start()
    try:
        tp = TopicPartition(OUT_TOPIC, 0)
        return await c.end_offsets([tp])
    finally:
        await c.stop()


async def send_probe(broker: str, key: bytes) -> None:
    p = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await p.start()
    try:
        await p.send_and_wait(IN_TOPIC, b'{"v":1}', key=key, partition=0)
    finally:
        await p.stop()


def settle(args: argparse.Namespace, run_dir: Path, standbys: int) -> tuple[Worker, Worker]:
    """Owner A running the task, B in the group (with a caught-up standby copy, or none)."""
    for attempt in range(8):
        d = run_dir / f"try{attempt}"
        d.mkdir(parents=True)
        a = Worker(args.broker, d / "a", d / "a.log", standbys, args.session_timeout_ms)
        a.wait("A running", r"tasks running")
        b = Worker(args.broker, d / "b", d / "b.log", standbys, args.session_timeout_ms)
        b.wait("B running", r"tasks running")
        a.wait("A after B joined", r"tasks running(.|\n)*tasks running")
        if a.owns_task() and not b.ever_owned_task():
            break
        log(f"  (the task moved to B when it joined: starting over, attempt {attempt + 2})")
        b.stop()
        a.stop()
    else:
        raise RuntimeError("could not get A to keep the task")
    if standbys:
        end = asyncio.run(changelog_end(args.broker))
        deadline = time.monotonic() + 300
        while standby_position(b.state) < end:
            if time.monotonic() > deadline:
                raise RuntimeError(f"B's standby did not catch up:\n{b.log()[-3000:]}")
            time.sleep(0.5)
    else:
        assert not (b.state / topology.name / TASK).exists(), "B holds state of the task"
    return a, b


def failover(args: argparse.Namespace, run_dir: Path, standbys: int, probe: bytes
             ) -> dict[str, Any]:
    a, b = settle(args, run_dir, standbys)
    time.sleep(2)  # (both idle: the next commit interval passed)
    try:
        start = asyncio.run(out_end(args.broker))
        mark = len(b.log())
        killed_at = time.time()
        a.kill()
        asyncio.run(send_probe(args.broker, probe))
        out_at = asyncio.run(wait_probe(args.broker, probe, start, timeout=300))
        after = b.log()[mark:]
    finally:
        b.stop()
        if a.proc.poll() is None:
            a.kill()
    assigned = [ln for ln in after.splitlines() if "-> tasks" in ln and f"'{TASK}'" in ln]
    assert assigned, after[-3000:]
    assigned_at = log_time(assigned[0])
    restored = sum(int(n) for n in re.findall(r"restored (\d+) of \d+ changelog", after))
    resumed = f"task {TASK}: resume" in after
    return {"total_s": round(out_at - killed_at, 3), "detect_s": round(assigned_at - killed_at, 3),
            "takeover_s": round(out_at - assigned_at, 3), "restored_records": restored,
            "resumed_without_restore": resumed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--broker", default=os.environ.get("STREAMS_BROKER", "127.0.0.1:9092"))
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--session-timeout-ms", type=int, default=6000)
    add_run_options(ap, RESULTS)
    args = ap.parse_args()
    run = RunInfo.start(args, "failover-bench-", log)
    setup = build_state(args, run.work)
    runs: dict[str, list[dict[str, Any]]] = {"standby0": [], "standby1": []}
    for r, order in enumerate(run.order(["standby0", "standby1"])):
        for variant in order:
            standbys = int(variant[-1])
            one = failover(args, run.work / f"round{r}-{variant}", standbys,
                           b"probe-%d-%s" % (r, variant.encode()))
            runs[variant].append(one)
            log(f"round {r + 1} {variant}: total {one['total_s']:.2f}s (detect "
                f"{one['detect_s']:.2f}s, takeover {one['takeover_s']:.2f}s), restored "
                f"{one['restored_records']:,} changelog records")
    summary = {v: {k: spread([x[k] for x in rs]) for k in ("total_s", "detect_s", "takeover_s")}
               for v, rs in runs.items()}
    for v, s in summary.items():
        log(f"{v}: total {fmt_spread(s['total_s'], 2)} s, detect {fmt_spread(s['detect_s'], 2)}"
            f" s, takeover {fmt_spread(s['takeover_s'], 2)} s")
    doc = {"benchmark": "failover", "broker": args.broker, "keys": args.keys,
           "session_timeout_ms": args.session_timeout_ms,
           "topology": "failover-in (1 partition) -> per-key count + total table -> "
                       "failover-out (tests/bench/failover_runner.py)",
           "python": platform.python_version(), "platform": platform.platform(),
           "cpus": os.cpu_count(), **run.finish(), "setup": setup, "summary": summary,
           "runs": runs}
    path = write_results(args.results, json.dumps(doc, indent=2) + "\n")
    log(f"results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
