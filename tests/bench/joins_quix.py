"""Variant (c) of bench_joins.py: orders joined with shipments on Quix Streams'
``StreamingDataFrame.join_interval`` (inner; shipments 0 to 7 days after the order).

Environment: BENCH_BROKER (default 127.0.0.1:9092), BENCH_GROUP (default jbench-quix),
BENCH_STATE_DIR (default a fresh temporary directory).

Semantics next to the framework's join: the matched pairs are the same (same key,
``order.ts <= shipment.ts <= order.ts + 7 d``). Quix keeps each side's records for ``grace_ms``
after the latest timestamp of their key (set to 7 d + 1 h, the framework's window + grace) and
drops records older than that; it has no "unmatched after the window closed" output: its left
join emits an unmatched order at once, so only the inner join is compared.
"""

from __future__ import annotations

import logging
import os
import tempfile
from datetime import timedelta

from quixstreams import Application
from quixstreams.models import TopicConfig

BROKER = os.environ.get("BENCH_BROKER", "127.0.0.1:9092")


def event_ts(value: dict, headers: object, timestamp: int, timestamp_type: object) -> int:
    return value["ts"]


def merge(order: dict, shipment: dict) -> dict:
    return {"order_id": order["order_id"], "customer_id": order["customer_id"],
            "amount": order["amount"], "shipment_id": shipment["shipment_id"],
            "carrier": shipment["carrier"], "order_ts": order["ts"],
            "shipment_ts": shipment["ts"]}


def main() -> None:
    app = Application(
        broker_address=BROKER, consumer_group=os.environ.get("BENCH_GROUP", "jbench-quix"),
        auto_offset_reset="earliest", commit_interval=1.0,
        state_dir=os.environ.get("BENCH_STATE_DIR") or tempfile.mkdtemp(prefix="jbench-quix-"),
        processing_guarantee="at-least-once", loglevel="WARNING")
    orders = app.dataframe(app.topic("jbench-orders", key_deserializer="str",
                                     value_deserializer="json", timestamp_extractor=event_ts))
    shipments = app.dataframe(app.topic("jbench-shipments", key_deserializer="str",
                                        value_deserializer="json", timestamp_extractor=event_ts))
    out = app.topic("jbench-out-quix", key_serializer="str", value_serializer="json",
                    config=TopicConfig(num_partitions=4, replication_factor=1))
    joined = orders.join_interval(shipments, how="inner", on_merge=merge,
                                  grace_ms=timedelta(days=7, hours=1), backward_ms=0,
                                  forward_ms=timedelta(days=7), name="jbench")
    joined.to_topic(out)
    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    app.run()


if __name__ == "__main__":
    main()
