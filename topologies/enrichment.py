"""Stream-table joins + branch: enrich transactions with their user and product.

transactions {txn_id, user_id, product_id, amount, ts}, keyed by user_id
  -> join users (a versioned table on `users`, keyed by user_id, co-partitioned with
     transactions): the user AS OF the transaction's time ``ts`` (the version of the user
     with the latest record timestamp at or before it), so a transaction that arrives late
     still gets the tier the user had when it happened; history is kept for a day
  -> join products (a global table on `products`) by the transaction's product_id, as current
     when the transaction is processed
  -> by the user's tier: premium-transactions (PREMIUM), regular-transactions (REGULAR),
     other-transactions (anything else), each {txn_id, user_id, user_name, tier, product_id,
     product_name, category, amount, ts}
  -> a transaction whose user is unknown as of its time, or whose product is unknown when it
     is processed: unenriched-transactions, with its key and value unchanged
Transactions that are not JSON objects, lack a field, carry an amount that is not money (a
string of ASCII digits with two places below 10^15) or a key other than their user_id are
refused where they are read (``valid_transaction``): one dead letter in enrichment-dlq
(reason ``invalid``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from streams import Topology
from streams.validation import Invalid, money, require_fields, require_text

FIELDS = ("txn_id", "user_id", "product_id", "amount", "ts")
USER_HISTORY = timedelta(days=1)  # how far back a transaction can still get its user's past tier


def valid_transaction(key: Any, txn: Any) -> None:
    """Refuse (Invalid) a transaction that cannot be enriched; its dead letter says why."""
    require_fields(txn, FIELDS, "transaction")
    require_text(txn, ("txn_id", "user_id", "product_id"), "transaction")
    money(txn["amount"])
    # The users join looks the user up by the record key: a transaction keyed by someone else
    # would be enriched with the wrong user.
    if key != txn["user_id"]:
        raise Invalid(f"key {key!r} is not the transaction's user_id {txn['user_id']!r}")


def with_user(txn: dict[str, Any], user: dict[str, Any] | None) -> dict[str, Any]:
    return {"txn": txn, "user": user}


def with_product(joined: dict[str, Any], product: dict[str, Any] | None) -> dict[str, Any]:
    return {**joined, "product": product}


def enriched(joined: dict[str, Any]) -> dict[str, Any]:
    txn, user, product = joined["txn"], joined["user"], joined["product"]
    return {"txn_id": txn["txn_id"], "user_id": txn["user_id"], "user_name": user.get("name"),
            "tier": user.get("tier"), "product_id": txn["product_id"],
            "product_name": product.get("name"), "category": product.get("category"),
            "amount": txn["amount"], "ts": txn["ts"]}


def is_unenriched(joined: dict[str, Any]) -> bool:
    return joined["user"] is None or joined["product"] is None


topology = Topology("enrichment", description="transactions enriched with user and product, "
                                              "by tier")

# Versions are at the users records' Kafka timestamps (the rows carry no time of their own).
users = topology.table("users", versioned=USER_HISTORY)
products = topology.global_table("products")

joined = (topology.stream("transactions", timestamp="ts", validate=valid_transaction)
          # left joins: an unknown user or product is routed below instead of dropped; no
          # grace: a task reads users and transactions in timestamp order, so a user's update
          # is applied before the transactions after it, and outputs need not wait
          .join(users, with_user, how="left", name="join-users")
          .join(products, lambda _key, j: j["txn"]["product_id"], with_product, how="left",
                name="join-products"))

unknown, known = joined.branch(is_unenriched, default=True)
unknown.map(lambda j: j["txn"], name="original").to("unenriched-transactions")

premium, regular, other = known.map(enriched, name="enrich").branch(
    lambda t: t["tier"] == "PREMIUM", lambda t: t["tier"] == "REGULAR", default=True)
premium.to("premium-transactions")
regular.to("regular-transactions")
other.to("other-transactions")
