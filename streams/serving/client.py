"""Asking a running worker for a table's key over HTTP (``streams tables get --worker``), and
finding one through the topology's consumer group (``--worker auto``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode

from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from ..kafka import admin
from ..kafka.clients import Kafka
from ..runtime.assignor import ENDPOINT_KEY


class WorkerUnavailable(RuntimeError):
    """No worker answered, or the one asked could not answer now (one line)."""


def base_url(worker: str) -> str:
    """``http://host:port`` from ``host:port`` or a URL (a trailing ``/`` dropped)."""
    url = worker if "://" in worker else f"http://{worker}"
    return url.rstrip("/")


def group_endpoints(bootstrap: Kafka, topology: str) -> list[str]:
    """The endpoints the live workers of ``topology`` advertise in its consumer group."""
    out = []
    for raw in admin.run(admin.group_member_metadata(bootstrap, topology)):
        try:
            meta = ConsumerProtocolMemberMetadata.decode(raw)
            doc = json.loads(meta.user_data)
        except Exception:  # noqa: BLE001 - another client's metadata: not one of ours
            continue
        endpoint = doc.get(ENDPOINT_KEY) if isinstance(doc, dict) else None
        if isinstance(endpoint, str) and endpoint:
            out.append(endpoint)
    return sorted(set(out))


def get_key(worker: str, table: str, key: str, as_of: int | None = None,
            timeout_s: float = 15.0) -> dict[str, Any]:
    """The worker's answer for ``key`` of ``table`` (it forwards to the key's owner): the
    JSON document of ``GET /tables/<table>/keys/<key>``. A missing key or table raises
    LookupError, any other refusal :class:`WorkerUnavailable`, with the worker's one line."""
    url = f"{base_url(worker)}/tables/{quote(table, safe='')}/keys/{quote(key, safe='')}"
    if as_of is not None:
        url += "?" + urlencode({"as_of": as_of})
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        try:
            doc = json.loads(exc.read())
            message = str(doc.get("error") or doc)
        except ValueError:
            message = f"HTTP {exc.code} {exc.reason}"
        if exc.code == 404:
            raise LookupError(message) from None
        raise WorkerUnavailable(f"{base_url(worker)}: {message}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WorkerUnavailable(f"no answer from {base_url(worker)} ({reason})") from None


__all__ = ["WorkerUnavailable", "base_url", "get_key", "group_endpoints"]
