"""Faust-style agents through the TopologyTestDriver (the worker's batch and commit path)."""

from __future__ import annotations

import asyncio
import doctest
import itertools
import json
import random
import tempfile
import warnings

import faust
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streams.dsl.agents
from streams import Topology
from streams.testing import TopologyTestDriver
from tests.conftest import examples


def _dead(driver: TopologyTestDriver) -> list[tuple[str, int, str]]:
    return [(d.reason, d.source_offset, d.error) for d in driver.read_dead_letters()]


# -- per-event atomicity ---------------------------------------------------------------------------
def _atomic_topology() -> tuple[Topology, list[int]]:
    t = Topology("agents_atomic")
    totals = t.table_store("totals", default=int)
    audit = t.topic("audit")
    starts = itertools.count()
    started: list[int] = []

    @t.agent("amounts", sink=["out"])
    async def add(stream):
        instance = next(starts)
        started.append(instance)
        async for key, value in stream.items():
            totals[key] += value["n"]
            await audit.send(key=key, value={"n": value["n"]})
            if value.get("boom"):
                raise ValueError("boom")
            yield {"total": totals[key], "instance": instance}

    return t, started


def test_a_failing_event_leaves_no_write_no_output_and_a_fresh_instance_takes_the_next():
    t, started = _atomic_topology()
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("amounts", [("a", {"n": 1}, 0), ("a", {"n": 10, "boom": True}, 1),
                                      ("a", {"n": 100}, 2)])
        assert driver.read_output("out") == [("a", {"total": 1, "instance": 0}),
                                             ("a", {"total": 101, "instance": 1})]
        assert driver.read_output("audit") == [("a", {"n": 1}), ("a", {"n": 100})]
        assert _dead(driver) == [("processing", 1, "ValueError: boom (in agent add)")]
        assert driver.table("totals") == {"a": 101}
        assert started == [0, 1]


def test_the_instance_survives_batches_and_only_a_failure_restarts_it():
    t, started = _atomic_topology()
    with TopologyTestDriver(t) as driver:
        for i in range(3):
            driver.pipe_batch("amounts", [("k", {"n": 1}, i)])
        assert [v["instance"] for _, v in driver.read_output("out")] == [0, 0, 0]
        assert started == [0]


# -- yield / send ordering and keys ----------------------------------------------------------------
def test_yield_keeps_the_current_key_and_sends_keep_their_order_within_the_event():
    t = Topology("agents_order")
    log = t.topic("log")

    @t.agent("in", sink=["log"])
    async def order(stream):
        async for value in stream:
            await log.send(key="first", value={"step": 1, "of": value["id"]})
            yield {"step": 2, "of": value["id"]}
            await log.send(key=None, value={"step": 3, "of": value["id"]})

    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("k1", {"id": 1}, 5), ("k2", {"id": 2}, 6)])
        records = driver.read_records("log")
        assert [(r.key, json.loads(r.value), r.timestamp) for r in records] == [
            (b"first", {"step": 1, "of": 1}, 5), (b"k1", {"step": 2, "of": 1}, 5),
            (None, {"step": 3, "of": 1}, 5),
            (b"first", {"step": 1, "of": 2}, 6), (b"k2", {"step": 2, "of": 2}, 6),
            (None, {"step": 3, "of": 2}, 6)]


def test_reads_see_the_events_own_staged_writes():
    t = Topology("agents_reads")
    seen = t.table_store("seen")

    @t.agent("in", sink=["out"])
    async def check(stream):
        async for key, value in stream.items():
            before = key in seen
            seen[key] = value["v"]
            after = (key in seen, seen[key], seen.get(key))
            del seen[key]
            gone = (key in seen, seen.get(key, "none"))
            seen[key] = value["v"] * 2
            yield {"before": before, "after": list(after), "gone": list(gone)}

    with TopologyTestDriver(t) as driver:
        driver.pipe("in", "a", {"v": 3})
        driver.pipe("in", "a", {"v": 4})
        assert driver.read_output("out") == [
            ("a", {"before": False, "after": [True, 3, 3], "gone": [False, "none"]}),
            ("a", {"before": True, "after": [True, 4, 4], "gone": [False, "none"]})]
        assert driver.table("seen") == {"a": 8}


def test_a_value_changed_in_place_is_not_stored_and_the_driver_warns():
    t = Topology("agents_mutation")
    lists = t.table_store("lists", default=list)

    @t.agent("in")
    async def collect(stream):
        async for key, value in stream.items():
            if value["assign"]:
                items = lists[key]
                items.append(value["x"])
                lists[key] = items
            else:
                lists[key].append(value["x"])  # the faust trap: a copy is changed

    with TopologyTestDriver(t) as driver:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # assigning back must not warn
            driver.pipe("in", "a", {"x": 1, "assign": True})
        with pytest.warns(UserWarning, match=r"table 'lists' key 'a' in place"):
            driver.pipe("in", "a", {"x": 2, "assign": False})
        assert driver.table("lists") == {"a": [1]}


# -- forbidden awaits, take, tables outside agents -------------------------------------------------
def test_awaiting_foreign_io_is_a_dead_letter_with_a_clear_reason_and_the_next_event_runs():
    t = Topology("agents_await")
    counts = t.table_store("counts", default=int)

    @t.agent("in", sink=["out"])
    async def sleepy(stream):
        async for key, value in stream.items():
            counts[key] += 1
            if "sleep" in value:
                await asyncio.sleep(value["sleep"])
            yield {"count": counts[key]}

    async def main() -> None:  # inside a running loop, as in the worker: sleep(1) yields a future
        with TopologyTestDriver(t) as driver:
            driver.pipe_batch("in", [("a", {}, 0), ("a", {"sleep": 0}, 1), ("a", {"sleep": 1}, 2),
                                     ("a", {}, 3)])
            assert driver.read_output("out") == [("a", {"count": 1}), ("a", {"count": 2})]
            dead = _dead(driver)
            assert [(r, o) for r, o, _ in dead] == [("await", 1), ("await", 2)]
            assert all("awaited something the framework did not provide" in e for *_, e in dead)
            assert driver.table("counts") == {"a": 2}

    asyncio.run(main())


def test_take_yields_lists_within_a_batch_and_a_failing_list_fails_whole():
    t = Topology("agents_take")
    sums = t.table_store("sums", default=int)

    @t.agent("in", sink=["out"])
    async def chunks(stream):
        async for values in stream.take(3, within=10):
            if any(v.get("boom") for v in values):
                sums["all"] += 1000  # staged, then dropped with the list
                raise ValueError("boom")
            sums["all"] += sum(v["n"] for v in values)
            yield [v["n"] for v in values]

    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("k", {"n": i}, i) for i in range(7)])
        driver.pipe_batch("in", [("k", {"n": 7}, 7), ("j", {"n": 8, "boom": 1}, 8),
                                 ("k", {"n": 9}, 9), ("k", {"n": 10}, 10)])
        # lists never span a batch; the last record's key goes with a list's yield
        assert driver.read_output("out") == [("k", [0, 1, 2]), ("k", [3, 4, 5]), ("k", [6]),
                                             ("k", [10])]
        assert [(d.reason, d.source_offset) for d in driver.read_dead_letters()] == [
            ("processing", 7), ("processing", 8), ("processing", 9)]
        assert driver.table("sums") == {"all": 31}


def test_take_needs_a_positive_size_and_noack_is_refused():
    t = Topology("agents_take_bad")

    @t.agent("in")
    async def bad(stream):
        async for _value in stream.take(0):
            pass

    t2 = Topology("agents_noack")

    @t2.agent("in")
    async def noack(stream):
        async for _value in stream.noack():
            pass

    for topology, text in ((t, "positive number"), (t2, "noack")):
        with TopologyTestDriver(topology) as driver:
            driver.pipe("in", "a", {})
            [dead] = driver.read_dead_letters()
            assert text in dead.error


def test_tables_and_sends_outside_an_agent_raise():
    t = Topology("agents_outside")
    table = t.table_store("t")
    with pytest.raises(RuntimeError, match="outside an agent"):
        table["k"] = 1
    with pytest.raises(RuntimeError, match="outside an agent"):
        t.topic("x").send(key="k", value=1)


def _agent_procs(driver: TopologyTestDriver) -> list:
    from streams.runtime.processors.agents import AgentProc

    stack = [p for task in driver._tasks.values() for ps in task._sources.values() for p in ps]
    found = []
    while stack:
        proc = stack.pop()
        if isinstance(proc, AgentProc):
            found.append(proc)
        stack.extend(proc.children)
    return found


@pytest.mark.parametrize("shape", ["async generator", "coroutine"])
def test_closing_the_task_closes_the_suspended_instance_and_runs_its_finally(shape):
    t = Topology("agents_close")
    closed: list[str] = []

    if shape == "async generator":
        @t.agent("in", sink=["out"])
        async def agent(stream):
            try:
                async for value in stream:
                    yield value
            finally:
                closed.append("closed")
    else:
        @t.agent("in")
        async def agent(stream):
            try:
                async for _value in stream:
                    pass
            finally:
                closed.append("closed")

    async def main() -> None:  # with a running loop and its async generator hooks, as a worker
        errors: list = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        with TopologyTestDriver(t) as driver:
            driver.pipe("in", "a", {"n": 1})
            [proc] = _agent_procs(driver)
            instance = proc._inst  # kept alive here: only an explicit close can finish it
            driver.restart()       # the task is closed, as on a revocation
            assert closed == ["closed"]
            frame = instance.ag_frame if shape == "async generator" else instance.cr_frame
            assert frame is None, "the instance must have finished"
            driver.pipe("in", "a", {"n": 2})
        assert closed == ["closed", "closed"]
        await asyncio.sleep(0)
        assert errors == []

    asyncio.run(main())


def test_an_agent_that_returns_restarts_and_one_that_never_reads_dead_letters_its_record():
    t = Topology("agents_return")

    @t.agent("in", sink=["out"])
    async def one_each(stream):
        async for value in stream:
            yield value
            return  # finished after one event

    t2 = Topology("agents_return_nothing")

    @t2.agent("in", sink=["out"])
    async def lazy(stream):
        return

    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("a", {"i": 1}, 0), ("a", {"i": 2}, 1)])
        assert driver.read_output("out") == [("a", {"i": 1}), ("a", {"i": 2})]
    with TopologyTestDriver(t2) as driver:
        driver.pipe_batch("in", [("a", {"i": 1}, 0), ("a", {"i": 2}, 1)])
        assert [d.reason for d in driver.read_dead_letters()] == ["agent", "agent"]


def test_a_yield_that_cannot_be_written_fails_its_event_only():
    t = Topology("agents_shape")
    counts = t.table_store("counts", default=int)

    @t.agent("in", sink=["out"])
    async def bad(stream):
        async for key, value in stream.items():
            counts[key] += 1
            yield object() if value.get("bad") else {"n": counts[key]}

    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("a", {"bad": True}, 0), ("a", {}, 1)])
        assert driver.read_output("out") == [("a", {"n": 1})]
        assert [d.reason for d in driver.read_dead_letters()] == ["shape"]


# -- other agent shapes ----------------------------------------------------------------------------
def test_a_sync_generator_agent_runs_with_the_same_semantics():
    t = Topology("agents_sync")
    counts = t.table_store("counts", default=int)

    @t.agent("in", sink=["out"])
    def count(stream):
        for key, value in stream.items():
            counts[key] += 1
            if value.get("boom"):
                raise RuntimeError("boom")
            yield {"count": counts[key]}

    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("a", {}, 0), ("a", {"boom": 1}, 1), ("b", {}, 2)])
        driver.pipe("in", "a", {})
        assert driver.read_output("out") == [("a", {"count": 1}), ("b", {"count": 1}),
                                             ("a", {"count": 2})]
        assert [d.reason for d in driver.read_dead_letters()] == ["processing"]


def test_a_plain_function_agent_loops_over_each_batch():
    t = Topology("agents_plain")
    counts = t.table_store("counts", default=int)
    log = t.topic("log")

    @t.agent("in")
    def count(stream):
        for key, _value in stream.items():
            counts[key] += 1
            log.send(key=key, value=counts[key])  # sync code need not await

    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("a", {}, 0), ("a", {}, 1)])
        driver.pipe("in", "b", {})
        assert driver.read_output("log") == [("a", 1), ("a", 2), ("b", 1)]


def test_current_event_and_record_values():
    class Click(faust.Record, serializer="json"):
        user: str
        n: int

    t = Topology("agents_event")

    @t.agent("clicks", value=Click, timestamp=lambda c: c.n * 1000, sink=["out"])
    async def show(stream):
        async for click in stream:
            ev = stream.current_event
            yield {"user": click.user, "key": ev.key, "ts": ev.timestamp, "offset": ev.offset,
                   "topic": ev.topic, "partition": ev.partition,
                   "headers": [[k, v.decode()] for k, v in ev.headers]}

    with TopologyTestDriver(t) as driver:
        driver.pipe("clicks", "k", {"user": "u", "n": 1})
        driver.pipe("clicks", "k", {"user": "v", "n": 2}, headers=[("h", b"x")])
        assert driver.read_output("out") == [
            ("k", {"user": "u", "key": "k", "ts": 1000, "offset": 0, "topic": "clicks",
                   "partition": 0, "headers": []}),
            ("k", {"user": "v", "key": "k", "ts": 2000, "offset": 1, "topic": "clicks",
                   "partition": 0, "headers": [["h", "x"]]})]
        driver.pipe("clicks", "k", {"user": "w"})  # not a Click: refused by its schema
        assert [d.reason for d in driver.read_dead_letters()] == ["invalid"]


def test_group_by_repartitions_before_the_agent():
    t = Topology("agents_group")
    per_user = t.table_store("per-user", default=int)

    @t.agent("clicks", group_by=lambda v: v["user"], sink=["out"])
    async def count(stream):
        async for key, value in stream.items():
            per_user[key] += 1
            yield {"user": value["user"], "count": per_user[key]}

    assert t.repartition_topics() == ["agents_group-count-repartition"]
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("clicks", [("p1", {"user": "u1"}, 0), ("p2", {"user": "u1"}, 1),
                                     ("p1", {"user": "u2"}, 2)])
        assert driver.read_output("out") == [("u1", {"user": "u1", "count": 1}),
                                             ("u1", {"user": "u1", "count": 2}),
                                             ("u2", {"user": "u2", "count": 1})]
        assert driver.table("per-user") == {"u1": 2, "u2": 1}


def test_an_agent_on_a_grouped_stream_and_an_endless_yield_loop(monkeypatch):
    from streams.runtime.processors import agents as runtime

    monkeypatch.setattr(runtime, "MAX_STAGED_PER_EVENT", 50)
    t = Topology("agents_grouped")
    grouped = t.stream("in").group_by(lambda v: v["user"], name="by-user")

    @t.agent(grouped, sink=["out"])
    async def endless(stream):
        async for key, value in stream.items():
            while value.get("loop"):
                yield "again"
            yield key

    assert t.repartition_topics() == ["agents_grouped-by-user-repartition"]
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("x", {"user": "u1", "loop": True}, 0), ("y", {"user": "u2"}, 1)])
        assert driver.read_output("out") == [("u2", "u2")]
        [dead] = driver.read_dead_letters()
        assert dead.reason == "shape" and "more than 50 records" in dead.error
        assert dead.source_topic == "in" and dead.source_offset == 0  # the original input


def test_an_agent_on_a_rekeyed_declarative_stream_repartitions_first():
    t = Topology("agents_rekeyed")
    seen = t.table_store("seen", default=int)
    rekeyed = t.stream("in").filter(lambda v: v["ok"]).select_key(lambda v: v["user"])

    @rekeyed.agent(name="tally", sink=["out"])
    async def tally(stream):
        async for key, _value in stream.items():
            seen[key] += 1
            yield seen[key]

    assert t.repartition_topics() == ["agents_rekeyed-tally-repartition"]
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("x", {"ok": True, "user": "u"}, 0),
                                 ("y", {"ok": False, "user": "u"}, 1),
                                 ("z", {"ok": True, "user": "u"}, 2)])
        assert driver.read_output("out") == [("u", 1), ("u", 2)]


def test_describe_lists_agents_and_their_tables():
    t, _ = _atomic_topology()
    text = t.describe()
    assert "agent add: tables totals; sinks out" in text
    assert "table totals (store)" in text
    assert set(t.output_topics()) == {"out", "audit"}


# -- commits and crashes ---------------------------------------------------------------------------
def _sum_topology() -> Topology:
    t = Topology("agents_sums")
    sums = t.table_store("sums", default=int)

    @t.agent("in", sink=["out"])
    async def add(stream):
        async for key, value in stream.items():
            if value["n"] < 0:
                raise ValueError("negative")
            sums[key] += value["n"]
            yield {"sum": sums[key]}

    return t


@pytest.mark.parametrize("seed", range(5))
def test_state_is_never_double_applied_across_crashes_and_replays(tmp_path, seed):
    rng = random.Random(seed)
    t = _sum_topology()
    expected: dict[str, int] = {}
    with TopologyTestDriver(t, state_dir=tmp_path, commit_every=7) as driver:
        for _round in range(6):
            batch = []
            for i in range(rng.randrange(1, 12)):
                key, n = f"k{rng.randrange(4)}", rng.choice([1, 2, 3, 5, -1])
                batch.append((key, {"n": n}, i))
                if n >= 0:
                    expected[key] = expected.get(key, 0) + n
            driver.pipe_batch("in", batch)
            action = rng.choice(["crash", "crash-new-host", "commit", "none"])
            if action.startswith("crash"):
                driver.restart(commit=False, lose_state=action == "crash-new-host")
                driver.replay()
            elif action == "commit":
                driver.commit()
        assert driver.table("sums") == expected
        # the last output per key is the final sum (outputs may repeat after a crash)
        last = {k: v["sum"] for k, v in driver.read_output("out")}
        assert last == {k: v for k, v in expected.items() if k in last}


_steps = st.lists(st.tuples(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(-1, 5)), min_size=1,
             max_size=8),
    st.sampled_from(["crash", "crash-new-host", "commit", "none"])), min_size=1, max_size=8)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_steps, commit_every=st.integers(1, 12))
def test_property_state_after_any_crashes_equals_the_sum_of_the_valid_inputs(steps, commit_every):
    t = _sum_topology()
    expected: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as state, \
            TopologyTestDriver(t, state_dir=state, commit_every=commit_every) as driver:
        for batch, action in steps:
            driver.pipe_batch("in", [(k, {"n": n}, 0) for k, n in batch])
            for k, n in batch:
                if n >= 0:
                    expected[k] = expected.get(k, 0) + n
            if action.startswith("crash"):
                driver.restart(commit=False, lose_state=action == "crash-new-host")
                driver.replay()
            elif action == "commit":
                driver.commit()
        assert driver.table("sums") == expected
        failed = sum(1 for batch, _ in steps for _, n in batch if n < 0)
        # dead letters: each negative input at least once (replays may repeat some)
        assert len(driver.read_dead_letters()) >= failed


def test_a_crash_mid_batch_closes_the_instance_and_replays_from_the_commit(tmp_path):
    t = _sum_topology()
    with TopologyTestDriver(t, state_dir=tmp_path, commit_every=10_000) as driver:
        driver.pipe_batch("in", [("a", {"n": 1}, 0), ("a", {"n": 2}, 1)])
        driver.commit()
        driver.pipe_batch("in", [("a", {"n": 4}, 2)])
        driver.restart(commit=False)
        assert driver.table("sums") == {"a": 3}  # the uncommitted event is not in state
        driver.replay()
        assert driver.table("sums") == {"a": 7}


# -- windowed tables -------------------------------------------------------------------------------
def test_tumbling_table_counts_per_window_of_the_events_time():
    t = Topology("agents_windows")
    clicks = t.table_store("clicks", default=int).tumbling(10_000, expires=10_000)

    @t.agent("in", timestamp="ts", sink=["out"])
    async def count(stream):
        async for key, _value in stream.items():
            clicks[key] += 1
            yield {"current": clicks[key].current(), "now": clicks[key].now()}

    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [("a", {"ts": 1_000}, None), ("a", {"ts": 9_999}, None),
                                 ("a", {"ts": 10_000}, None), ("a", {"ts": 2_000}, None)])
        assert [v for _, v in driver.read_output("out")] == [
            {"current": 1, "now": 1}, {"current": 2, "now": 2}, {"current": 1, "now": 1},
            {"current": 3, "now": 1}]
        assert driver.table("clicks") == {"a": {0: 3, 10_000: 1}}
        # a window is deleted once stream time reaches its end + expires
        driver.pipe("in", "a", {"ts": 29_999})  # [0, 10 s) is gone (20 s), [10 s, 20 s) not yet
        assert driver.table("clicks") == {"a": {10_000: 1, 20_000: 1}}
        driver.pipe("in", "a", {"ts": 30_000})
        assert driver.table("clicks") == {"a": {20_000: 1, 30_000: 1}}


def test_hopping_table_writes_every_window_of_the_event():
    t = Topology("agents_hopping")
    last = t.table_store("last").hopping(10, 5)

    @t.agent("in", timestamp="ts", sink=["out"])
    async def put(stream):
        async for key, value in stream.items():
            last[key] = value["ts"]
            yield last[key].current()

    with TopologyTestDriver(t) as driver:
        driver.pipe("in", "a", {"ts": 12})
        assert driver.read_output("out") == [("a", 12)]
        assert driver.table("last") == {"a": {5: 12, 10: 12}}


def test_a_table_value_too_large_for_the_changelog_fails_the_event_whole():
    t = Topology("agents_large")
    blobs = t.table_store("blobs", default=str)

    @t.agent("in", sink=["out"])
    async def grow(stream):
        async for key, value in stream.items():
            yield {"before": len(blobs[key])}  # staged first: must vanish with the event
            blobs[key] = blobs[key] + value["s"]

    with TopologyTestDriver(t) as driver:
        for _ in range(3):
            driver.pipe("in", "a", {"s": "x" * 400_000})
        assert [v["before"] for _, v in driver.read_output("out")] == [0, 400_000]
        assert [d.reason for d in driver.read_dead_letters()] == ["processing"]
        assert len(driver.table("blobs")["a"]) == 800_000


def test_doctests() -> None:
    result = doctest.testmod(streams.dsl.agents, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_tables_get_reads_an_agents_windowed_table_with_its_window_bounds(tmp_path):
    from streams.tables.inspect import get_value, get_windows

    t = Topology("agents_inspect")
    clicks = t.table_store("clicks", default=int).tumbling(10_000)
    totals = t.table_store("totals", default=int)

    @t.agent("in", timestamp="ts")
    async def count(stream):
        async for key, _value in stream.items():
            clicks[key] += 1
            totals[key] += 1

    # the worker's layout: <state dir>/<topology>/<task>
    with TopologyTestDriver(t, state_dir=tmp_path / t.name) as driver:
        driver.pipe_batch("in", [("a", {"ts": 1_000}, None), ("a", {"ts": 12_000}, None),
                                 ("a", {"ts": 13_000}, None)])
        driver.commit()
        assert get_windows(t, str(tmp_path), "clicks", "a") == [
            {"window_start": 0, "window_end": 10_000, "value": 1},
            {"window_start": 10_000, "window_end": 20_000, "value": 2}]
        assert get_value(t, str(tmp_path), "totals", "a") == 3
