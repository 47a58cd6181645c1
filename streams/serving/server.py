"""The worker's HTTP server: ``/metrics``, ``/health`` and reads of its tables, with routing.

One server per worker, on its metrics port (loopback by default). Paths (README "Interactive
queries and health"; every answer but ``/metrics`` is JSON, every error one line
``{"error": ..., "reason": ...}``):

* ``GET /metrics`` — Prometheus text (the only path that serves it);
* ``GET /health`` — 200 while the worker runs its tasks, 503 while it starts, rebalances,
  restores or has lost the broker;
* ``GET /tables`` and ``GET /tables/<table>`` — the tables, and which worker owns each partition;
* ``GET /tables/<table>/keys/<key>`` — a key's value (windowed tables: its windows,
  ``?from=&to=`` epoch ms; versioned tables: ``?as_of=``), answered by whichever worker owns
  the key: a worker that does not hold it forwards the request to the owner (one hop) and
  relays the answer;
* ``GET /tables/<table>/owners/<key>`` — the partition and owner of a key, without reading it;
* ``GET /tables/<table>/keys?prefix=&from_key=&to_key=&limit=`` — a scan of the whole table in
  key order: the worker reads its own partitions and asks the owners of the others;
* ``GET /tables/<table>/windows?from=&to=&limit=`` — every key's windows in a time range, from
  every partition likewise.

Keys in paths are percent-encoded UTF-8 (``/`` as ``%2F``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_to_bytes

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..dsl.topology import Topology
from ..metrics import Metrics
from ..serdes import json_dumps
from .reads import (DEFAULT_LIMIT, KEY_VALUE_KINDS, MAX_LIMIT, VERSIONED_KIND, WINDOWED_KINDS,
                    LocalTables, NotServedHere, prefix_range)
from .routing import Routes, TableRouter

log = logging.getLogger(__name__)

FORWARDED = "X-Streams-Forwarded"  # set on a forwarded request: answer it here, never again
MAX_KEY_BYTES = 16 * 1024          # a key (or key bound) longer than this is refused (400)
_MAX_LINE = 64 * 1024              # request line limit of the HTTP parser (aiohttp: 8190)
QUERYABLE_KINDS = (*KEY_VALUE_KINDS, *WINDOWED_KINDS, VERSIONED_KIND)

# aiohttp logs a malformed request (a request line over _MAX_LINE, non-HTTP bytes) with a
# traceback at ERROR; it has already answered 400, so that is not the worker's error.
_protocol_log = logging.getLogger(f"{__name__}.protocol")
_protocol_log.setLevel(logging.CRITICAL)


class HttpError(Exception):
    """An answer other than 200: ``status``, one line, a short machine-readable ``reason``."""

    def __init__(self, status: int, message: str, reason: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.reason, self.extra = status, reason, extra


def _bad(message: str) -> HttpError:
    return HttpError(400, message, "bad-request")


@dataclass
class Health:
    """What ``/health`` says: ``status`` "running" (200) or why not (503)."""

    status: str
    reason: str | None = None
    running_tasks: int = 0
    restoring_tasks: int = 0


def _json(status: int, doc: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json_dumps(doc) + b"\n",
                        content_type="application/json", headers=headers)


def _error(exc: HttpError) -> web.Response:
    headers = {"Retry-After": "1"} if exc.status == 503 else None
    return _json(exc.status, {"error": str(exc), "reason": exc.reason, **exc.extra}, headers)


class QueryServer:
    """Serves one worker. ``health()`` says how the worker is; ``tables`` reads its tasks;
    ``router`` places keys; :meth:`set_routes` takes the group's endpoint map."""

    def __init__(self, topology: Topology, metrics: Metrics, tables: LocalTables,
                 router: TableRouter, health: Callable[[], Health],
                 forward_timeout_s: float = 10.0) -> None:
        self.topology = topology
        self.metrics = metrics
        self.tables = tables
        self.router = router
        self.health = health
        self.routes = Routes()
        self.endpoint: str | None = None  # "host:port" others reach this server at
        self.forward_timeout_s = forward_timeout_s
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def set_routes(self, routes: Routes) -> None:
        self.routes = routes

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (a free port if it is taken); returns the bound port."""
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        self._runner = runner = web.AppRunner(app, access_log=None, max_line_size=_MAX_LINE,
                                              logger=_protocol_log)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError:
            await web.TCPSite(runner, host, 0).start()
            log.warning("metrics port %s is taken; serving on %s", port,
                        runner.addresses[-1][1])
        return int(runner.addresses[-1][1])

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- dispatch ---------------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            if request.method not in ("GET", "HEAD"):
                raise HttpError(405, f"method {request.method} not allowed (only GET)",
                                "method-not-allowed")
            raw_path, _, raw_query = request.raw_path.partition("?")
            parts = [_segment(s) for s in raw_path.split("/")[1:]]
            query = _query(raw_query)
            return await self._route(request, parts, query)
        except HttpError as exc:
            return _error(exc)
        except Exception as exc:  # noqa: BLE001 - one line to the client and the log
            log.exception("HTTP %s %s failed", request.method, request.path[:200])
            return _error(HttpError(500, f"internal error: {type(exc).__name__}: {exc}",
                                    "internal"))

    async def _route(self, request: web.Request, parts: list[str],
                     query: dict[str, str]) -> web.StreamResponse:
        if parts == ["metrics"]:
            _only(query)
            return web.Response(body=generate_latest(self.metrics.registry),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})
        if parts == ["health"]:
            _only(query)
            return self._health()
        if parts == ["tables"]:
            _only(query)
            return self._list_tables()
        if len(parts) >= 2 and parts[0] == "tables":
            table = parts[1]
            if len(parts) == 2:
                _only(query)
                return self._table_info(self._queryable(table))
            if len(parts) == 3 and parts[2] == "keys":
                return await self._scan(request, self._queryable(table), query)
            if len(parts) == 3 and parts[2] == "windows":
                return await self._windows(request, self._queryable(table), query)
            if len(parts) == 4 and parts[2] in ("keys", "owners"):
                key = _key(parts[3])
                if parts[2] == "owners":
                    _only(query, "partition")
                    return self._owner(self._queryable(table), key, query)
                return await self._get(request, table, key, query)
        raise HttpError(404, f"no such path {'/' + '/'.join(parts)!r}; paths: /metrics, "
                        "/health, /tables, /tables/<table>, /tables/<table>/keys[/<key>], "
                        "/tables/<table>/windows, /tables/<table>/owners/<key>",
                        "no-such-path")

    # -- health and metadata ----------------------------------------------------------------------
    def _health(self) -> web.Response:
        h = self.health()
        doc: dict[str, Any] = {"status": h.status, "topology": self.topology.name,
                               "endpoint": self.endpoint,
                               "tasks": {"running": h.running_tasks,
                                         "restoring": h.restoring_tasks}}
        if h.reason:
            doc["reason"] = h.reason
        return _json(200 if h.status == "running" else 503, doc)

    def _list_tables(self) -> web.Response:
        rows: list[dict[str, Any]] = [
            {"table": name, "kind": spec.kind, "partitions": self.router.table_partitions(name)}
            for name, spec in self.topology.stores.items() if spec.kind in QUERYABLE_KINDS]
        rows += [{"table": name, "kind": "global", "partitions": None}
                 for name in self.topology.global_tables]
        return _json(200, {"topology": self.topology.name, "endpoint": self.endpoint,
                           "tables": rows})

    def _table_info(self, table: str) -> web.Response:
        if table in self.topology.global_tables:
            return _json(200, {"table": table, "kind": "global", "served_by": self.endpoint})
        n = self.router.table_partitions(table)
        owners = {str(p): self.router.owner_of_partition(table, p, self.routes)
                  for p in range(n)}
        return _json(200, {"table": table, "kind": self.tables.kind(table), "partitions": n,
                           "owners": owners,
                           "running_here": self.tables.running_partitions(table)})

    def _owner(self, table: str, key: str, query: dict[str, str]) -> web.Response:
        partition = self._partition(table, key, query)
        return _json(200, {"table": table, "key": key, "partition": partition,
                           "endpoint": self.router.owner_of_partition(table, partition,
                                                                      self.routes)})

    def _queryable(self, table: str) -> str:
        if table in self.topology.global_tables:
            return table
        spec = self.topology.stores.get(table)
        queryable = [t for t, s in self.topology.stores.items() if s.kind in QUERYABLE_KINDS]
        if spec is None:
            known = ", ".join([*queryable, *self.topology.global_tables]) or "none"
            raise HttpError(404, f"topology {self.topology.name!r} has no table {table!r} "
                            f"(tables: {known})", "no-such-table")
        if spec.kind not in QUERYABLE_KINDS:
            raise HttpError(404, f"{table!r} is an internal {spec.kind} store, not a table",
                            "no-such-table")
        return table

    def _partition(self, table: str, key: str, query: dict[str, str]) -> int:
        n = self.router.table_partitions(table)
        if "partition" in query:
            return _int(query, "partition", 0, n - 1)
        try:
            return self.router.partition_for(table, key)
        except (ValueError, TypeError) as exc:
            raise _bad(f"key {key!r} cannot be a key of table {table!r}: {exc}") from None

    # -- key reads --------------------------------------------------------------------------------
    async def _get(self, request: web.Request, table: str, key: str,
                   query: dict[str, str]) -> web.StreamResponse:
        table = self._queryable(table)
        if table in self.topology.global_tables:
            _only(query)
            return self._get_global(table, key)
        kind = self.tables.kind(table)
        allowed = {"window": ("partition", "from", "to", "limit"),
                   "session": ("partition", "from", "to", "limit"),
                   VERSIONED_KIND: ("partition", "as_of")}.get(kind, ("partition",))
        _only(query, *allowed)
        partition = self._partition(table, key, query)
        try:
            return self._read_key(table, kind, partition, key, query)
        except NotServedHere as exc:
            return await self._elsewhere(request, table, partition, exc)

    def _read_key(self, table: str, kind: str, partition: int, key: str,
                  query: dict[str, str]) -> web.Response:
        where = {"table": table, "key": key, "partition": partition}
        doc: dict[str, Any] = {**where, "served_by": self.endpoint}
        if kind in WINDOWED_KINDS:
            t_from = _int(query, "from") if "from" in query else None
            t_to = _int(query, "to") if "to" in query else None
            if t_from is not None and t_to is not None and t_from > t_to:
                raise _bad(f"from ({t_from}) is after to ({t_to})")
            limit = _limit(query)
            windows, more = self.tables.windows(table, partition, key, t_from, t_to, limit)
            if not windows:
                span = "" if t_from is None and t_to is None else \
                    f" in [{'-inf' if t_from is None else t_from}, " \
                    f"{'+inf' if t_to is None else t_to}]"
                raise HttpError(404, f"key {key!r} has no windows{span} in table {table!r}",
                                "not-found", **where)
            return _json(200, {**doc, "windows": windows, "more": more})
        as_of = _int(query, "as_of") if "as_of" in query else None
        value = self.tables.get(table, partition, key, as_of)
        if value is None:
            when = "" if as_of is None else f" as of {as_of}"
            raise HttpError(404, f"key {key!r} not found in table {table!r}{when}",
                            "not-found", **where)
        return _json(200, {**doc, "value": value})

    def _get_global(self, table: str, key: str) -> web.Response:
        try:
            value = self.tables.get_global(table, key)
        except NotServedHere:
            raise HttpError(503, f"global table {table!r} is loading here; ask again",
                            "restoring", table=table) from None
        if value is None:
            raise HttpError(404, f"key {key!r} not found in global table {table!r}",
                            "not-found", table=table, key=key)
        return _json(200, {"table": table, "key": key, "served_by": self.endpoint,
                           "value": value})

    async def _elsewhere(self, request: web.Request, table: str, partition: int,
                         exc: NotServedHere) -> web.StreamResponse:
        """The partition is not served here: forward to its owner, or say why nobody can
        answer now (503: ask again)."""
        owner = self.router.owner_of_partition(table, partition, self.routes)
        if exc.state == "restoring":
            raise HttpError(503, str(exc), "restoring", table=table, partition=partition)
        if request.headers.get(FORWARDED) or owner is None or owner == self.endpoint:
            raise HttpError(503, f"no worker serves partition {partition} of table {table!r} "
                            "right now (the group is assigning partitions); ask again",
                            "rebalancing", table=table, partition=partition)
        status, body, content_type = await self._forward(owner, request.raw_path)
        return web.Response(status=status, body=body, content_type=content_type,
                            headers={"Retry-After": "1"} if status == 503 else None)

    async def _forward(self, owner: str, raw_path: str) -> tuple[int, bytes, str]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.forward_timeout_s))
        try:
            async with self._session.get(f"http://{owner}{raw_path}",
                                         headers={FORWARDED: self.endpoint or "1"}) as resp:
                return resp.status, await resp.read(), resp.content_type
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise HttpError(502, f"the owner {owner} did not answer "
                            f"({type(exc).__name__}: {exc})", "owner-unreachable",
                            endpoint=owner) from None

    # -- scans ------------------------------------------------------------------------------------
    async def _scan(self, request: web.Request, table: str,
                    query: dict[str, str]) -> web.Response:
        """A key range of a key/value table, from every partition, in key bytes order."""
        _only(query, "prefix", "from_key", "to_key", "limit", "partitions")
        if table in self.topology.global_tables or self.tables.kind(table) not in KEY_VALUE_KINDS:
            kind = "global" if table in self.topology.global_tables else self.tables.kind(table)
            raise _bad(f"table {table!r} ({kind}) cannot be scanned: ask for a key "
                       "(/tables/<table>/keys/<key>)")
        limit = _limit(query)
        start, end = self._scan_range(table, query)
        serialize = self.topology.stores[table].key_serde.serialize

        def local(partitions: list[int]) -> tuple[list[dict[str, Any]], bool]:
            page = self.tables.scan(table, partitions, start, end, limit)
            return [{"key": k, "value": v} for _, k, v in page.entries], page.more

        out = await self._gather(request, table, query, "keys", local,
                                 lambda e: (serialize(e["key"]) or b"",))
        if out["more"] and out["entries"]:
            # the next page starts right after the last key (its smallest successor)
            out["next_from_key"] = f"{out['entries'][-1]['key']}\u0000"
        return _json(200, out)

    async def _windows(self, request: web.Request, table: str,
                       query: dict[str, str]) -> web.Response:
        """Every key's windows in a time range, from every partition, by time then key
        (shorter keys first, as the store's time index orders them): window stores by start
        (``start`` in ``[from, to]``), session stores by end."""
        _only(query, "from", "to", "limit", "partitions")
        kind = "global" if table in self.topology.global_tables else self.tables.kind(table)
        if kind not in WINDOWED_KINDS:
            raise _bad(f"table {table!r} ({kind}) has no windows")
        t_from = _int(query, "from") if "from" in query else None
        t_to = _int(query, "to") if "to" in query else None
        if t_from is not None and t_to is not None and t_from > t_to:
            raise _bad(f"from ({t_from}) is after to ({t_to})")
        limit = _limit(query)
        serialize = self.topology.stores[table].key_serde.serialize
        by = "window_end" if kind == "session" else "window_start"

        def local(partitions: list[int]) -> tuple[list[dict[str, Any]], bool]:
            return self.tables.windows_in_range(table, partitions, t_from, t_to, limit)

        def order(window: dict[str, Any]) -> tuple[Any, ...]:  # the time index's order
            kb = serialize(window["key"]) or b""
            return window[by], len(kb), kb

        out = await self._gather(request, table, query, "windows", local, order)
        out["windows"] = out.pop("entries")
        return _json(200, out)

    async def _gather(self, request: web.Request, table: str, query: dict[str, str],
                      what: str, local: Callable[[list[int]], tuple[list[dict[str, Any]], bool]],
                      order: Callable[[dict[str, Any]], tuple[Any, ...]]) -> dict[str, Any]:
        """Scatter-gather: ``local(partitions)`` reads this worker's partitions, the owners of
        the others are asked for theirs (``/tables/<table>/<what>?...&partitions=``); the
        entries are merged by ``order`` and cut at ``limit``. A forwarded request reads only
        locally. Partitions nobody answered for are listed in ``unavailable``."""
        limit = _limit(query)
        n = self.router.table_partitions(table)
        wanted = (_partition_list(query["partitions"], n) if "partitions" in query
                  else list(range(n)))
        here = set(self.tables.running_partitions(table)) & set(wanted)
        opening = set(self.tables.opening_partitions(table))
        remote: dict[str, list[int]] = {}
        unavailable: list[dict[str, Any]] = []
        forwarded = bool(request.headers.get(FORWARDED))
        for p in wanted:
            if p in here:
                continue
            owner = self.router.owner_of_partition(table, p, self.routes)
            if forwarded or owner is None or owner == self.endpoint:
                unavailable.append({"partition": p,
                                    "reason": "restoring" if p in opening else "rebalancing"})
            else:
                remote.setdefault(owner, []).append(p)
        entries, more = local(sorted(here))
        for owner, parts in sorted(remote.items()):
            doc, status = await self._remote(owner, table, what, query, parts)
            if status != 200:
                unavailable += [{"partition": p, "reason": doc.get("reason", "error"),
                                 "endpoint": owner} for p in parts]
                continue
            unavailable += doc.get("unavailable", [])
            more = more or bool(doc.get("more"))
            entries += doc.get(what if what != "keys" else "entries", [])
        entries.sort(key=order)
        if len(entries) > limit:
            entries, more = entries[:limit], True
        return {"table": table, "served_by": self.endpoint, "entries": entries, "more": more,
                "complete": not unavailable,
                "unavailable": sorted(unavailable, key=lambda u: u["partition"])}

    def _scan_range(self, table: str, query: dict[str, str]) -> tuple[bytes, bytes | None]:
        serialize = self.topology.stores[table].key_serde.serialize

        def bound(name: str) -> bytes:
            if query[name] == "":  # (an empty bound: no bound)
                return b""
            return serialize(_key(query[name])) or b""

        start, end = prefix_range(bound("prefix")) if "prefix" in query else (b"", None)
        if "from_key" in query:
            start = max(start, bound("from_key"))
        if query.get("to_key"):
            to = bound("to_key")
            end = to if end is None else min(end, to)
        return start, end

    async def _remote(self, owner: str, table: str, what: str, query: dict[str, str],
                      parts: list[int]) -> tuple[dict[str, Any], int]:
        args = {**{k: v for k, v in query.items() if k != "partitions"},
                "partitions": ",".join(map(str, parts))}
        qs = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in args.items())
        path = f"/tables/{quote(table, safe='')}/{what}?{qs}"
        try:
            status, body, _ = await self._forward(owner, path)
        except HttpError as exc:
            return {"reason": exc.reason}, exc.status
        try:
            doc = json.loads(body)
        except ValueError:
            return {"reason": "bad-answer"}, 502
        return (doc if isinstance(doc, dict) else {"reason": "bad-answer"}), status


# -- request parsing (every failure: 400 with one line) --------------------------------------------
def _segment(raw: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("the path is not valid percent-encoded UTF-8") from None


def _key(key: str) -> str:
    if key == "":
        raise _bad("empty key")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise _bad(f"key of {len(key.encode('utf-8', 'surrogatepass'))} bytes is longer than "
                   f"{MAX_KEY_BYTES} bytes")
    return key


def _query(raw: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=False,
                          errors="strict", max_num_fields=20)
    except UnicodeDecodeError:
        raise _bad("the query string is not valid percent-encoded UTF-8") from None
    except ValueError as exc:
        raise _bad(f"bad query string: {exc}") from None
    out: dict[str, str] = {}
    for k, v in pairs:
        if k in out:
            raise _bad(f"parameter {k!r} given twice")
        out[k] = v
    return out


def _only(query: dict[str, str], *known: str) -> None:
    extra = sorted(set(query) - set(known))
    if extra:
        allowed = ", ".join(known) or "none"
        raise _bad(f"unknown parameter {extra[0]!r} here (allowed: {allowed})")


def _int(query: dict[str, str], name: str, low: int = -(1 << 63),
         high: int = (1 << 63) - 1) -> int:
    text = query[name]
    try:
        if len(text) > 20:
            raise ValueError
        value = int(text, 10)
    except ValueError:
        raise _bad(f"{name} must be an integer, got {text[:40]!r}") from None
    if not low <= value <= high:
        raise _bad(f"{name} must be between {low} and {high}, got {value}")
    return value


def _limit(query: dict[str, str]) -> int:
    return _int(query, "limit", 1, MAX_LIMIT) if "limit" in query else DEFAULT_LIMIT


def _partition_list(text: str, n: int) -> list[int]:
    out = []
    for item in text.split(","):
        out.append(_int({"partitions": item}, "partitions", 0, n - 1))
    return sorted(set(out))


__all__ = ["FORWARDED", "Health", "HttpError", "MAX_KEY_BYTES", "QueryServer"]
