"""One framework worker of the failover benchmark's topology, in this process (the CLI's
``streams worker NAME`` only finds topologies under topologies/); logs at INFO (the benchmark
reads its assignment and restore lines). Stops on SIGTERM after committing, like the CLI.

The topology, ``failover_counts``: ``failover-in`` (1 partition, keyed) -> per-key count and
running total (a table ``failover-totals``, the shape of trip_stats' driver totals, no
repartition) -> every update to ``failover-out``.

Environment: BENCH_BROKER, BENCH_STATE_DIR (bench_worker.py), FAILOVER_STANDBYS
(num_standby_replicas, default 0), FAILOVER_SESSION_TIMEOUT_MS (default 6000, the smallest
the broker accepts by default).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
for p in (str(ROOT), str(Path(__file__).resolve().parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

from streams import Topology  # noqa: E402

IN_TOPIC, OUT_TOPIC, TABLE = "failover-in", "failover-out", "failover-totals"

topology = Topology("failover_counts", description="per-key count and total (failover bench)")


def new_totals() -> dict[str, Any]:
    return {"n": 0, "total": 0}


def add(totals: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    return {"n": totals["n"] + 1, "total": totals["total"] + int(value["v"])}


(topology.stream(IN_TOPIC).group_by_key()
         .aggregate(new_totals, add, name=TABLE).to(OUT_TOPIC))


def main() -> int:
    from bench_worker import run

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s [failover] %(name)s: %(message)s")
    return run(topology, "failover-bench",
               num_standby_replicas=int(os.environ.get("FAILOVER_STANDBYS", "0")),
               session_timeout_ms=int(os.environ.get("FAILOVER_SESSION_TIMEOUT_MS", "6000")))


if __name__ == "__main__":
    sys.exit(main())
