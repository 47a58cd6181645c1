"""The worker's HTTP server without a broker: real task stores behind it, two servers in one
process for the forwarding. Key lookups, windows and scans read committed state; every bad
request is one JSON line with a 4xx; /metrics is the only path that serves metrics."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from streams import Topology, TumblingWindows
from streams.metrics import Metrics
from streams.runtime.compile import subtopologies
from streams.serving.reads import LocalTables
from streams.serving.routing import Routes, TableRouter, key_partition
from streams.serving.server import MAX_KEY_BYTES, Health, QueryServer
from streams.state.meta import TaskId
from streams.state.store import TaskStore
from streams.state.views import open_view

TOPIC = "clicks"


def topology() -> Topology:
    t = Topology("serving_demo")
    grouped = t.stream(TOPIC).group_by_key()
    grouped.count(name="counts")
    grouped.window(TumblingWindows(size=60_000)).count(name="per-minute")
    return t


TOPO = topology()
SUB = next(s for s in subtopologies(TOPO) if "counts" in s.stores)


def partition_of(key: str) -> int:
    return key_partition(key.encode(), 2)


class FakeTask:
    def __init__(self, partition: int, store: TaskStore) -> None:
        self.partition, self.store = partition, store


class FakeTasks:
    """What LocalTables reads of a TaskManager: the running tasks and the opening ones."""

    def __init__(self) -> None:
        self.running: dict[TaskId, FakeTask] = {}
        self.restoring: set[TaskId] = set()

    def opening(self) -> set[TaskId]:
        return set(self.restoring)


def fill(root: Path, partitions: list[int], keys: list[str], tasks: FakeTasks) -> None:
    """Commit counts (key -> len(key)) and two windows per key into the partitions' stores."""
    for p in partitions:
        store = TaskStore(root / f"{SUB.id}_{p}", SUB.stores)
        counts = open_view(store, TOPO.stores["counts"])
        windows = open_view(store, TOPO.stores["per-minute"])
        for key in keys:
            if partition_of(key) == p:
                counts.put(key, len(key))  # type: ignore[attr-defined]
                windows.put(key, 0, 1)  # type: ignore[attr-defined]
                windows.put(key, 60_000, 2)  # type: ignore[attr-defined]
        for view in (counts, windows):
            for kb, vb in view.flush():
                store.put(view.name, kb, vb)
        store.write({})
        tasks.running[TaskId(SUB.id, p)] = FakeTask(p, store)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def server(tasks: FakeTasks, health: Callable[[], Health] | None = None) -> Any:
    metrics = Metrics(TOPO.name)
    metrics.initialise(TOPO)
    metrics.describe_worker("7", "at_least_once", "throughput", None)
    partitions = {t: 2 for s in subtopologies(TOPO) for t in s.topics}
    srv = QueryServer(TOPO, metrics, LocalTables(TOPO, lambda: tasks),  # type: ignore[arg-type]
                      TableRouter(TOPO, partitions), health or (lambda: Health("running")),
                      forward_timeout_s=5)
    port = await srv.start("127.0.0.1", 0)
    srv.endpoint = f"127.0.0.1:{port}"
    try:
        yield srv
    finally:
        await srv.stop()


def fetch(srv: QueryServer, path: str) -> tuple[int, str, Any]:
    """(status, content type, body: JSON decoded, else text), from a thread."""
    try:
        with urllib.request.urlopen(f"http://{srv.endpoint}{path}", timeout=10) as resp:
            status, ctype, body = resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        status, ctype, body = exc.code, exc.headers["Content-Type"] or "", exc.read()
    text = body.decode()
    return status, ctype, json.loads(text) if "json" in ctype else text


async def get(srv: QueryServer, path: str) -> tuple[int, str, Any]:
    return await asyncio.to_thread(fetch, srv, path)


KEYS = [f"user-{i}" for i in range(40)] + ["a/b", "zürich", "with space", "\x00nul"]


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[FakeTasks]:
    tasks = FakeTasks()
    fill(tmp_path, [0, 1], KEYS, tasks)
    yield tasks
    for task in tasks.running.values():
        task.store.close()


def quote(key: str) -> str:
    return urllib.request.quote(key, safe="")


def test_metrics_only_on_metrics_with_the_info_and_process_series(stores: FakeTasks) -> None:
    async def run() -> None:
        async with server(stores) as srv:
            status, ctype, text = await get(srv, "/metrics")
            assert status == 200 and ctype.startswith("text/plain")
            info = [line for line in text.splitlines() if line.startswith("streams_worker_info{")]
            assert len(info) == 1 and info[0].endswith(" 1.0"), info
            for label in ('topology="serving_demo"', 'version="7"', 'guarantee="at_least_once"',
                          'processing_mode="throughput"'):
                assert label in info[0]
            assert "process_cpu_seconds_total" in text
            assert "python_info{" in text and "streams_commits_total" in text
            for path in ("/", "/metric", "/metrics/", "/metricsx", "/foo/metrics",
                         "/tables/metrics"):
                status, ctype, body = await get(srv, path)
                assert status == 404 and ctype == "application/json", path
                assert "streams_" not in json.dumps(body) and body["reason"] in (
                    "no-such-path", "no-such-table"), body

    asyncio.run(run())


def test_key_lookups_answer_committed_values_and_404_for_missing_keys(stores: FakeTasks) -> None:
    async def run() -> None:
        async with server(stores) as srv:
            for key in KEYS:
                status, _, doc = await get(srv, f"/tables/counts/keys/{quote(key)}")
                assert status == 200, doc
                assert doc["value"] == len(key) and doc["key"] == key
                assert doc["partition"] == partition_of(key) and doc["served_by"] == srv.endpoint
            status, _, doc = await get(srv, "/tables/counts/keys/nobody")
            assert status == 404 and doc["reason"] == "not-found"
            assert doc["error"] == "key 'nobody' not found in table 'counts'"
            # a write not committed yet is not visible; once committed it is
            p = partition_of("late")
            store = stores.running[TaskId(SUB.id, p)].store
            store.put("counts", b"late", b"5")
            assert (await get(srv, "/tables/counts/keys/late"))[0] == 404
            store.write({})
            assert (await get(srv, "/tables/counts/keys/late"))[2]["value"] == 5

    asyncio.run(run())


def test_windows_of_a_key_all_or_in_a_time_range(stores: FakeTasks) -> None:
    async def run() -> None:
        async with server(stores) as srv:
            status, _, doc = await get(srv, "/tables/per-minute/keys/user-1")
            assert status == 200
            assert doc["windows"] == [
                {"window_start": 0, "window_end": 60_000, "value": 1},
                {"window_start": 60_000, "window_end": 120_000, "value": 2}]
            _, _, doc = await get(srv, "/tables/per-minute/keys/user-1?from=1&to=60000")
            assert [w["window_start"] for w in doc["windows"]] == [60_000]
            _, _, doc = await get(srv, "/tables/per-minute/keys/user-1?limit=1")
            assert len(doc["windows"]) == 1 and doc["more"] is True
            status, _, doc = await get(srv, "/tables/per-minute/keys/user-1?from=120000")
            assert status == 404 and "no windows in [120000, +inf]" in doc["error"]

    asyncio.run(run())


def test_scans_page_through_every_partition_in_key_order(stores: FakeTasks) -> None:
    async def run() -> None:
        async with server(stores) as srv:
            seen: list[str] = []
            path = "/tables/counts/keys?limit=7"
            while True:
                status, _, doc = await get(srv, path)
                assert status == 200 and doc["complete"] is True
                seen += [e["key"] for e in doc["entries"]]
                if not doc["more"]:
                    break
                path = f"/tables/counts/keys?limit=7&from_key={quote(doc['next_from_key'])}"
            assert seen == sorted(KEYS, key=lambda k: k.encode())
            _, _, doc = await get(srv, "/tables/counts/keys?prefix=&to_key=&limit=1000")
            assert len(doc["entries"]) == len(KEYS) and doc["more"] is False
            _, _, doc = await get(srv, "/tables/counts/keys?prefix=user-1")
            assert [e["key"] for e in doc["entries"]] == sorted(
                k for k in KEYS if k.startswith("user-1"))
            _, _, doc = await get(srv, "/tables/counts/keys?from_key=user-2&to_key=user-3")
            assert [e["key"] for e in doc["entries"]] == sorted(
                k for k in KEYS if "user-2" <= k < "user-3")

    asyncio.run(run())


def test_every_keys_windows_in_a_time_range_in_the_time_index_order(stores: FakeTasks) -> None:
    async def run() -> None:
        async with server(stores) as srv:
            status, _, doc = await get(srv, "/tables/per-minute/windows?from=0&to=0&limit=1000")
            assert status == 200 and doc["complete"] is True and doc["more"] is False
            index_order = sorted(KEYS, key=lambda k: (len(k.encode()), k.encode()))
            assert [w["key"] for w in doc["windows"]] == index_order
            assert {(w["window_start"], w["window_end"], w["value"])
                    for w in doc["windows"]} == {(0, 60_000, 1)}
            _, _, doc = await get(srv, "/tables/per-minute/windows?limit=50")
            got = [(w["window_start"], w["key"]) for w in doc["windows"]]
            every = [(t, k) for t in (0, 60_000) for k in index_order]
            assert got == every[:50] and doc["more"] is True
            status, _, doc = await get(srv, "/tables/per-minute/windows?from=120000")
            assert status == 200 and doc["windows"] == []

    asyncio.run(run())


def test_a_time_range_merges_partitions_in_the_index_order_for_every_limit(
        stores: FakeTasks) -> None:
    tables = LocalTables(TOPO, lambda: stores)  # type: ignore[arg-type, return-value]
    every = [(t, k) for t in (0, 60_000)
             for k in sorted(KEYS, key=lambda k: (len(k.encode()), k.encode()))]
    for limit in range(1, len(every) + 2):
        windows, more = tables.windows_in_range("per-minute", [0, 1], None, None, limit)
        assert [(w["window_start"], w["key"]) for w in windows] == every[:limit]
        assert more == (limit < len(every))


BAD_REQUESTS = [
    ("/tables/counts/keys?limit=-1", 400, "limit must be between 1 and 1000"),
    ("/tables/counts/keys?limit=0", 400, "limit must be between 1 and 1000"),
    ("/tables/counts/keys?limit=1001", 400, "limit must be between 1 and 1000"),
    ("/tables/counts/keys?limit=" + "9" * 400, 400, "limit must be an integer"),
    ("/tables/counts/keys?limit=ten", 400, "limit must be an integer"),
    ("/tables/counts/keys?limit=1&limit=2", 400, "given twice"),
    ("/tables/counts/keys?colour=red", 400, "unknown parameter 'colour'"),
    ("/tables/counts/keys/k?from=1", 400, "unknown parameter 'from'"),
    ("/tables/per-minute/keys/k?from=5&to=1", 400, "from (5) is after to (1)"),
    ("/tables/per-minute/keys/k?from=1e3", 400, "from must be an integer"),
    ("/tables/per-minute/keys?limit=1", 400, "cannot be scanned"),
    ("/tables/counts/windows", 400, "has no windows"),
    ("/tables/per-minute/windows?from=2&to=1", 400, "from (2) is after to (1)"),
    ("/tables/per-minute/windows?prefix=a", 400, "unknown parameter 'prefix'"),
    ("/tables/counts/keys/%FF%FE", 400, "not valid percent-encoded UTF-8"),
    ("/tables/counts/keys?prefix=%C3", 400, "not valid percent-encoded UTF-8"),
    ("/tables/counts/keys/k?partition=2", 400, "partition must be between 0 and 1"),
    ("/tables/counts/keys/" + "k" * (MAX_KEY_BYTES + 1), 400, "bytes is longer than"),
    ("/tables/nope/keys/k", 404, "topology 'serving_demo' has no table 'nope' (tables: "),
    ("/tables/%00/keys", 404, "has no table"),
    ("/tables/counts/keys/k/more", 404, "no such path"),
]


@pytest.mark.parametrize("path,status,error", BAD_REQUESTS)
def test_bad_requests_are_one_json_line(stores: FakeTasks, path: str, status: int,
                                        error: str) -> None:
    async def run() -> None:
        async with server(stores) as srv:
            got, ctype, doc = await get(srv, path)
            assert (got, ctype) == (status, "application/json"), doc
            assert error in doc["error"] and "\n" not in doc["error"], doc
            assert (await get(srv, "/tables/counts/keys/user-1"))[0] == 200  # still serving

    asyncio.run(run())


def test_a_request_line_too_long_for_the_parser_does_not_hurt_the_server(
        stores: FakeTasks) -> None:
    async def run() -> None:
        async with server(stores) as srv:
            status, _, _ = await get(srv, "/tables/counts/keys/" + "k" * 100_000)
            assert status == 400
            req = urllib.request.Request(f"http://{srv.endpoint}/health", method="POST")
            with pytest.raises(urllib.error.HTTPError) as err:
                await asyncio.to_thread(urllib.request.urlopen, req, timeout=10)
            assert err.value.code == 405
            assert (await get(srv, "/tables/counts/keys/user-1"))[0] == 200

    asyncio.run(run())


def test_health_is_503_with_a_reason_until_the_tasks_run(stores: FakeTasks) -> None:
    state = {"health": Health("restoring", "1 tasks opening or restoring state", 1, 1)}

    async def run() -> None:
        async with server(stores, lambda: state["health"]) as srv:
            status, _, doc = await get(srv, "/health")
            assert status == 503 and doc["status"] == "restoring" and doc["reason"]
            state["health"] = Health("running", None, 2, 0)
            status, _, doc = await get(srv, "/health")
            assert status == 200 and doc["status"] == "running" and "reason" not in doc

    asyncio.run(run())


def test_a_restoring_partition_answers_503_and_a_scan_says_it_is_incomplete(
        stores: FakeTasks) -> None:
    async def run() -> None:
        async with server(stores) as srv:
            srv.set_routes(Routes({srv.endpoint: {TOPIC: [0, 1]}}))  # type: ignore[dict-item]
            task_id = TaskId(SUB.id, partition_of("user-1"))
            task = stores.running.pop(task_id)
            stores.restoring.add(task_id)
            try:
                status, _, doc = await get(srv, "/tables/counts/keys/user-1")
                assert status == 503 and doc["reason"] == "restoring"
                _, _, doc = await get(srv, "/tables/counts/keys?limit=1000")
                assert doc["complete"] is False
                assert doc["unavailable"] == [{"partition": task_id.partition,
                                               "reason": "restoring"}]
                assert doc["entries"] and all(partition_of(e["key"]) != task_id.partition
                                              for e in doc["entries"])
            finally:
                stores.running[task_id] = task

    asyncio.run(run())


def test_a_key_owned_elsewhere_is_forwarded_once(tmp_path: Path) -> None:
    here, there = FakeTasks(), FakeTasks()
    fill(tmp_path / "a", [0], KEYS, here)
    fill(tmp_path / "b", [1], KEYS, there)
    remote = next(k for k in KEYS if partition_of(k) == 1)
    stores = [t.store for t in (*here.running.values(), *there.running.values())]

    async def run() -> None:
        async with server(here) as a, server(there) as b:
            routes = Routes({a.endpoint: {TOPIC: [0]}, b.endpoint: {TOPIC: [1]}})  # type: ignore
            a.set_routes(routes)
            b.set_routes(routes)
            status, _, doc = await get(a, f"/tables/counts/keys/{quote(remote)}")
            assert status == 200 and doc["served_by"] == b.endpoint and doc["value"]
            _, _, doc = await get(a, "/tables/counts/keys?limit=1000")
            assert sorted(e["key"] for e in doc["entries"]) == sorted(KEYS)
            assert doc["complete"] is True
            _, _, doc = await get(a, "/tables/counts/keys?limit=5")
            assert [e["key"] for e in doc["entries"]] == sorted(KEYS, key=str.encode)[:5]
            assert doc["more"] is True
            _, _, doc = await get(a, "/tables/per-minute/windows?to=0&limit=1000")
            assert sorted(w["key"] for w in doc["windows"]) == sorted(KEYS)
            _, _, doc = await get(a, f"/tables/counts/owners/{quote(remote)}")
            assert doc == {"table": "counts", "key": remote, "partition": 1,
                           "endpoint": b.endpoint}
            # b's map is stale (it thinks a holds partition 1): it answers 503, never
            # sends the request back to a
            b.set_routes(Routes({a.endpoint: {TOPIC: [0, 1]}}))  # type: ignore[dict-item]
            there.running.clear()
            status, _, doc = await get(a, f"/tables/counts/keys/{quote(remote)}")
            assert status == 503 and doc["reason"] == "rebalancing", doc
            # an owner that does not answer: 502 for a key, "unavailable" in a scan
            dead = f"127.0.0.1:{free_port()}"
            a.set_routes(Routes({a.endpoint: {TOPIC: [0]}, dead: {TOPIC: [1]}}))  # type: ignore
            status, _, doc = await get(a, f"/tables/counts/keys/{quote(remote)}")
            assert status == 502 and doc["reason"] == "owner-unreachable"
            _, _, doc = await get(a, "/tables/counts/keys")
            assert doc["complete"] is False and doc["unavailable"][0]["partition"] == 1

    try:
        asyncio.run(run())
    finally:
        for store in stores:
            store.close()


def test_a_global_table_answers_from_the_workers_own_copy() -> None:
    t = Topology("serving_globals")
    t.global_table("iq-products", name="products")
    t.stream("iq-orders").to("iq-out")
    loaded: dict[str, Any] = {}
    copy = type("Copy", (), {"views": loaded, "__getitem__": lambda self, name: loaded[name]})()
    view = type("View", (), {"get": lambda self, key: {"name": "tea"} if key == "p1" else None})()
    srv = QueryServer(t, Metrics(t.name), LocalTables(t, lambda: None, copy),
                      TableRouter(t, {"iq-orders": 1}), lambda: Health("running"))

    async def run() -> None:
        port = await srv.start("127.0.0.1", 0)
        srv.endpoint = f"127.0.0.1:{port}"
        try:
            status, _, doc = await get(srv, "/tables/products/keys/p1")
            assert status == 503 and doc["reason"] == "restoring"  # not loaded yet
            loaded["products"] = view
            status, _, doc = await get(srv, "/tables/products/keys/p1")
            assert status == 200 and doc["value"] == {"name": "tea"}
            status, _, doc = await get(srv, "/tables/products/keys/p2")
            assert status == 404 and doc["error"] == "key 'p2' not found in global table 'products'"
            status, _, doc = await get(srv, "/tables/products/keys")
            assert status == 400 and "cannot be scanned" in doc["error"]
            _, _, doc = await get(srv, "/tables")
            assert doc["tables"] == [{"table": "products", "kind": "global", "partitions": None}]
        finally:
            await srv.stop()

    asyncio.run(run())
