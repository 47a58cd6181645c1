"""The stateless reference topology (profile_notifications) against a real broker, through real
``streams worker`` subprocesses: exact output, partition sharing, SIGTERM, dead letters."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections import Counter
from typing import Any

import pytest

from streams import registry
from streams.devtools import generate
from streams.kafka import admin

from tests.conftest import (committed_offsets, create_topology_topics, delete_topology_topics,
                            produce, read_topic)

NAME = "profile_notifications"
INPUT = "profile-views"
OUTPUT = "profile-view-notifications"
DLQ = "profile_notifications-dlq"
NOTABLE = ("Recruiter", "Hiring Manager", "CEO", "CTO")

pytestmark = pytest.mark.broker


# -- helpers ---------------------------------------------------------------------------------------
@pytest.fixture
def topology() -> Any:
    return registry.load(NAME)


def fresh_topics(kafka: str, topology: Any) -> None:
    delete_topology_topics(kafka, topology)
    create_topology_topics(kafka, topology, partitions=4)


def expected_notifications(events: list[tuple[str, Any, Any]]) -> Counter:
    """The oracle: (key, canonical JSON value) of every view by a notable viewer."""
    out: Counter = Counter()
    for _topic, _key, view in events:
        title = view.get("viewer_title") or ""
        if any(t in title for t in NOTABLE):
            out[(view["profile_id"], canon(view))] += 1
    return out


def canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def as_multiset(records: list[Any]) -> Counter:
    return Counter((r.key.decode(), canon(json.loads(r.value))) for r in records)


def end_offsets(kafka: str, topic: str) -> dict[int, int]:
    return admin.run(admin.end_offsets(kafka, topic))


def wait_for(cond: Any, timeout: float, what: str, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_committed_to_end(kafka: str, timeout: float = 60.0) -> dict[tuple[str, int], int]:
    ends = {(INPUT, p): off for p, off in end_offsets(kafka, INPUT).items()}
    last: dict[tuple[str, int], int] = {}

    def reached() -> bool:
        nonlocal last
        last = committed_offsets(kafka, NAME, [INPUT])
        return all(last.get(tp, -1) >= off for tp, off in ends.items())

    try:
        wait_for(reached, timeout, "committed offsets to reach the end of the input", 0.5)
    except AssertionError:
        raise AssertionError(f"committed {last}, end offsets {ends}") from None
    assert all(last[tp] == off for tp, off in ends.items()), (last, ends)
    return last


def assert_exact(records: list[Any], expected: Counter) -> None:
    got = as_multiset(records)
    missing = expected - got
    extra = got - expected
    assert not missing and not extra, (
        f"{len(records)} records, expected {sum(expected.values())}: "
        f"{sum(missing.values())} missing (e.g. {list(missing)[:3]}), "
        f"{sum(extra.values())} unexpected (e.g. {list(extra)[:3]})")


def last_assignment(log: str) -> set[str] | None:
    """Tasks of the latest "assigned N partitions -> tasks [...]" line (None: none yet)."""
    found = re.findall(r"assigned (\d+) partitions -> tasks \[([^\]]*)\]", log)
    if not found:
        return None
    return set(re.findall(r"'([^']+)'", found[-1][1]))


def metrics_port(log: str) -> int | None:
    m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log)
    return int(m.group(1)) if m else None


def consumed_total(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("streams_events_consumed_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def header(rec: Any, name: str) -> bytes | None:
    for k, v in rec.headers or ():
        if k == name:
            return v
    return None


# -- tests -----------------------------------------------------------------------------------------
def test_one_worker_exact_output(kafka: str, topology: Any, workers: Any) -> None:
    fresh_topics(kafka, topology)
    events = generate.events(NAME, 10_000, seed=7)
    expected = expected_notifications(events)
    assert 0 < sum(expected.values()) < len(events)
    produce(kafka, events)
    ends = end_offsets(kafka, INPUT)
    assert sum(ends.values()) == 10_000 and all(ends[p] > 0 for p in range(4)), ends

    started = time.monotonic()
    w = workers(NAME, kafka)
    w.wait_assigned(timeout=60)
    got = read_topic(kafka, OUTPUT, expect=sum(expected.values()), timeout=90)
    print(f"{len(got)} notifications in {time.monotonic() - started:.1f}s")
    wait_committed_to_end(kafka, timeout=60)
    assert w.running
    assert w.terminate(timeout=60) == 0, w.log()[-3000:]

    # Read everything once more with the worker stopped: nothing late, nothing twice.
    records = read_topic(kafka, OUTPUT, idle=2.0)
    assert_exact(records, expected)
    for r in records:
        view = json.loads(r.value)
        assert r.key.decode() == view["profile_id"]
        assert r.timestamp == view["ts"]
    assert read_topic(kafka, DLQ, idle=1.0) == []


def test_two_workers_split_partitions(kafka: str, topology: Any, workers: Any,
                                      tmp_path: Any) -> None:
    fresh_topics(kafka, topology)
    a = workers(NAME, kafka, state_dir=tmp_path / "state-a")
    b = workers(NAME, kafka, state_dir=tmp_path / "state-b")

    def split() -> bool:
        ta, tb = last_assignment(a.log()), last_assignment(b.log())
        for w in (a, b):
            if not w.running:
                raise AssertionError(f"worker exited early:\n{w.log()[-3000:]}")
        return bool(ta and tb and not (ta & tb) and len(ta | tb) == 4)

    wait_for(split, 90, "both workers to hold a share of the 4 partitions")
    assert admin.run(admin.group_members(kafka, NAME)) == 2
    ta, tb = last_assignment(a.log()), last_assignment(b.log())
    print(f"worker a: {sorted(ta or ())}, worker b: {sorted(tb or ())}")

    events = generate.events(NAME, 10_000, seed=11)
    expected = expected_notifications(events)
    produce(kafka, events)
    read_topic(kafka, OUTPUT, expect=sum(expected.values()), timeout=90)
    wait_committed_to_end(kafka, timeout=60)

    ports = [metrics_port(w.log()) for w in (a, b)]
    assert all(ports), ports
    consumed = [consumed_total(p) for p in ports if p]
    print(f"consumed per worker: {consumed}")
    # Each worker still holds the share it had before the input arrived (no rebalance since).
    assert last_assignment(a.log()) == ta and last_assignment(b.log()) == tb
    assert all(c > 0 for c in consumed), consumed
    assert sum(consumed) == len(events), consumed

    assert a.terminate(timeout=60) == 0, a.log()[-3000:]
    assert b.terminate(timeout=60) == 0, b.log()[-3000:]
    assert_exact(read_topic(kafka, OUTPUT, idle=2.0), expected)


def test_sigterm_mid_stream_then_restart(kafka: str, topology: Any, workers: Any) -> None:
    fresh_topics(kafka, topology)
    events = generate.events(NAME, 40_000, seed=23)
    expected = expected_notifications(events)
    total = sum(expected.values())

    # The input keeps arriving while the worker runs, so the SIGTERM lands mid-stream.
    w = workers(NAME, kafka)
    w.wait_assigned(timeout=60)
    producing = threading.Event()
    producing.set()
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            for i in range(0, len(events), 2000):
                produce(kafka, events[i:i + 2000])
                time.sleep(0.1)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            producing.clear()

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()

    def outputs() -> int:
        return sum(end_offsets(kafka, OUTPUT).values())

    wait_for(lambda: outputs() > 0, 60, "first notifications", 0.1)
    assert producing.is_set(), "input was produced before the worker got going; not mid-stream"
    code = w.terminate(timeout=60)
    at_stop = outputs()
    print(f"SIGTERM after {at_stop} of {total} notifications")
    assert code == 0, w.log()[-3000:]
    assert 0 < at_stop < total
    log = w.log()
    assert "final commit" in log and "stopped" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]

    # At-least-once: every notable input below the committed offsets is already in the output.
    committed = committed_offsets(kafka, NAME, [INPUT])
    assert committed, "the stopped worker committed nothing"
    thread.join(120)
    assert not thread.is_alive() and not errors, errors
    inputs = read_topic(kafka, INPUT, expect=len(events), timeout=60)
    assert len(inputs) == len(events)
    covered = Counter()
    for r in inputs:
        view = json.loads(r.value)
        if r.offset < committed.get((INPUT, r.partition), 0) and \
                any(t in view["viewer_title"] for t in NOTABLE):
            covered[(view["profile_id"], canon(view))] += 1
    first_run = as_multiset(read_topic(kafka, OUTPUT, expect=at_stop, timeout=30))
    assert not covered - first_run, "committed input whose output is missing"

    w2 = workers(NAME, kafka)
    w2.wait_assigned(timeout=60)
    read_topic(kafka, OUTPUT, expect=total, timeout=90)
    wait_committed_to_end(kafka, timeout=60)
    assert w2.terminate(timeout=60) == 0, w2.log()[-3000:]

    got = as_multiset(read_topic(kafka, OUTPUT, idle=2.0))
    missing = expected - got
    assert not missing, f"{sum(missing.values())} notifications lost, e.g. {list(missing)[:3]}"
    duplicates = got - expected
    print(f"{sum(got.values())} notifications for {total} expected; "
          f"{sum(duplicates.values())} duplicates")
    for (key, value), n in sorted(duplicates.items())[:50]:
        print(f"  duplicate x{n}: {key} {value}")
    assert not (set(got) - set(expected)), "notifications that were never expected"


def test_bad_input_goes_to_dlq(kafka: str, topology: Any, workers: Any) -> None:
    fresh_topics(kafka, topology)
    now = int(time.time() * 1000)

    def view(i: int, title: str = "Recruiter") -> dict[str, Any]:
        return {"viewer_id": f"u{i}", "viewer_title": title, "profile_id": f"p{i}",
                "source": "search", "ts": now + i}

    malformed = b'{"viewer_id": "u1", "viewer_title": '
    array = b'[1, 2, 3]'
    no_ts = {"viewer_id": "u2", "viewer_title": "CEO", "profile_id": "p2", "source": "feed"}
    bad_title = {**view(3), "viewer_title": 42}  # the topology's filter raises TypeError
    batch = [
        (INPUT, "u0", view(0)),
        (INPUT, "u1", malformed),
        (INPUT, "u5", view(5, "Student")),
        (INPUT, "u6", view(6, "CTO")),
        (INPUT, "u7", array),
        (INPUT, "u2", no_ts),
        (INPUT, "u8", view(8, "Hiring Manager")),
        (INPUT, "u3", bad_title),
        (INPUT, "u9", view(9, "Designer")),
        (INPUT, b"\xff\xfe", view(11, "CEO")),  # a key that is not UTF-8
    ]
    # One partition, so offsets are known: the record at index i has offset i.
    produce(kafka, batch, partition=0)
    reasons = {1: "invalid JSON", 4: "expected a JSON object", 5: "timestamp", 7: "TypeError",
               9: "UTF-8"}

    w = workers(NAME, kafka)
    w.wait_assigned(timeout=60)
    dlq = read_topic(kafka, DLQ, expect=len(reasons), timeout=60)
    good = read_topic(kafka, OUTPUT, expect=3, timeout=60)
    assert sorted(r.key.decode() for r in good) == ["p0", "p6", "p8"]

    inputs = {r.offset: r for r in read_topic(kafka, INPUT, expect=len(batch), timeout=30)}
    assert len(dlq) == len(reasons), [(r.value, r.headers) for r in dlq]
    seen = set()
    for rec in dlq:
        assert header(rec, "source-topic") == INPUT.encode(), rec.headers
        assert header(rec, "source-partition") == b"0", rec.headers
        offset = int(header(rec, "source-offset") or b"-1")
        assert offset in reasons, rec.headers
        original = inputs[offset]
        assert rec.value == original.value
        assert rec.key == original.key
        error = (header(rec, "error") or b"").decode()
        assert reasons[offset] in error, (offset, error)
        seen.add(offset)
    assert seen == set(reasons)

    # Still alive, still processing.
    assert w.running, w.log()[-3000:]
    produce(kafka, [(INPUT, "u10", view(10, "Founder & CEO"))], partition=0)
    good = read_topic(kafka, OUTPUT, expect=4, timeout=60)
    assert sorted(r.key.decode() for r in good) == ["p0", "p10", "p6", "p8"]
    assert w.running, w.log()[-3000:]

    # Offsets are committed past the bad records (to the end of the partition).
    end = len(batch) + 1
    wait_for(lambda: committed_offsets(kafka, NAME, [INPUT]).get((INPUT, 0), -1) >= end, 30,
             f"committed offset {end} on {INPUT}-0")
    assert committed_offsets(kafka, NAME, [INPUT])[(INPUT, 0)] == end
    assert w.terminate(timeout=60) == 0, w.log()[-3000:]
    assert len(read_topic(kafka, DLQ, idle=1.0)) == len(reasons)
