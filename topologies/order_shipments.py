"""Orders joined with their shipments (a windowed stream-stream join).

orders    {order_id, customer_id, amount, ts}     keyed by order_id; event time = ts
shipments {shipment_id, order_id, carrier, ts}    keyed by order_id; event time = ts
  -> one left join, shipments within [order ts, order ts + 7 d], grace 1 h
     (join buffers `order-shipments-left` / `-right`, unmatched markers `-left-unmatched`)
     -> a matched pair -> `order-shipments`
        {order_id, customer_id, amount, shipment_id, carrier, order_ts, shipment_ts}
        (every pair: an order shipped twice has two; the inner join's results)
     -> an order with no shipment in its window, once window + grace closed by stream time
        -> `unshipped-orders` {order_id, customer_id, amount, order_ts}
Input that is not a JSON object with these fields (string ids, amount money: a string of ASCII
digits with two places below 10^15, ts epoch ms) is refused where it is read: one dead letter
in `order_shipments-dlq` (reason ``invalid``). Both sides are kept for 7 d + 1 h of stream time
(the join's retention, before + after + grace): a shipment that arrives out of order still pairs
with its order as long as the order is kept and has not been emitted as unshipped; records older
than the retention are dropped and counted (streams_late_events_total{node}).

One left join gives both outputs: its matched results are exactly the inner join's, and it
buffers each side once instead of twice.
"""

from datetime import timedelta
from typing import Any

from streams import JoinWindows, Topology
from streams.validation import money, require_fields, require_text

topology = Topology("order_shipments", description="orders joined with shipments within 7 days")

WINDOW = JoinWindows(before=timedelta(0), after=timedelta(days=7), grace=timedelta(hours=1))


def valid_order(order: Any) -> None:
    """Refuse (ValueError) an order the join could not use (ts: the source's timestamp)."""
    require_fields(order, ("order_id", "customer_id", "amount", "ts"), "order")
    require_text(order, ("order_id", "customer_id"), "order")
    money(order["amount"], field="order amount")


def valid_shipment(shipment: Any) -> None:
    require_fields(shipment, ("shipment_id", "order_id", "carrier", "ts"), "shipment")
    require_text(shipment, ("shipment_id", "order_id", "carrier"), "shipment")


def combine(order: dict, shipment: dict | None) -> dict:
    """The join result: an order with its shipment, or with None (unshipped)."""
    if shipment is None:
        return {"order_id": order["order_id"], "customer_id": order["customer_id"],
                "amount": order["amount"], "order_ts": order["ts"]}
    return {"order_id": order["order_id"], "customer_id": order["customer_id"],
            "amount": order["amount"], "shipment_id": shipment["shipment_id"],
            "carrier": shipment["carrier"], "order_ts": order["ts"],
            "shipment_ts": shipment["ts"]}


orders = topology.stream("orders", timestamp="ts", validate=valid_order)
shipments = topology.stream("shipments", timestamp="ts", validate=valid_shipment)
joined = orders.join(shipments, combine, WINDOW, how="left", name="order-shipments")
shipped, unshipped = joined.branch(lambda v: "shipment_id" in v, default=True)
shipped.to("order-shipments")
unshipped.to("unshipped-orders")
