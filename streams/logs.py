"""Worker log output: human-readable text lines, or one JSON object per line for log shippers.

What the worker logs at INFO is its lifecycle (start, partitions assigned and revoked, restore
progress, commit on shutdown, broker lost and regained, stop); nothing per record.

>>> import io, json, logging
>>> handler = logging.StreamHandler(io.StringIO())
>>> handler.setFormatter(JsonFormatter("trip_stats"))
>>> rec = logging.LogRecord("streams.runtime.task_manager", logging.INFO, __file__, 1,
...                         "assigned %d partitions", (4,), None)
>>> doc = json.loads(handler.format(rec))
>>> doc["level"], doc["logger"], doc["message"], doc["topology"]
('INFO', 'streams.runtime.task_manager', 'assigned 4 partitions', 'trip_stats')
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, UTC

LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "topology"}`` (+ ``exception`` with the traceback
    when there is one), one object per line: a multi-line message or traceback stays inside
    its JSON string."""

    def __init__(self, topology: str) -> None:
        super().__init__()
        self.topology = topology

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC)
                          .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "topology": self.topology,
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def configure(topology: str, level: str = "INFO", fmt: str = "text") -> None:
    """Route every log record to stderr in ``fmt``; aiokafka only from WARNING up (it logs
    each connection attempt)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(topology))
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s [{topology}] %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.captureWarnings(True)  # Python warnings as log records too (one format per line)


__all__ = ["JsonFormatter", "LOG_FORMATS", "configure"]
