"""Every benchmark in one command, in sequence, each with its defaults; then the README's
performance table and a chart from the benchmarks' results::

    python -m tests.bench.run_all --broker 127.0.0.1:9092            # the full run (1 h +)
    python -m tests.bench.run_all --broker 127.0.0.1:9092 --quick    # functional check (~15 min)
    python -m tests.bench.run_all --only windows-city,joins           # a subset
    python -m tests.bench.run_all --table-only                        # table + chart from the
                                                                      # results already there

Each benchmark writes its results JSON (``--results``); the runner reads its top-level
``summary``, a dict in one of three shapes (see :func:`summary_rows`)::

    {"rows": [{"label": "streams", "unit": "events/s", "median": 1.0, "min": 0.9, "max": 1.1,
               "rounds": 3, "load": [1.2, 1.0, 0.9], "note": "..."}, ...]}
    {"label": ..., "unit": ..., "median": ..., "min": ..., "max": ...}       # a single row
    {"eos_p99_ms": {"median": ..., "min": ..., "max": ...}, ...}             # named spreads

On a shared 2-core machine at load ~10 the windows (3 workloads) and joins benchmarks alone
took 40 min at their defaults (input generation 8 min of it), the quick run 15 min.

``rounds`` and ``load`` may be left out of a row: the runner takes them from the results'
top-level ``rounds`` and ``load_average_1_5_15_min.start``. A benchmark whose results file has
no ``summary`` (or that failed) gets one row saying ``n/a``.

The full run writes the results under tests/bench/results/ (each benchmark's default file),
the table between ``<!-- bench-table:start -->`` and ``<!-- bench-table:end -->`` in
README.md, and tests/bench/results/benchmarks.png. ``--quick`` (small inputs, 1 round: not a
measurement, and every row says so) writes everything under a scratch directory and leaves
README.md alone unless ``--readme`` names it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RESULTS_DIR = HERE / "results"
README = ROOT / "README.md"
START = "<!-- bench-table:start -->"
END = "<!-- bench-table:end -->"
NA = "n/a"


@dataclass(frozen=True)
class Bench:
    """One benchmark: its script, the arguments of a full and of a quick run, and the file its
    results go to (under the results directory)."""
    name: str
    script: str
    results: str
    args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ("--repeat", "1")
    takes_broker: bool = True      # has --broker (else the broker goes in STREAMS_BROKER only)
    what: str = ""

    def command(self, broker: str, results: Path, quick: bool) -> list[str]:
        cmd = [sys.executable, f"tests/bench/{self.script}", *self.args]
        if quick:
            cmd += self.quick_args
        if self.takes_broker:
            cmd += ["--broker", broker]
        return cmd + ["--results", str(results)]


BENCHES: tuple[Bench, ...] = (
    Bench("windows-city", "bench_windows.py", "windows.json", ("--workload", "city"),
          ("--repeat", "1", "--count", "300000", "--span", "8", "--warmup", "2"),
          what="1-min tumbling windows, 20 keys, emit final, at saturation"),
    Bench("windows-keys-update", "bench_windows.py", "windows_keys_update.json",
          ("--workload", "keys-update"),
          ("--repeat", "1", "--count", "200000", "--span", "8", "--warmup", "2"),
          what="1-min tumbling windows, 100k keys, emit on every update, at saturation"),
    Bench("windows-repartition", "bench_windows.py", "windows_driver_repartition.json",
          ("--workload", "driver-repartition"),
          ("--repeat", "1", "--count", "60000", "--span", "8", "--warmup", "2"),
          what="windows per driver behind a repartition, on a backlog, at saturation"),
    Bench("joins", "bench_joins.py", "joins.json", (),
          ("--repeat", "1", "--count", "100000", "--span", "8", "--warmup", "2"),
          what="stream-stream join, 1M orders"),
    Bench("table-joins", "bench_table_joins.py", "table_joins.json", (),
          ("--repeat", "1", "--count", "20000"), takes_broker=False,
          what="stream-table / global-table join (test driver, no broker)"),
    Bench("profile-notifications", "bench_profile_notifications.py",
          "profile_notifications.json", (), ("--repeat", "1", "--count", "20000"),
          what="profile notifications"),
    Bench("latency", "bench_latency.py", "latency.json", (),
          ("--repeat", "1", "--seconds", "5", "--backlog", "1500000", "--span", "8",
           "--warmup", "2"), what="end-to-end latency"),
    Bench("payments-eos", "bench_payments_eos.py", "payments_eos.json", (),
          ("--repeat", "1", "--backlog", "400000", "--latency-seconds", "5", "--span", "8",
           "--warmup", "2", "--no-profile"), takes_broker=False,
          what="payments, exactly-once"),
    Bench("restore", "bench_restore.py", "restore.json", (),
          ("--repeat", "1", "--keys", "20000"), what="state restore from the changelog"),
    Bench("agent-overhead", "bench_agent_overhead.py", "agent_overhead.json", (),
          ("--repeat", "1", "--count", "2000000", "--span", "8", "--warmup", "2"),
          what="agent vs declarative overhead, whole worker with commits, at saturation"),
    Bench("failover", "bench_failover.py", "failover.json", (), ("--repeat", "1"),
          what="task failover with standby replicas"),
)


# -- summaries -> rows -----------------------------------------------------------------------------
@dataclass
class Row:
    bench: str
    label: str
    unit: str = ""
    median: float | None = None
    min: float | None = None
    max: float | None = None
    rounds: int | None = None
    load: list[float] | None = None
    command: str = ""
    note: str = ""
    quick: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def summary_rows(bench: str, doc: dict[str, Any] | None, command: str,
                 quick: bool = False) -> list[Row]:
    """The rows of one benchmark's results document (``None``: no results file): one per entry
    of ``summary["rows"]`` (or the summary itself when it has ``median``); a single ``n/a`` row
    when there is no usable summary."""
    summary = (doc or {}).get("summary")
    entries: list[dict[str, Any]] = []
    if isinstance(summary, dict):
        if isinstance(summary.get("rows"), list):
            entries = [e for e in summary["rows"] if isinstance(e, dict)]
        elif "median" in summary:
            entries = [summary]
        else:
            entries = named_spreads(summary)
    if not entries:
        return [Row(bench, NA, command=command, quick=quick)]
    assert doc is not None
    load_doc = doc.get("load_average_1_5_15_min")
    default_load = load_doc.get("start") if isinstance(load_doc, dict) else None
    rows = []
    for e in entries:
        rows.append(Row(bench, str(e.get("label", bench)), str(e.get("unit", "")),
                        _num(e.get("median")), _num(e.get("min")), _num(e.get("max")),
                        e.get("rounds", doc.get("rounds")), e.get("load", default_load),
                        command, str(e.get("note", "")), quick))
    return rows


def named_spreads(summary: dict[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    """The third shape: ``{"eos_p99_ms": {"median", "min", "max"}, "eos_commit_interval_ms":
    100, "standby1": {"takeover_s": {...}}}`` -- one row per named spread or number (nested
    names joined), its unit from the name's ending.

    >>> [(r["label"], r["unit"], r["median"]) for r in named_spreads(
    ...     {"eos_p99_ms": {"median": 417.3, "min": 382.3, "max": 459.1},
    ...      "standby1": {"takeover_s": {"median": 0.22, "min": 0.17, "max": 0.24}},
    ...      "restore_over_raw": {"median": 0.64, "min": 0.48, "max": 0.66}})]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('eos p99 ms', 'ms', 417.3), ('standby1 takeover s', 's', 0.22),
     ('restore over raw', 'ratio', 0.64)]
    """
    rows: list[dict[str, Any]] = []
    for name, value in summary.items():
        label = f"{prefix}{name}"
        if isinstance(value, dict) and "median" in value:
            rows.append({**value, "label": label.replace("_", " "), "unit": _unit_of(label)})
        elif isinstance(value, dict):
            rows += named_spreads(value, f"{label} ")
        elif _num(value) is not None:
            rows.append({"label": label.replace("_", " "), "unit": _unit_of(label),
                         "median": value})
    return rows


def _unit_of(name: str) -> str:
    if "_over_" in name:
        return "ratio"
    for suffix, unit in (("events_per_s", "events/s"), ("_ms", "ms"), ("_s", "s")):
        if name.endswith(suffix):
            return unit
    return ""


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _fmt(x: float | None) -> str:
    if x is None:
        return NA
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:,.3g}"


def table_markdown(rows: Sequence[Row], heading: str = "") -> str:
    """The performance table: one line per row, every line with its command, median, min-max,
    rounds and load average (1/5/15 min, at the benchmark's start)."""
    lines = []
    if heading:
        lines += [heading, ""]
    lines += ["| benchmark | variant | median | min–max | unit | rounds | load 1/5/15 | note | "
              "command |",
              "|---|---|---:|---|---|---:|---|---|---|"]
    for r in rows:
        span = NA if r.min is None or r.max is None else f"{_fmt(r.min)}–{_fmt(r.max)}"
        load = NA if not r.load else "/".join(f"{x:.2f}" for x in r.load)
        note = r.note
        if r.quick:
            note = ("quick check, not a measurement; " + note).rstrip("; ")
        lines.append(f"| {r.bench} | {r.label} | {_fmt(r.median)} | {span} | {r.unit or NA} | "
                     f"{NA if r.rounds is None else r.rounds} | {load} | "
                     f"{note.replace('|', '/')} | `{r.command}` |")
    return "\n".join(lines) + "\n"


def replace_between_markers(text: str, block: str, start: str = START, end: str = END) -> str:
    """``text`` with what lies between the markers replaced by ``block``; the markers (and a
    section holding them) are appended when ``text`` has none."""
    i, j = text.find(start), text.find(end)
    if i < 0 or j < 0 or j < i:
        if i >= 0 or j >= 0:
            raise ValueError(f"README has one of {start} / {end} but not both in order")
        return text.rstrip("\n") + f"\n\n## Performance\n\n{start}\n{block}{end}\n"
    return text[:i + len(start)] + "\n" + block + text[j:]


def write_table(readme: Path, rows: Sequence[Row], heading: str = "") -> None:
    readme.write_text(replace_between_markers(readme.read_text(), table_markdown(rows, heading)))


def write_chart(path: Path, rows: Sequence[Row]) -> str | None:
    """One panel per benchmark: median bars with min-max whiskers. None when written, else why
    not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install -e '.[bench]'): no chart"
    benches: dict[str, list[Row]] = {}
    for r in rows:
        if r.median is not None:
            benches.setdefault(r.bench, []).append(r)
    if not benches:
        return "no numbers to chart"
    fig, axes = plt.subplots(len(benches), 1, figsize=(9, 2.2 * len(benches) + 0.5),
                             squeeze=False)
    for ax, (bench, rs) in zip(axes[:, 0], benches.items(), strict=True):
        med = [r.median or 0.0 for r in rs]
        lo = [max(0.0, m - (r.min if r.min is not None else m)) for m, r in zip(med, rs,
                                                                                 strict=True)]
        hi = [max(0.0, (r.max if r.max is not None else m) - m) for m, r in zip(med, rs,
                                                                                strict=True)]
        labels = [r.label for r in rs]
        ax.barh(labels, med, xerr=[lo, hi], color="#1f77b4", ecolor="black", capsize=3)
        for y, m in enumerate(med):
            ax.annotate(_fmt(m), (m, y), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=7)
        unit = rs[0].unit
        quick = " (quick check, not a measurement)" if rs[0].quick else ""
        ax.set_title(f"{bench}: median, min-max over {rs[0].rounds or '?'} round(s){quick}",
                     fontsize=9)
        ax.set_xlabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.invert_yaxis()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


# -- running ---------------------------------------------------------------------------------------
def load_results(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def run_bench(b: Bench, broker: str, results: Path, quick: bool, log_dir: Path,
              timeout: float) -> dict[str, Any]:
    """Run one benchmark; its exit code, seconds and log."""
    cmd = b.command(broker, results, quick)
    log_path = log_dir / f"{b.name}.log"
    script = ROOT / "tests" / "bench" / b.script
    if not script.exists():
        return {"exit_code": None, "seconds": 0.0, "log": None, "skipped": "no such script"}
    env = {**os.environ, "STREAMS_BROKER": broker, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
               os.pathsep)}
    started = time.monotonic()
    with open(log_path, "wb") as fh:
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    return {"exit_code": code, "seconds": round(time.monotonic() - started, 1),
            "log": str(log_path)}


def display_command(b: Bench, quick: bool) -> str:
    """The command a reader can run for this row (without the runner's --results)."""
    args = [*b.args, *(b.quick_args if quick else ())]
    return shlex.join(["python", f"tests/bench/{b.script}", *args])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--broker", default=os.environ.get("STREAMS_BROKER", "127.0.0.1:9092"))
    ap.add_argument("--quick", action="store_true",
                    help="small inputs, 1 round: a functional check, not a measurement")
    ap.add_argument("--only", default=None,
                    help=f"run only these (comma-separated: {','.join(b.name for b in BENCHES)}"
                         f"); the table still lists every benchmark, from its last results")
    ap.add_argument("--results-dir", default=None,
                    help="where results, chart and logs go (default tests/bench/results; with "
                         "--quick a fresh scratch directory)")
    ap.add_argument("--readme", default=None,
                    help="file whose bench-table markers get the table (default README.md; "
                         "with --quick <results-dir>/table.md)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per benchmark")
    ap.add_argument("--table-only", action="store_true",
                    help="run nothing: table and chart from the results already there")
    args = ap.parse_args(argv)

    chosen = list(BENCHES)
    if args.only:
        names = args.only.split(",")
        unknown = set(names) - {b.name for b in BENCHES}
        if unknown:
            ap.error(f"--only: unknown {sorted(unknown)}")
        chosen = [b for b in BENCHES if b.name in names]
    if args.results_dir:
        out_dir = Path(args.results_dir)
    elif args.quick:
        out_dir = Path(tempfile.mkdtemp(prefix="bench-quick-"))
    else:
        out_dir = RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    # the benchmarks' own logs and scratch files stay out of the results directory (committed)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-run-all-logs-"))
    readme = Path(args.readme) if args.readme else (out_dir / "table.md" if args.quick
                                                    else README)
    if not readme.exists():
        readme.write_text(f"{START}\n{END}\n")

    started = time.monotonic()
    runs: dict[str, dict[str, Any]] = {}
    rows: list[Row] = []
    for b in BENCHES:   # the table has every benchmark: those not run keep their last results
        results = out_dir / b.results
        if b in chosen and not args.table_only:
            print(f"[run_all {time.strftime('%H:%M:%S')}] {b.name}: "
                  f"{shlex.join(b.command(args.broker, results, args.quick))}", flush=True)
            runs[b.name] = run_bench(b, args.broker, results, args.quick, log_dir, args.timeout)
            print(f"[run_all {time.strftime('%H:%M:%S')}] {b.name}: exit "
                  f"{runs[b.name]['exit_code']} after {runs[b.name]['seconds']} s", flush=True)
        rows += summary_rows(b.name, load_results(results), display_command(b, args.quick),
                             args.quick)
    total = round(time.monotonic() - started, 1)
    heading = (f"Measured {time.strftime('%Y-%m-%d')} with `python -m tests.bench.run_all"
               f"{' --quick' if args.quick else ''}` on {os.cpu_count()} cores shared with "
               f"other work (load = the 1/5/15-min load average as each benchmark started); "
               f"medians and min–max over the rounds, variants interleaved.")
    write_table(readme, rows, heading)
    chart = out_dir / "benchmarks.png"
    chart_note = write_chart(chart, rows)
    # the runs of earlier invocations (of benchmarks not run this time) are kept
    previous = load_results(out_dir / "run_all.json") or {}
    kept = {n: r for n, r in (previous.get("runs") or {}).items() if n not in runs}
    (out_dir / "run_all.json").write_text(json.dumps(
        {"quick": args.quick, "broker": args.broker,
         "invocations": (previous.get("invocations") or []) + (
             [{"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ran": list(runs),
               "seconds_total": total}] if runs else []),
         "runs": {**kept, **runs},
         "logs": str(log_dir),
         "rows": [r.__dict__ for r in rows], "chart": None if chart_note else str(chart)},
        indent=2) + "\n")
    print(table_markdown(rows))
    print(f"table written to {readme}; {chart_note or f'chart {chart}'}; "
          f"{total:.0f} s in all")
    failed = [n for n, r in runs.items() if r.get("exit_code") not in (0, None)
              or r.get("exit_code") is None and not r.get("skipped")]
    if failed:
        print(f"failed: {', '.join(failed)} (see {log_dir})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
