"""What every benchmark in tests/bench shares so that its numbers can be trusted and compared:

- rounds of interleaved variants: round r runs every variant once, starting with the r-th
  (a b c, b c a, c a b, ...), so every variant takes every position in turn and none always
  runs first, right after the input was produced, or last; ``DEFAULT_ROUNDS`` by default;
- the median and the min-max of a variant's rounds (``spread``);
- the machine's load average at the start and at the end of a run (the machine may be shared);
- one fresh scratch directory per run (logs, state, temp files), under ``--work-dir``;
- ``--results PATH`` for the JSON results (the default stays the file under results/);
- consumer-group deletion that waits while the group coordinator is not available yet (a fresh
  broker creates ``__consumer_offsets`` on first use) or while a stopped member still counts.

Example::

    parser = argparse.ArgumentParser()
    add_run_options(parser, HERE / "results" / "x.json")
    args = parser.parse_args()
    run = RunInfo.start(args, "xbench-", log)
    for order in round_orders(["a", "b"], args.repeat):   # [a, b], [b, a], [a, b]
        ...
    doc = {**run.finish(), "a": spread(seconds_of_a)}
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NotCoordinatorError,
    RequestTimedOutError,
)
from aiokafka.protocol.admin import DeleteGroupsRequest

T = TypeVar("T")
DEFAULT_ROUNDS = 3

# DeleteGroups / FindCoordinator error codes
GROUP_DELETED = 0
GROUP_ID_NOT_FOUND = 69
# worth waiting for: the request timed out (7); the coordinator is loading (14), not available
# yet (15) or moved (16); the group still has a member that is leaving (68, NON_EMPTY_GROUP)
RETRIABLE_CODES = frozenset({7, 14, 15, 16, 68})
_COORDINATOR_ERRORS = (CoordinatorLoadInProgressError, CoordinatorNotAvailableError,
                       NotCoordinatorError, KafkaConnectionError, KafkaTimeoutError,
                       RequestTimedOutError)


# -- rounds ----------------------------------------------------------------------------------------
def round_orders(variants: Sequence[T], rounds: int) -> list[list[T]]:
    """The order of the variants in each round, rotated by one each round."""
    n = len(variants)
    return [[variants[(r + i) % n] for i in range(n)] for r in range(rounds)] if n else []


def spread(values: Iterable[float], digits: int = 3) -> dict[str, float]:
    """Median and min-max of a variant's rounds."""
    vs = list(values)
    return {"median": round(statistics.median(vs), digits), "min": round(min(vs), digits),
            "max": round(max(vs), digits)}


def fmt_spread(s: dict[str, float], digits: int = 0) -> str:
    """``median [min-max]`` for a printed table."""
    return f"{s['median']:,.{digits}f} [{s['min']:,.{digits}f}-{s['max']:,.{digits}f}]"


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# -- options and run bookkeeping -------------------------------------------------------------------
def add_run_options(parser: argparse.ArgumentParser, results: Path | str | None,
                    rounds: int = DEFAULT_ROUNDS) -> None:
    """``--repeat`` (rounds), ``--work-dir`` (parent of the run's scratch dir) and
    ``--results`` (JSON results file; default ``results``)."""
    parser.add_argument("--repeat", type=int, default=rounds,
                        help=f"rounds, each running every variant once in a rotated order "
                             f"(default {rounds}; fewer gives no spread worth reporting)")
    parser.add_argument("--work-dir", default=None,
                        help="parent of this run's scratch dir (logs, state, temp files); "
                             "default the system temp dir")
    parser.add_argument("--results", default=None if results is None else str(results),
                        help=f"JSON results file (default {results})")


def scratch_dir(parent: str | Path | None, prefix: str) -> Path:
    """A fresh directory for one run's scratch files, under ``parent`` (created if missing)."""
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


@dataclass
class RunInfo:
    """The run's scratch dir, rounds and load averages, for the results file."""
    work: Path
    rounds: int
    load_start: list[float] | None
    orders: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, args: argparse.Namespace, prefix: str,
              log: Callable[[str], None] = print) -> RunInfo:
        work = scratch_dir(args.work_dir, prefix)
        log(f"scratch files of this run in {work}")
        if args.repeat < DEFAULT_ROUNDS:
            log(f"only {args.repeat} round(s): a functional check, not a measurement")
        return cls(work, args.repeat, loadavg())

    def order(self, variants: Sequence[T], label: Callable[[T], str] = str) -> list[list[T]]:
        """The rounds' orders, noted for the results."""
        orders = round_orders(variants, self.rounds)
        self.orders = [" ".join(label(v) for v in o) for o in orders]
        return orders

    def finish(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "round_orders": self.orders,
                "load_average_1_5_15_min": {"start": self.load_start, "end": loadavg()},
                "scratch_dir": str(self.work)}


def write_results(path: str | Path, text: str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


# -- consumer groups -------------------------------------------------------------------------------
async def _delete_group_once(client: AIOKafkaAdminClient, group: str) -> int:
    """One DeleteGroups attempt at the group's coordinator: its error code."""
    node = await client.find_coordinator(group)
    resp = await client._send_request(DeleteGroupsRequest([group]), node)
    return int(dict(resp.results).get(group, GROUP_DELETED))


async def delete_groups_with(client: AIOKafkaAdminClient, groups: Iterable[str],
                             timeout: float = 60.0, pause: float = 0.5) -> None:
    """Delete each consumer group (a missing one counts as deleted), retrying while its
    coordinator is loading, not available yet or moving, or while the group is not empty,
    until ``timeout`` seconds per group have passed."""
    for group in groups:
        deadline = time.monotonic() + timeout
        while True:
            try:
                code = await _delete_group_once(client, group)
            except _COORDINATOR_ERRORS as exc:
                errno = getattr(exc, "errno", None)
                code = errno if isinstance(errno, int) else -1   # -1: no answer (yet)
                reason = f"{type(exc).__name__}: {exc}"
            else:
                reason = f"error code {code}"
            if code in (GROUP_DELETED, GROUP_ID_NOT_FOUND):
                break
            if (code in RETRIABLE_CODES or code == -1) and time.monotonic() < deadline:
                await asyncio.sleep(pause)
                continue
            raise RuntimeError(f"cannot delete consumer group {group}: {reason}")


async def delete_groups(bootstrap: str, groups: Iterable[str], timeout: float = 60.0) -> None:
    """:func:`delete_groups_with` a fresh admin client of ``bootstrap``."""
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await client.start()
    try:
        await delete_groups_with(client, groups, timeout)
    finally:
        await client.close()
