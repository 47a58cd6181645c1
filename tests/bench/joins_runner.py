"""Run one framework worker for tests/bench/joins_topology.py in this process; stops on
SIGTERM after committing, like the CLI worker.

Environment: BENCH_BROKER (default 127.0.0.1:9092), BENCH_STATE_DIR (default a fresh temporary
directory), BENCH_VARIANT (join | window).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
for p in (str(ROOT), str(Path(__file__).resolve().parent)):
    if p not in sys.path:
        sys.path.insert(0, p)


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s [jbench] %(name)s: %(message)s")
    from streams.config import Settings
    from streams.runtime.worker import run_worker
    from joins_topology import topology

    settings = Settings(
        broker=os.environ.get("BENCH_BROKER", "127.0.0.1:9092"),
        state_dir=os.environ.get("BENCH_STATE_DIR") or tempfile.mkdtemp(prefix="jbench-streams-"),
        metrics_port=-1)
    return run_worker(topology, settings)


if __name__ == "__main__":
    sys.exit(main())
