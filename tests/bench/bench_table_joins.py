"""What a stream-table or global-table join costs per record, against a map in the same run.

Standalone script (not collected by pytest), no broker::

    python tests/bench/bench_table_joins.py [--count 200000 --rows 10000 --repeat 3]

Each variant runs in the TopologyTestDriver (the worker's batch processors, RocksDB stores and
commit protocol over in-memory topics) on the same COUNT transactions, piped in batches of
5000 as a worker polls them, after ROWS reference rows were loaded and committed:

  a. baseline: ``stream.map(enrich-like dict build).to(out)``;
  b. ``stream.join(table, joiner).to(out)`` (a co-partitioned table);
  c. ``stream.join(global_table, key_selector, joiner).to(out)``.

The time covers piping the transactions and the final commit. Prints records/s per variant and
the ratios b/a and c/a (best of REPEAT runs each), and writes them to
tests/bench/results/table_joins.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from streams import Topology
from streams.testing import TopologyTestDriver

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


def run(variant: str, count: int, rows: int) -> float:
    with TopologyTestDriver(topology(variant), commit_every=50_000) as d:
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    best = {v: max(run(v, args.count, args.rows) for _ in range(args.repeat))
            for v in ("map", "table", "global")}
    result = {"count": args.count, "rows": args.rows, "repeat": args.repeat,
              "python": platform.python_version(),
              "records_per_s": {k: round(v) for k, v in best.items()},
              "table_over_map": round(best["table"] / best["map"], 3),
              "global_over_map": round(best["global"] / best["map"], 3)}
    for v, rate in best.items():
        print(f"{v:7s} {rate:12,.0f} records/s")
    print(f"table/map {result['table_over_map']}, global/map {result['global_over_map']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
