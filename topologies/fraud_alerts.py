"""A Faust-style agent: flag card transactions far above the user's usual amounts.

card-transactions (keyed by user_id) {txn_id, user_id, amount, merchant, ts}
  -> agent `detect`: table `recent-amounts` holds each user's last 20 amounts; a transaction
     more than 5 x the mean of the user's previous amounts (at least 5 of them) yields an alert
  -> fraud-alerts (keyed by user_id) {txn_id, user_id, amount, mean, ts}

Amounts are decimal strings; the mean is a 2-place decimal string (ROUND_HALF_EVEN). Every
valid transaction, flagged or not, is then added to the user's recent amounts. A transaction
that is not a JSON object, lacks a field, is keyed by another user or has an amount that is not
money (a string of ASCII digits with two places, in [0, 10^15)) is refused at the source
(``valid_transaction``): one dead letter in ``fraud_alerts-dlq`` with the reason, and changes
nothing.
"""

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from streams import Topology
from streams.validation import Invalid, money, require_fields, require_text

HISTORY = 20        # amounts kept per user
MIN_HISTORY = 5     # previous amounts needed before a transaction can be flagged
FACTOR = Decimal(5)
CENTS = Decimal("0.01")
FIELDS = ("txn_id", "user_id", "amount", "merchant", "ts")

topology = Topology("fraud_alerts",
                    description="card transactions far above the user's recent amounts")

recent_amounts = topology.table_store("recent-amounts", default=list)


def valid_transaction(key: Any, txn: Any) -> None:
    """Refuse (Invalid) a transaction the agent could not judge."""
    require_fields(txn, FIELDS, "transaction")
    require_text(txn, ("txn_id", "user_id"), "transaction")
    money(txn["amount"])
    if key != txn["user_id"]:  # the history is kept per record key
        raise Invalid(f"key {key!r} is not the transaction's user_id {txn['user_id']!r}")


@topology.agent("card-transactions", timestamp="ts", sink=["fraud-alerts"],
                validate=valid_transaction)
async def detect(stream):
    async for user_id, txn in stream.items():
        amount = Decimal(txn["amount"])
        previous = recent_amounts[user_id]            # a copy: assigned back below
        if len(previous) >= MIN_HISTORY:
            mean = sum(Decimal(a) for a in previous) / len(previous)
            if amount > FACTOR * mean:
                yield {"txn_id": txn["txn_id"], "user_id": txn["user_id"],
                       "amount": txn["amount"],
                       "mean": str(mean.quantize(CENTS, rounding=ROUND_HALF_EVEN)),
                       "ts": txn["ts"]}
        recent_amounts[user_id] = [*previous, str(amount)][-HISTORY:]
