"""Window specifications (Kafka Streams bounds).

The specifications are importable now; windowed aggregation and joins over them are not in this
release yet, and using them in a topology raises ``NotImplementedError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


def _ms(d: timedelta | int) -> int:
    return int(d.total_seconds() * 1000) if isinstance(d, timedelta) else int(d)


@dataclass(frozen=True)
class TumblingWindows:
    """Fixed-size, non-overlapping windows ``[start, start + size)``, aligned to the epoch."""

    size: timedelta | int
    grace: timedelta | int = 0

    @property
    def size_ms(self) -> int:
        return _ms(self.size)

    @property
    def grace_ms(self) -> int:
        return _ms(self.grace)


@dataclass(frozen=True)
class HoppingWindows:
    """Windows ``[start, start + size)`` starting every ``advance``, aligned to the epoch."""

    size: timedelta | int
    advance: timedelta | int
    grace: timedelta | int = 0


@dataclass(frozen=True)
class SlidingWindows:
    """Windows of ``size`` ending at each record's timestamp (inclusive bounds)."""

    size: timedelta | int
    grace: timedelta | int = 0


@dataclass(frozen=True)
class SessionWindows:
    """Per-key sessions: records closer than ``gap`` merge into one session."""

    gap: timedelta | int
    grace: timedelta | int = 0


@dataclass(frozen=True)
class JoinWindows:
    """Join window: the other side's timestamp within ``[ts - before, ts + after]``."""

    before: timedelta | int
    after: timedelta | int
    grace: timedelta | int = 0
