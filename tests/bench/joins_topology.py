"""Variants of bench_joins.py on this framework (chosen by ``BENCH_VARIANT``):

* ``join``: order_shipments' join on jbench-orders / jbench-shipments: one left join, shipments
  within [order ts, order ts + 7 d], grace 1 h; pairs -> jbench-out-pairs, unshipped orders
  (once window + grace closed) -> jbench-out-unshipped (the reference topology's functions);
* ``window``: the same 2M records through windowed aggregations instead: per input, a tumbling
  1-hour window counting records per key (the order id; no repartition), emitted when the
  window closes -> jbench-out-windows. The baseline the join is compared to.

Not under topologies/ (the CLI's registry only finds those): bench_joins.py runs it with
tests/bench/joins_runner.py.
"""

from __future__ import annotations

import os
from datetime import timedelta

from streams import Topology, TumblingWindows
from topologies.order_shipments import WINDOW, combine, valid_order, valid_shipment

VARIANT = os.environ.get("BENCH_VARIANT", "join")

if VARIANT == "join":
    topology = Topology("jbench_join", description="orders joined with shipments (bench)")
    orders = topology.stream("jbench-orders", timestamp="ts", validate=valid_order)
    shipments = topology.stream("jbench-shipments", timestamp="ts",
                                validate=valid_shipment)
    joined = orders.join(shipments, combine, WINDOW, how="left", name="jbench-order-shipments")
    shipped, unshipped = joined.branch(lambda v: "shipment_id" in v, default=True)
    shipped.to("jbench-out-pairs")
    unshipped.to("jbench-out-unshipped")
else:
    topology = Topology("jbench_window", description="records per key and hour (bench)")
    for topic in ("jbench-orders", "jbench-shipments"):
        (topology.stream(topic, timestamp="ts")
            .group_by_key()
            .window(TumblingWindows(size=timedelta(hours=1), grace=timedelta(hours=1)))
            .count(name=f"{topic}-per-hour", emit="final")
            .to("jbench-out-windows"))
