"""Baseline for bench_profile_notifications.py: the profile_notifications logic as a plain
faust-streaming agent (no framework code involved).

Run by the benchmark as a subprocess::

    BENCH_BROKER=127.0.0.1:29092 python tests/bench/faust_baseline.py worker -l warn

Environment:
  BENCH_BROKER        bootstrap address (host:port), default 127.0.0.1:9092
  BENCH_FAUST_APP_ID  faust app id = consumer group, default bench-faust
  BENCH_IN_TOPIC      input topic, default profile-views
  BENCH_OUT_TOPIC     output topic, default bench-faust-out
  BENCH_PARTITIONS    partitions of topics faust declares, default 4
  BENCH_FAUST_DATADIR faust's data directory, default a fresh temporary directory (never the
                      current directory)

The producer is configured like the framework worker's (acks=all, linger 5 ms), values are
raw bytes decoded/encoded with json here, exactly as the worker's JSON serdes do.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile

import faust

NOTABLE_TITLES = ("Recruiter", "Hiring Manager", "CEO", "CTO")

BROKER = os.environ.get("BENCH_BROKER", "127.0.0.1:9092")
IN_TOPIC = os.environ.get("BENCH_IN_TOPIC", "profile-views")
OUT_TOPIC = os.environ.get("BENCH_OUT_TOPIC", "bench-faust-out")

app = faust.App(
    os.environ.get("BENCH_FAUST_APP_ID", "bench-faust"),
    broker=f"kafka://{BROKER}",
    store="memory://",
    datadir=os.environ.get("BENCH_FAUST_DATADIR") or tempfile.mkdtemp(prefix="bench-faust-"),
    # web_enabled alone is not enough: `faust worker` sets it from its own --with-web /
    # --without-web flag, default --with-web (see __main__ below); loopback if ever on
    web_enabled=False,
    web_bind="127.0.0.1",
    topic_partitions=int(os.environ.get("BENCH_PARTITIONS", "4")),
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    producer_linger=0.005,
)

views = app.topic(IN_TOPIC, key_serializer="raw", value_serializer="raw")
notifications = app.topic(OUT_TOPIC, key_serializer="raw", value_serializer="raw")


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@app.agent(views)
async def notify(stream):  # type: ignore[no-untyped-def]
    # faust 0.15 / mode 0.7 leave the root logger at DEBUG for `-l warn` and `-l error` (only
    # the handler filters), so every aiokafka/faust debug() call builds a LogRecord: ~8% of
    # the agent's time. The framework worker sets aiokafka to WARNING; do the same here.
    logging.getLogger().setLevel(logging.WARNING)
    async for value in stream:
        view = json.loads(value)
        title = view.get("viewer_title") or ""
        if any(t in title for t in NOTABLE_TITLES):
            await notifications.send(key=str(view["profile_id"]).encode(), value=dumps(view))


if __name__ == "__main__":
    # `faust worker` overrides web_enabled with its --with-web flag (on by default) and would
    # serve on 0.0.0.0:6066: run without the web server unless --with-web is asked for
    if sys.argv[1:2] == ["worker"] and not {"--with-web", "--without-web"} & set(sys.argv):
        sys.argv.append("--without-web")
    app.main()
