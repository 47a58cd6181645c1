"""Run a benchmark topology as one framework worker in this process (the CLI's ``streams worker
NAME`` only finds topologies under topologies/). Stops on SIGTERM after committing, like the
CLI worker.

Environment: BENCH_BROKER (default 127.0.0.1:9092), BENCH_STATE_DIR (default a fresh temporary
directory).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
from typing import Any


def run(topology: Any, tag: str, **settings_overrides: Any) -> int:
    """Run ``topology`` until SIGTERM; ``tag`` names the log lines and the temporary state dir;
    ``settings_overrides`` are settings other than the defaults."""
    # Until the worker's event loop installs its handlers, a stop request simply exits.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.basicConfig(level=logging.WARNING,
                        format=f"%(asctime)s %(levelname)s [{tag}] %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    from streams.config import Settings
    from streams.runtime.worker import run_worker

    settings = Settings(
        broker=os.environ.get("BENCH_BROKER", "127.0.0.1:9092"),
        state_dir=os.environ.get("BENCH_STATE_DIR") or tempfile.mkdtemp(prefix=f"{tag}-"),
        metrics_port=-1, **settings_overrides)
    return run_worker(topology, settings)
