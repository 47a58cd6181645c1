"""Progress of a long command on a terminal: one line on stderr, rewritten in place, only when
stderr is a TTY (a pipe or a log file gets no progress noise)."""

from __future__ import annotations

import sys
import time
from typing import IO


class TerminalProgress:
    """``what: 1,200/5,000 (24%)  850/s  ETA 4s``, at most every ``interval`` seconds.

    >>> p = TerminalProgress("sent", 10, stream=None)  # no terminal: does nothing
    >>> p.update(5); p.close()
    """

    def __init__(self, what: str, total: int | None, stream: IO[str] | None = sys.stderr,
                 interval: float = 0.5) -> None:
        self.what, self.total, self.stream, self.interval = what, total, stream, interval
        self.enabled = bool(stream is not None and stream.isatty())
        self.started = self._last = time.monotonic()
        self._shown = False

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        rate = done / max(now - self.started, 1e-9)
        text = f"{self.what}: {done:,}"
        if self.total:
            text += f"/{self.total:,} ({100 * done // self.total}%)"
        text += f"  {rate:,.0f}/s"
        if self.total and rate > 0 and done < self.total:
            text += f"  ETA {(self.total - done) / rate:.0f}s"
        self._write("\r" + text + "\x1b[K")
        self._shown = True

    def close(self) -> None:
        """Erase the progress line (the command's own output follows)."""
        if self._shown:
            self._write("\r\x1b[K")
            self._shown = False

    def _write(self, text: str) -> None:
        assert self.stream is not None
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError:  # a closed terminal: progress is optional
            self.enabled = False
