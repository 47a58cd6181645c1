"""Run one framework worker for tests/bench/joins_topology.py in this process; stops on
SIGTERM after committing, like the CLI worker.

Environment: BENCH_BROKER (default 127.0.0.1:9092), BENCH_STATE_DIR (default a fresh temporary
directory), BENCH_VARIANT (join | window).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
for p in (str(ROOT), str(Path(__file__).resolve().parent)):
    if p not in sys.path:
        sys.path.insert(0, p)


def main() -> int:
    from bench_worker import run
    from joins_topology import topology

    # The generated shipments reach up to 6 days past the wall clock, beyond the default
    # max_future_ms (1 day) that dead-letters them as poison timestamps.
    return run(topology, "jbench-streams", max_future_ms=-1)


if __name__ == "__main__":
    sys.exit(main())
