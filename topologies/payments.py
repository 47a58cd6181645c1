"""Payments: a debit/credit saga over partitions, as Faust-style agents.

deposits (keyed by account) {deposit_id, account, amount, ts}
  -> agent `deposit`: credits the account               -> account-balances
payments (keyed by from_account) {payment_id, from_account, to_account, amount, currency, ts}
  -> agent `settle`, in from_account's task: REJECTED (INVALID / INSUFFICIENT_FUNDS) or
     COMPLETED: debit from_account                      -> payment-results, account-balances
     and send the credit, keyed by to_account, through the internal topic
     payments-credits-repartition
  -> agent `credit`, in to_account's task: credit it    -> account-balances

Outputs: ``payment-results`` keyed by payment_id {payment_id, status, reason, ts}: status
COMPLETED (reason null) or REJECTED (reason INVALID or INSUFFICIENT_FUNDS), ts = the
payment's ts (the record's timestamp when the payment has no valid ts); ``account-balances``
keyed by account {account, balance, ts} on every balance change, ts = the deposit's or
payment's ts.

Money is ``Decimal``, written as 2-place strings ("12.50"), never float: an amount is valid
only as a string of ASCII digits with exactly two decimals, positive, below 10^15
(:func:`streams.validation.money`; ``"١٠.٠٠"``, ``"NaN"``, ``"1e3"`` are not money).

Idempotency (table ``processed``, in the task of the record's key): a payment_id seen before
in from_account's task is a duplicate and has no effect at all (no second debit, no second
result), whatever its outcome was; a deposit_id seen before in the account's task likewise
(a re-sent deposit is not credited twice). Keys are ``payment:<id>`` and ``deposit:<id>``.
The table keeps every id (no expiry), like the ledger it protects.

Dead letters (``payments-dlq``, reason and error in the headers), the record changing nothing:
a payment or deposit that is not a JSON object in UTF-8 (reason ``decode``); refused by the
sources' validators (reason ``invalid``, before the agents see them): a payment without a
payment_id (a string), a payment whose record key is not its from_account (it would be checked
in the wrong task, so the idempotency of its payment_id could not hold: the producer must fix
the key; no result is written, so the id stays free for the corrected record), and any deposit
that is not valid (missing field, bad amount, key not its account) — deposits have no result
topic to reject to. A payment whose from_account is missing is INVALID (judged in the task of
its record key).

The topology is configured for exactly-once in ``config/payments.toml``. At-least-once, a
replayed input is not applied to state twice (the task's offsets are in its state) and credits
carry their origin, so a replayed debit does not credit twice; results and balance records may
repeat. One gap is left that only transactions close: a replay after a crash may interleave
payments and arriving credits differently and so decide a payment differently (INSUFFICIENT_FUNDS
instead of COMPLETED); the credit the crashed attempt already sent stays in the internal topic
and is applied. Under exactly-once the crashed attempt's records are aborted and never read.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from streams import Topology
from streams.validation import Invalid, money, require_fields

CENTS = Decimal("0.01")
PAYMENT_FIELDS = ("payment_id", "from_account", "to_account", "amount", "currency", "ts")
DEPOSIT_FIELDS = ("deposit_id", "account", "amount", "ts")

COMPLETED, REJECTED = "COMPLETED", "REJECTED"
INVALID, INSUFFICIENT_FUNDS = "INVALID", "INSUFFICIENT_FUNDS"

topology = Topology("payments", description="a debit/credit saga: payments between accounts")

balances = topology.table_store("balances", default=lambda: "0.00")  # account -> "12.50"
processed = topology.table_store("processed")                         # id -> outcome
credits = topology.internal_topic("credits")        # payments-credits-repartition
results = topology.topic("payment-results")
# the latest record per account is its balance: a compacted read model
account_balances = topology.topic("account-balances", config={"cleanup.policy": "compact"})


def parse_amount(raw: Any) -> Decimal | None:
    """A positive 2-place decimal string as a Decimal, else None (floats are never money)."""
    try:
        return money(raw, positive=True)
    except Invalid:
        return None


def _text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _timestamp(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def invalid_reason(payment: dict[str, Any]) -> str | None:
    """Why a payment is INVALID (a short explanation), or None when it is well formed."""
    missing = [f for f in PAYMENT_FIELDS if payment.get(f) is None]
    if missing:
        return f"missing field(s): {', '.join(missing)}"
    for f in ("from_account", "to_account", "currency"):
        if not _text(payment[f]):
            return f"{f} must be a non-empty string"
    if not _timestamp(payment["ts"]):
        return "ts must be epoch milliseconds"
    if parse_amount(payment["amount"]) is None:
        return "amount must be a positive 2-place decimal string"
    if payment["from_account"] == payment["to_account"]:
        return "from_account == to_account"
    return None


async def _set_balance(account: str, balance: Decimal, ts: int) -> None:
    text = str(balance.quantize(CENTS))
    balances[account] = text
    await account_balances.send(key=account, value={"account": account, "balance": text,
                                                    "ts": ts})


def valid_deposit(key: Any, dep: Any) -> None:
    """Refuse (Invalid) a deposit that cannot be credited: deposits have no result topic."""
    require_fields(dep, DEPOSIT_FIELDS, "deposit")
    money(dep["amount"], field="deposit amount", positive=True)
    if not _text(dep["account"]) or key != dep["account"]:
        raise Invalid(f"deposit key {key!r} is not its account {dep['account']!r}")
    if not _timestamp(dep["ts"]):
        raise Invalid("deposit ts must be epoch milliseconds")


def judgeable_payment(key: Any, payment: Any) -> None:
    """Refuse (Invalid) a payment that cannot be judged at all: no payment_id to answer to, or
    in the wrong task. Anything else wrong with it is judged by ``settle`` (REJECTED INVALID)."""
    if not isinstance(payment, dict):
        raise Invalid(f"a payment must be a JSON object, got {type(payment).__name__}")
    payment_id = payment.get("payment_id")
    if not _text(payment_id):
        raise Invalid("payment without a payment_id (a non-empty string)")
    source = payment.get("from_account")
    if source is not None and key != source:
        raise Invalid(f"payment {payment_id!r}: record key {key!r} is not its "
                      f"from_account {source!r}")


@topology.agent("deposits", validate=valid_deposit)
async def deposit(stream):
    """Credit each new deposit to its account (``valid_deposit`` checked it at the source)."""
    async for _key, dep in stream.items():
        seen = f"deposit:{dep['deposit_id']}"
        if seen in processed:
            continue  # the same deposit sent again: credited once
        processed[seen] = COMPLETED
        account = dep["account"]
        await _set_balance(account, Decimal(balances[account]) + Decimal(dep["amount"]),
                           dep["ts"])


@topology.agent("payments", validate=judgeable_payment)
async def settle(stream):
    """Check each payment in from_account's task; debit it and send the credit on."""
    async for event in stream.events():
        payment = event.value
        payment_id, source = payment["payment_id"], payment.get("from_account")
        seen = f"payment:{payment_id}"
        if seen in processed:
            continue  # a duplicate: no second debit, no second result
        ts = payment.get("ts")
        ts = ts if _timestamp(ts) else event.timestamp
        if invalid_reason(payment) is not None:
            status, reason = REJECTED, INVALID
        else:
            amount = Decimal(payment["amount"])
            balance = Decimal(balances[source]) - amount
            if balance < 0:
                status, reason = REJECTED, INSUFFICIENT_FUNDS
            else:
                status, reason = COMPLETED, None
                await _set_balance(source, balance, ts)
                target = payment["to_account"]
                await credits.send(key=target, value={
                    "payment_id": payment_id, "account": target,
                    "amount": payment["amount"], "ts": ts})
        processed[seen] = reason or status
        await results.send(key=payment_id, value={
            "payment_id": payment_id, "status": status, "reason": reason, "ts": ts})


@topology.agent(credits)
async def credit(stream):
    """Credit a completed payment's to_account, in that account's task."""
    async for account, cred in stream.items():
        await _set_balance(account, Decimal(balances[account]) + Decimal(cred["amount"]),
                           cred["ts"])
