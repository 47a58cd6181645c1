"""What a stream-table or global-table join costs per record, against a map in the same run.

Standalone script (not collected by pytest), no broker::

    python tests/bench/bench_table_joins.py [--count 200000 --rows 10000 --repeat 3]

Each variant runs in the TopologyTestDriver (the worker's batch processors, RocksDB stores and
commit protocol over in-memory topics) on the same COUNT transactions, piped in batches of
5000 as a worker polls them, after ROWS reference rows were loaded and committed:

  a. baseline: ``stream.map(enrich-like dict build).to(out)``;
  b. ``stream.join(table, joiner).to(out)`` (a co-partitioned table);
  c. ``stream.join(global_table, key_selector, joiner).to(out)``.

The time covers piping the transactions and the final commit. ``--repeat`` rounds (default 3)
each run every variant once, in an order rotated each round (map table global, table global
map, ...). Prints the median and min-max records/s per variant and the ratios b/a and c/a of
the medians, and writes them with the load average at start and end to ``--results`` (default
tests/bench/results/table_joins.json). The drivers' state goes under one fresh directory per
run (``--work-dir`` names its parent).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streams import Topology  # noqa: E402
from streams.testing import TopologyTestDriver  # noqa: E402
from tests.bench.rounds import RunInfo, add_run_options, fmt_spread, spread  # noqa: E402
from tests.bench.rounds import write_results  # noqa: E402

BATCH = 5000
RESULTS = Path(__file__).resolve().parent / "results" / "table_joins.json"


def joiner(txn: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    return {"txn_id": txn["txn_id"], "amount": txn["amount"], "name": row["name"]}


def topology(variant: str) -> Topology:
    t = Topology(f"bench-{variant}")
    rows = t.table("rows") if variant == "table" else None
    grows = t.global_table("grows") if variant == "global" else None
    s = t.stream("txns")
    if variant == "map":
        s = s.map(lambda txn: joiner(txn, {"name": txn["ref"]}))
    elif variant == "table":
        s = s.join(rows, joiner)
    else:
        s = s.join(grows, lambda _k, txn: txn["ref"], joiner)
    s.to("out")
    return t


def run(variant: str, count: int, rows: int, state: Path) -> float:
    with TopologyTestDriver(topology(variant), state_dir=state, commit_every=50_000) as d:
        ref = "rows" if variant != "global" else "grows"
        if variant != "map":
            d.pipe_batch(ref, [(f"k{i}", {"name": f"name-{i}"}, 0) for i in range(rows)])
            d.commit()
        txns = [(f"k{i % rows}", {"txn_id": f"t{i}", "ref": f"k{i % rows}", "amount": "1.00"}, 0)
                for i in range(count)]
        started = time.perf_counter()
        for i in range(0, count, BATCH):
            d.pipe_batch("txns", txns[i:i + BATCH])
        d.commit()
        elapsed = time.perf_counter() - started
        assert len(d.read_records("out")) == count
    return count / elapsed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--rows", type=int, default=10_000)
    add_run_options(ap, RESULTS)
    args = ap.parse_args(argv)
    info = RunInfo.start(args, "bench-table-joins-")
    rates: dict[str, list[float]] = {v: [] for v in ("map", "table", "global")}
    for rnd, order in enumerate(info.order(list(rates)), start=1):
        for v in order:
            rates[v].append(run(v, args.count, args.rows, info.work / f"{v}-{rnd}"))
    med = {v: spread(r, 0) for v, r in rates.items()}
    labels = {"map": "stream map (no join): baseline", "table": "stream-table join",
              "global": "stream-global-table join"}
    result = {"summary": {"rows": [{"label": labels[v], "unit": "records/s", **med[v],
                                    "note": "in-process test driver, no broker"}
                                   for v in med], "measurement": args.repeat >= 3},
              "count": args.count, "rows": args.rows,
              "python": platform.python_version(),
              "records_per_s": med,
              "records_per_s_runs": {v: [round(x) for x in r] for v, r in rates.items()},
              "table_over_map": round(med["table"]["median"] / med["map"]["median"], 3),
              "global_over_map": round(med["global"]["median"] / med["map"]["median"], 3),
              **info.finish()}
    for v, s in med.items():
        print(f"{v:7s} {fmt_spread(s):>28} records/s (median [min-max])")
    print(f"table/map {result['table_over_map']}, global/map {result['global_over_map']} "
          f"(medians); load average {result['load_average_1_5_15_min']}")
    out = write_results(args.results, json.dumps(result, indent=2) + "\n")
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
