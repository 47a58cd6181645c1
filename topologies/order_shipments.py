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
Input that is not a JSON object with these fields (amount a decimal string with two places, ts
epoch ms) goes to `order_shipments-dlq`. Both sides are kept for 7 d + 1 h of stream time (the
join's retention, before + after + grace): a shipment that arrives out of order still pairs with
its order as long as the order is kept and has not been emitted as unshipped; records older than
the retention are dropped and counted (streams_late_events_total{node}).

One left join gives both outputs: its matched results are exactly the inner join's, and it
buffers each side once instead of twice.
"""

from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from streams import JoinWindows, Topology

topology = Topology("order_shipments", description="orders joined with shipments within 7 days")

WINDOW = JoinWindows(before=timedelta(0), after=timedelta(days=7), grace=timedelta(hours=1))


def _require(value: Any, fields: tuple[str, ...], what: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    missing = [f for f in fields if value.get(f) is None]
    if missing:
        raise ValueError(f"{what} misses {', '.join(missing)}")
    for f in fields:
        if f != "ts" and not isinstance(value[f], str):
            raise ValueError(f"{what} field {f} must be a string, got {type(value[f]).__name__}")
    return value


def valid_order(order: Any) -> dict:
    _require(order, ("order_id", "customer_id", "amount", "ts"), "order")
    try:
        amount = Decimal(order["amount"])
    except InvalidOperation:
        raise ValueError(f"order amount {order['amount']!r} is not a decimal") from None
    if not amount.is_finite() or amount.as_tuple().exponent != -2:
        raise ValueError(f"order amount {order['amount']!r} is not a decimal with two places")
    return order


def valid_shipment(shipment: Any) -> dict:
    return _require(shipment, ("shipment_id", "order_id", "carrier", "ts"), "shipment")


def combine(order: dict, shipment: dict | None) -> dict:
    """The join result: an order with its shipment, or with None (unshipped)."""
    if shipment is None:
        return {"order_id": order["order_id"], "customer_id": order["customer_id"],
                "amount": order["amount"], "order_ts": order["ts"]}
    return {"order_id": order["order_id"], "customer_id": order["customer_id"],
            "amount": order["amount"], "shipment_id": shipment["shipment_id"],
            "carrier": shipment["carrier"], "order_ts": order["ts"],
            "shipment_ts": shipment["ts"]}


orders = topology.stream("orders", timestamp="ts").map(valid_order, name="valid-orders")
shipments = topology.stream("shipments", timestamp="ts").map(valid_shipment,
                                                              name="valid-shipments")
joined = orders.join(shipments, combine, WINDOW, how="left", name="order-shipments")
shipped, unshipped = joined.branch(lambda v: "shipment_id" in v, default=True)
shipped.to("order-shipments")
unshipped.to("unshipped-orders")
