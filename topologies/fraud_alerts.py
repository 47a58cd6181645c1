"""A Faust-style agent: flag card transactions far above the user's usual amounts.

card-transactions (keyed by user_id) {txn_id, user_id, amount, merchant, ts}
  -> agent `detect`: table `recent-amounts` holds each user's last 20 amounts; a transaction
     more than 5 x the mean of the user's previous amounts (at least 5 of them) yields an alert
  -> fraud-alerts (keyed by user_id) {txn_id, user_id, amount, mean, ts}

Amounts are decimal strings; the mean is a 2-place decimal string (ROUND_HALF_EVEN). Every
valid transaction, flagged or not, is then added to the user's recent amounts. A transaction
that is not a JSON object, lacks a field or has an amount that is not a decimal in
[0, 10^15) goes to ``fraud_alerts-dlq`` with the reason, and changes nothing.
"""

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from streams import Topology

HISTORY = 20        # amounts kept per user
MIN_HISTORY = 5     # previous amounts needed before a transaction can be flagged
MAX_DIGITS = 15    # integer digits of an amount: beyond, it is not a card transaction
FACTOR = Decimal(5)
CENTS = Decimal("0.01")
FIELDS = ("txn_id", "user_id", "amount", "merchant", "ts")

topology = Topology("fraud_alerts",
                    description="card transactions far above the user's recent amounts")

recent_amounts = topology.table_store("recent-amounts", default=list)


def parse_amount(raw: object) -> Decimal:
    """A transaction's amount as a finite Decimal (strings or numbers), else ValueError."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise ValueError(f"amount must be a decimal string, got {raw!r}")
    try:
        amount = Decimal(str(raw))
    except InvalidOperation:
        raise ValueError(f"amount {raw!r} is not a decimal number") from None
    if not amount.is_finite():
        raise ValueError(f"amount {raw!r} is not finite")
    if amount < 0 or amount.adjusted() >= MAX_DIGITS:
        raise ValueError(f"amount {str(raw)[:40]!r} is out of range [0, 1e{MAX_DIGITS})")
    return amount


@topology.agent("card-transactions", timestamp="ts", sink=["fraud-alerts"])
async def detect(stream):
    async for user_id, txn in stream.items():
        missing = [f for f in FIELDS if txn.get(f) is None]
        if missing:
            raise ValueError(f"missing field(s): {', '.join(missing)}")
        amount = parse_amount(txn["amount"])
        previous = recent_amounts[user_id]            # a copy: assigned back below
        if len(previous) >= MIN_HISTORY:
            mean = sum(Decimal(a) for a in previous) / len(previous)
            if amount > FACTOR * mean:
                yield {"txn_id": txn["txn_id"], "user_id": txn["user_id"],
                       "amount": txn["amount"],
                       "mean": str(mean.quantize(CENTS, rounding=ROUND_HALF_EVEN)),
                       "ts": txn["ts"]}
        recent_amounts[user_id] = [*previous, str(amount)][-HISTORY:]
