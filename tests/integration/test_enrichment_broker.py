"""The enrichment topology against the real broker: stream-table and stream-global-table joins
with two workers, and a worker restart that resumes its global table from local state.

Input comes in phases, each processed before the next is produced (the test waits for the
group's offsets, and for each worker's global-table copy through `streams tables list`), so the
product current when a transaction is processed is known; users are a versioned table, each
transaction gets its user as of its ``ts`` (users rows are produced with explicit record
timestamps): the oracle replays the phases with plain dicts.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streams import Topology
from streams.config import Settings
from streams.kafka import admin
from streams.kafka.admin import TopicSpec
from streams.runtime.worker import Worker, WorkerFailed
from topologies.enrichment import topology as enrichment

from tests.conftest import ROOT, create_topology_topics, delete_topology_topics, produce, read_topic
from tests.integration.tables_support import wait_drained

pytestmark = pytest.mark.broker

PARTITIONS = 4
OUTPUTS = {"PREMIUM": "premium-transactions", "REGULAR": "regular-transactions"}
OTHER, UNENRICHED = "other-transactions", "unenriched-transactions"
ALL_OUTPUTS = [*OUTPUTS.values(), OTHER, UNENRICHED]
TIERS = ["PREMIUM", "REGULAR", "BASIC"]
Event = tuple[str, Any, Any]
# Event time near the wall clock: outputs carry it as their Kafka timestamp, and the broker's
# 7-day time retention would delete records stamped in 1970 under the test.
EPOCH_MS = int(time.time() * 1000)


USERS_V1_AT = EPOCH_MS - 1_000  # record timestamps of the users rows: before every transaction
USERS_V2_AT = EPOCH_MS + 299    # the updates: after the first 300 transactions' ts


# -- input -----------------------------------------------------------------------------------------
def produce_at(kafka: str, events: list[Event], timestamp_ms: int) -> None:
    """Produce ``events`` with the record timestamp ``timestamp_ms`` (a users row's version
    time)."""
    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        p = AIOKafkaProducer(bootstrap_servers=kafka, acks="all")
        await p.start()
        try:
            for topic, key, value in events:
                await p.send_and_wait(topic, json.dumps(value).encode(), key=key.encode(),
                                      timestamp_ms=timestamp_ms)
        finally:
            await p.stop()

    asyncio.run(send())


def user(i: int, version: int = 1) -> Event:
    return "users", f"u{i}", {"user_id": f"u{i}", "name": f"user{i}-v{version}",
                              "tier": TIERS[(i + version) % 3]}


def product(pid: str, version: int = 1) -> Event:
    return "products", pid, {"product_id": pid, "name": f"{pid}-v{version}",
                             "category": f"cat{version}", "price": "9.99"}


def transactions(first: int, count: int, users: list[str], products: list[str]) -> list[Event]:
    out = []
    for i in range(first, first + count):
        uid = f"u-unknown-{i}" if i % 13 == 0 else users[i % len(users)]
        pid = f"p-unknown-{i}" if i % 17 == 0 else products[(i * 7) % len(products)]
        out.append(("transactions", uid, {"txn_id": f"t{i}", "user_id": uid, "product_id": pid,
                                          "amount": f"{i % 500}.{i % 100:02d}",
                                          "ts": EPOCH_MS + i}))
    return out


def oracle(phases: list[list[Event]], stamps: dict[int, int]) -> dict[str, tuple[str, str, Any]]:
    """txn_id -> (output topic, key, value), replaying the phases in order: the user as of the
    transaction's ts (``stamps``: the record timestamp of each phase's users rows), the product
    current when it is processed."""
    users: dict[str, list[tuple[int, Any]]] = {}
    products: dict[str, Any] = {}
    out: dict[str, tuple[str, str, Any]] = {}
    for n, phase in enumerate(phases):
        for topic, key, value in phase:
            if topic == "users":
                users.setdefault(key, []).append((stamps[n], value))
            elif topic == "products":
                products[key] = value
            else:
                older = [(ts, u) for ts, u in users.get(key, []) if ts <= value["ts"]]
                u = max(older, key=lambda v: v[0])[1] if older else None
                p = products.get(value["product_id"])
                if u is None or p is None:
                    out[value["txn_id"]] = (UNENRICHED, key, value)
                    continue
                out[value["txn_id"]] = (OUTPUTS.get(u["tier"], OTHER), key, {
                    "txn_id": value["txn_id"], "user_id": key, "user_name": u["name"],
                    "tier": u["tier"], "product_id": value["product_id"],
                    "product_name": p["name"], "category": p["category"],
                    "amount": value["amount"], "ts": value["ts"]})
    return out


def outputs(kafka: str) -> dict[str, list[tuple[str, Any, Any]]]:
    """txn_id -> every (topic, key, value) it was written as, plus its input partition."""
    got: dict[str, list[tuple[str, Any, Any]]] = {}
    for topic in ALL_OUTPUTS:
        for rec in read_topic(kafka, topic, idle=1.0):
            value = json.loads(rec.value)
            got.setdefault(value["txn_id"], []).append((topic, rec.key.decode(), value))
    return got


# -- observing the workers -------------------------------------------------------------------------
def tables_list(kafka: str, state_dir: Path) -> dict[str, Any]:
    """`streams tables list enrichment --json` on one worker's state dir, by table."""
    env = {**os.environ, "STREAMS_BROKER": kafka}
    done = subprocess.run([sys.executable, "-m", "streams.cli", "tables", "list", "enrichment",
                           "--json", "--state-dir", str(state_dir)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {row["table"]: row for row in json.loads(done.stdout)}


def tables_get(kafka: str, state_dir: Path, table: str, key: str, *options: str,
               lines: bool = False) -> Any:
    """`streams tables get --json`: the value, or with ``lines`` a list, one per line; None if
    the key is not found."""
    env = {**os.environ, "STREAMS_BROKER": kafka}
    done = subprocess.run([sys.executable, "-m", "streams.cli", "tables", "get", "enrichment",
                           table, key, "--json", "--state-dir", str(state_dir), *options],
                          cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return None
    return [json.loads(ln) for ln in done.stdout.splitlines()] if lines else json.loads(done.stdout)


def wait_global_current(kafka: str, state_dir: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until the worker's copy of `products` reflects every record of the topic."""
    deadline = time.monotonic() + timeout
    info: dict[str, Any] = {}
    while time.monotonic() < deadline:
        info = tables_list(kafka, state_dir)["products"]
        ends = {f"products:{p}": o for p, o in info["changelog_end_offsets"].items()}
        if info["local_input_offsets"] == ends:
            return info
        time.sleep(0.5)
    raise AssertionError(f"global table copy in {state_dir} not current: {info}")


def wait_split(workers: list[Any], timeout: float = 90.0) -> list[set[int]]:
    """Wait until each worker's latest assignment is its share of transactions+users
    partitions; return the partition numbers each owns."""
    share = f"assigned {2 * PARTITIONS // len(workers)} partitions"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = [[ln for ln in w.log().splitlines() if "assigned" in ln][-1:] for w in workers]
        if all(x and share in x[0] for x in last):
            return [{int(p) for p in re.findall(r"_(\d+)'", x[0])} for x in last]
        time.sleep(0.3)
    raise AssertionError("workers did not split the partitions:\n" +
                         "\n".join(w.log()[-1500:] for w in workers))


def metric(log: str, name: str, table: str) -> float:
    port = re.findall(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log)[-1]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    [value] = re.findall(rf'^{name}\{{.*table="{table}".*\}} (\S+)$', text, re.M)
    return float(value)


def start(kafka: str) -> None:
    delete_topology_topics(kafka, enrichment)
    create_topology_topics(kafka, enrichment, partitions=PARTITIONS)


def check_outputs(kafka: str, phases: list[list[Event]],
                  stamps: dict[int, int]) -> dict[str, list[Any]]:
    expected = oracle(phases, stamps)
    got = outputs(kafka)
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))[:10]
    repeated = {t: v for t, v in got.items() if len(v) > 1}
    assert not repeated, list(repeated.items())[:3]
    wrong = {t: (got[t][0], expected[t]) for t in expected if got[t][0] != expected[t]}
    assert not wrong, list(wrong.items())[:3]
    return got


# -- tests -----------------------------------------------------------------------------------------
def test_two_workers_enrich_with_the_user_as_of_the_transaction(kafka: str, workers,
                                                                 tmp_path: Path) -> None:
    start(kafka)
    user_ids = [f"u{i}" for i in range(40)]
    product_ids = [f"p{i}" for i in range(40)]
    phase0 = [user(i) for i in range(40)] + [product(p) for p in product_ids]
    produce_at(kafka, [e for e in phase0 if e[0] == "users"], USERS_V1_AT)
    produce(kafka, [e for e in phase0 if e[0] != "users"])
    a = workers("enrichment", kafka, state_dir=tmp_path / "a")
    b = workers("enrichment", kafka, state_dir=tmp_path / "b")
    owned = wait_split([a, b])
    wait_drained(kafka, "enrichment", ["users"], timeout=90)

    phase1 = transactions(0, 300, user_ids, product_ids)
    produce(kafka, phase1)
    wait_drained(kafka, "enrichment", ["transactions", "users"], timeout=90)

    # updates: tiers and names of 10 users; 5 products renamed, 2 deleted, 2 new ones
    new_products = ["p-new-0", "p-new-1"]
    phase2 = ([user(i, 2) for i in range(10)] + [product(p, 2) for p in product_ids[:5]] +
              [("products", "p5", None), ("products", "p6", None)] +
              [product(p) for p in new_products])
    produce_at(kafka, [e for e in phase2 if e[0] == "users"], USERS_V2_AT)
    produce(kafka, [e for e in phase2 if e[0] != "users"])
    wait_drained(kafka, "enrichment", ["users"], timeout=90)
    for state in (tmp_path / "a", tmp_path / "b"):
        wait_global_current(kafka, state)

    phase3 = transactions(300, 300, user_ids, product_ids[:12] + new_products)
    # transactions of the updated users from before their update arrive late: their old tier
    phase3 += [("transactions", f"u{i}", {"txn_id": f"t-late-{i}", "user_id": f"u{i}",
                                          "product_id": "p1", "amount": "1.00",
                                          "ts": USERS_V2_AT - 1 - i}) for i in range(10)]
    produce(kafka, phase3)
    wait_drained(kafka, "enrichment", ["transactions", "users"], timeout=90)

    # Each worker holds the whole global table, whatever partitions it owns.
    infos = [tables_list(kafka, tmp_path / s) for s in ("a", "b")]
    for info in infos:
        products = info["products"]
        assert products["kind"] == "global" and products["keys"] == 40 and products["keys_exact"]
        assert products["local_input_offsets"] == {
            f"products:{p}": o for p, o in products["changelog_end_offsets"].items()}
    assert {info["users"]["kind"] for info in infos} == {"versioned"}
    # u0 read from the worker that owns its partition: as of a time, every version
    u0_partition = next(r.partition for r in read_topic(kafka, "users", idle=0.5)
                        if r.key == b"u0")
    owner = tmp_path / ("a" if u0_partition in owned[0] else "b")
    assert tables_get(kafka, owner, "users", "u0", "--as-of",
                      str(USERS_V2_AT - 1))["name"] == "user0-v1"
    assert [(v["timestamp"], v["value"]["name"]) for v in tables_get(
        kafka, owner, "users", "u0", "--versions", lines=True)] == [
            (USERS_V1_AT, "user0-v1"), (USERS_V2_AT, "user0-v2")]
    for state in ("a", "b"):
        assert tables_get(kafka, tmp_path / state, "products", "p-new-1")["name"] == "p-new-1-v1"
        assert tables_get(kafka, tmp_path / state, "products", "p5") is None
        assert tables_get(kafka, tmp_path / state, "products", "p0")["name"] == "p0-v2"
    for w in (a, b):
        assert w.terminate() == 0, w.log()[-3000:]
        assert "Traceback" not in w.log(), w.log()[-3000:]

    got = check_outputs(kafka, [phase0, phase1, phase2, phase3],
                        {0: USERS_V1_AT, 2: USERS_V2_AT})
    late = [got[f"t-late-{i}"][0][2] for i in range(10)]
    assert [v["user_name"] for v in late] == [f"user{i}-v1" for i in range(10)]
    # Through the outputs: the transactions of each worker's partitions were enriched with
    # products from every partition of the products topic.
    product_partition = {r.key.decode(): r.partition for r in read_topic(kafka, "products")}
    txn_partition = {json.loads(r.value)["txn_id"]: r.partition
                     for r in read_topic(kafka, "transactions")}
    assert len(set(product_partition.values())) == PARTITIONS
    for mine in owned:
        used = {product_partition[v[2]["product_id"]] for t, v in
                ((t, outs[0]) for t, outs in got.items())
                if v[0] != UNENRICHED and txn_partition[t] in mine}
        assert used == set(range(PARTITIONS)), (mine, used)
    counts = {t: sum(outs[0][0] == t for outs in got.values()) for t in ALL_OUTPUTS}
    assert all(counts.values()), counts
    assert read_topic(kafka, "enrichment-dlq", idle=1.0) == []
    print(f"\n600 transactions: {counts}; worker partitions {owned}")


def test_a_restarted_worker_resumes_its_global_table_from_local_state(kafka: str, workers,
                                                                      tmp_path: Path) -> None:
    start(kafka)
    user_ids = [f"u{i}" for i in range(20)]
    product_ids = [f"p{i}" for i in range(30)]
    phase0 = [user(i) for i in range(20)] + [product(p) for p in product_ids]
    produce_at(kafka, [e for e in phase0 if e[0] == "users"], USERS_V1_AT)
    produce(kafka, [e for e in phase0 if e[0] != "users"])
    a = workers("enrichment", kafka, state_dir=tmp_path / "a")
    b = workers("enrichment", kafka, state_dir=tmp_path / "b")
    wait_split([a, b])
    wait_drained(kafka, "enrichment", ["users"], timeout=90)
    assert "loading 30 records" in a.log()
    assert a.terminate() == 0, a.log()[-3000:]
    wait_split([b])  # b took over everything before a comes back

    while_down = [product(p, 2) for p in product_ids[:5]]
    produce(kafka, while_down)
    a2 = workers("enrichment", kafka, state_dir=tmp_path / "a")
    owned = wait_split([a2, b])
    log = a2.log()
    # Only what was produced while it was down, from the offsets of its local copy.
    assert re.search(r"global tables products: loading 5 records from offsets .* \(local copy "
                     r".*/a/enrichment/__global had products:0=", log), log[-3000:]
    assert "global tables: loaded 5 records" in log, log[-3000:]
    assert metric(log, "streams_recovery_records_remaining", "products") == 0
    assert metric(log, "streams_table_keys", "products") > 0

    # kept current while running
    after_restart = [product(p, 3) for p in product_ids[5:10]] + [("products", "p10", None)]
    produce(kafka, after_restart)
    for state in (tmp_path / "a", tmp_path / "b"):
        info = wait_global_current(kafka, state)
        assert info["keys"] == 29
    txns = transactions(0, 300, user_ids, product_ids[:12])
    produce(kafka, txns)
    wait_drained(kafka, "enrichment", ["transactions", "users"], timeout=90)
    for w in (a2, b):
        assert w.terminate() == 0, w.log()[-3000:]
        assert "Traceback" not in w.log(), w.log()[-3000:]
    got = check_outputs(kafka, [phase0, while_down, after_restart, txns], {0: USERS_V1_AT})
    txn_partition = {json.loads(r.value)["txn_id"]: r.partition
                     for r in read_topic(kafka, "transactions")}
    # the restarted worker processed transactions with products it loaded while starting and
    # products updated after the restart
    restarted = {t for t, p in txn_partition.items() if p in owned[0]}
    names = {outs[0][2]["product_name"] for t, outs in got.items()
             if t in restarted and outs[0][0] != UNENRICHED}
    assert {"p0-v2", "p5-v3"} <= names, sorted(names)


def test_a_table_join_refuses_a_table_topic_with_another_partition_count(kafka: str,
                                                                         tmp_path: Path) -> None:
    """The stream and the table's topic of a join are read by one task per partition: a
    different partition count is refused before anything is consumed (the global table's
    topic may have any count)."""
    t = Topology("tj_copart")
    users = t.table("tj-copart-users")
    products = t.global_table("tj-copart-products")
    (t.stream("tj-copart-txns").join(users, lambda a, b: a)
        .join(products, lambda k, v: k, lambda a, b: a).to("tj-copart-out"))
    topics = ["tj-copart-users", "tj-copart-products", "tj-copart-txns"]
    admin.run(admin.delete_topics(kafka, topics))
    admin.run(admin.ensure_topics(kafka, [TopicSpec("tj-copart-txns", 4),
                                          TopicSpec("tj-copart-users", 3),
                                          TopicSpec("tj-copart-products", 5)]))
    worker = Worker(t, Settings(broker=kafka, state_dir=str(tmp_path), metrics_port=-1))
    with pytest.raises(WorkerFailed, match="co-partitioned.*tj-copart-users"):
        asyncio.run(worker.run())


def test_the_global_table_is_loaded_before_the_first_stream_record(kafka: str,
                                                                  tmp_path: Path) -> None:
    """Products and transactions are both in Kafka before the worker starts: every
    transaction finds its product, even those in the first batch the worker polls."""
    t = Topology("tj_gload")
    products = t.global_table("tj-gload-products")
    (t.stream("tj-gload-txns")
        .join(products, lambda _k, txn: txn["product_id"],
              lambda txn, product: {**txn, "name": product["name"]})
        .to("tj-gload-out"))
    topics = ["tj-gload-products", "tj-gload-txns", "tj-gload-out", t.dlq_topic]
    admin.run(admin.delete_topics(kafka, topics))
    admin.run(admin.ensure_topics(kafka, [TopicSpec(name, PARTITIONS) for name in topics]))
    admin.run(admin.reset_group_to_earliest(kafka, t.name, ["tj-gload-txns"]))
    count = 2000
    produce(kafka, [("tj-gload-products", f"p{i}", {"name": f"n{i}"}) for i in range(count)])
    produce(kafka, [("tj-gload-txns", f"t{i}", {"product_id": f"p{i}"}) for i in range(count)])
    worker = Worker(t, Settings(broker=kafka, state_dir=str(tmp_path), metrics_port=-1,
                                max_batch_records=100))

    async def run() -> None:
        task = asyncio.ensure_future(worker.run())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not task.done():
            ends = await admin.end_offsets(kafka, "tj-gload-txns")
            committed = await admin.committed_offsets(kafka, t.name, ["tj-gload-txns"])
            if sum(committed.values()) >= sum(ends.values()):
                break
            await asyncio.sleep(0.5)
        worker.stop()
        await task

    asyncio.run(run())
    joined = {r.key.decode(): json.loads(r.value) for r in read_topic(kafka, "tj-gload-out")}
    assert joined == {f"t{i}": {"product_id": f"p{i}", "name": f"n{i}"} for i in range(count)}
