"""The profile_notifications logic written as a Faust-style agent of this framework, run as a
worker in this process for bench_profile_notifications.py (variant d). The CLI's ``streams
worker NAME`` only finds topologies under topologies/, hence this runner. Stops on SIGTERM
after committing, like the CLI worker.

Environment: BENCH_BROKER (default 127.0.0.1:9092), BENCH_AGENT_APP (topology name = consumer
group, default bench-agent), BENCH_IN_TOPIC (default profile-views), BENCH_OUT_TOPIC (default
bench-agent-out), BENCH_STATE_DIR (default a fresh temporary directory).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
for p in (str(ROOT), str(Path(__file__).resolve().parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

from streams import Topology  # noqa: E402

NOTABLE_TITLES = ("Recruiter", "Hiring Manager", "CEO", "CTO")
IN_TOPIC = os.environ.get("BENCH_IN_TOPIC", "profile-views")
OUT_TOPIC = os.environ.get("BENCH_OUT_TOPIC", "bench-agent-out")

topology = Topology(os.environ.get("BENCH_AGENT_APP", "bench-agent"))
notifications = topology.topic(OUT_TOPIC)


@topology.agent(IN_TOPIC)
async def notify(stream):  # type: ignore[no-untyped-def]
    # as faust_baseline.py's agent: same filter, re-keyed by profile_id on send
    async for view in stream:
        title = view.get("viewer_title") or ""
        if any(t in title for t in NOTABLE_TITLES):
            await notifications.send(key=view["profile_id"], value=view)


def main() -> int:
    from bench_worker import run

    return run(topology, "bench-agent")


if __name__ == "__main__":
    sys.exit(main())
