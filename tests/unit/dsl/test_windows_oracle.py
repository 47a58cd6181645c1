"""Windowed aggregations against an independent brute-force oracle of Kafka Streams' rules.

The oracle below simulates Kafka Streams 4.0's ``KStreamWindowAggregate``,
``KStreamSessionWindowAggregate`` and ``KStreamSlidingWindowAggregate`` record by record with
plain dicts, lists and loops. It does not use streams' window math (``windows_for``,
``close_time``, ``merge_bounds``): windows, close times and merges are recomputed here:

* stream time = the largest timestamp processed so far, updated with a record *before* the
  record is checked, record by record inside a poll batch;
* tumbling/hopping ``[start, start + size)``, starts multiples of ``advance`` and >= 0; a window
  is open while ``end > stream time - grace``; a record none of whose windows is open is late,
  a hopping record with some open windows updates only those. A result is stamped with the
  largest record timestamp of its window (Kafka's timestamped window store);
* sliding (difference ``d``): windows ``[s, s + d]`` inclusive, open while ``s + d >= stream
  time - grace``; a record is late when ``ts + d < stream time - grace``. The windows are the
  left window ``[ts - d, ts]`` of every accepted record (``[0, d]`` for ``ts < d``) and the right
  window ``[ts + 1, ts + 1 + d]`` of every accepted record with a later accepted one within it,
  created when they become needed if they are still open, with every accepted record of the key
  within their bounds; an existing open window takes each later record within its bounds.
  Results are stamped with the window's largest record timestamp;
* sessions ``[first, last]`` inclusive; a record merges with the key's open sessions with
  ``end >= ts - gap and start <= ts + gap``; the record is late when the merged session is
  already closed (``end < stream time - gap - grace``); the merged aggregate is
  ``merger(...merger(initializer(), s1)..., sn)``, then the record is added. Results and
  retractions are stamped with their session's end;
* after each record the windows stream time closed are closed: emitted (final mode) and
  deleted, so a later record never changes them; a closed session is not merged into later;
* emit "update": after each record, one output per updated window by increasing start (sessions:
  tombstones for the merged-away sessions first); emit "final": every window once, when it
  closes, in (window end, key) order per batch/advance, stamped as above.

Output values are ``{**aggregate, window_start, window_end}`` (``{"value": n, ...}`` for count and
sum); every output carries headers window_start/window_end; late records go to the late topic
with their original key/value and the position of the input record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from streams import HoppingWindows, SessionWindows, SlidingWindows, Topology, TumblingWindows
from streams.testing import TopologyTestDriver
from tests.conftest import examples

IN, OUT, LATE = "in", "out", "late"
NAME = "agg"
KINDS = ["tumbling", "hopping", "sliding", "session"]
MODES = ["update", "final"]


# -- the oracle -----------------------------------------------------------------------------------

def initializer() -> dict:
    # "inits" counts the initializer calls in an aggregate: it tells how sessions were merged
    return {"count": 0, "sum": 0, "ids": [], "inits": 1}


def adder(agg: dict, value: dict) -> dict:
    return {"count": agg["count"] + 1, "sum": agg["sum"] + value["n"],
            "ids": list(agg["ids"]) + [value["id"]], "inits": agg["inits"]}


def merger(a: dict, b: dict) -> dict:
    return {"count": a["count"] + b["count"], "sum": a["sum"] + b["sum"],
            "ids": list(a["ids"]) + list(b["ids"]), "inits": a["inits"] + b["inits"]}


@dataclass
class Oracle:
    kind: str          # tumbling | hopping | sliding | session
    mode: str          # update | final
    size: int = 0      # tumbling/hopping; sliding: the time difference d
    advance: int = 0   # hopping (tumbling: = size)
    gap: int = 0       # session
    grace: int = 0
    stream_time: int = -1  # nothing processed yet: no window is closed
    windows: dict = field(default_factory=dict)   # (key, start) -> [agg, max ts]  (time, sliding)
    sessions: dict = field(default_factory=dict)  # key -> [[start, end, agg]] (sessions)
    accepted: dict = field(default_factory=dict)  # key -> [(ts, value)]        (sliding)
    out: list = field(default_factory=list)       # (key, agg | None, start, end, timestamp)
    late: list = field(default_factory=list)      # ids of the late input records
    late_windows: list = field(default_factory=list)  # (id, start, end) of a late window record
    pending: list = field(default_factory=list)   # closed in this batch: (end, key, start, agg, ts)

    def end_of(self, start: int) -> int:
        return start + self.size  # exclusive for tumbling/hopping, inclusive for sliding

    # windows and close times, recomputed from the definitions
    def windows_of(self, ts: int) -> list[tuple[int, int]]:
        step = self.size if self.kind == "tumbling" else self.advance
        return [(s, s + self.size) for s in range(0, ts + 1, step) if s <= ts < s + self.size]

    def is_closed(self, end: int) -> bool:
        if self.kind == "session":  # Kafka: end < stream time - gap - grace
            return end < self.stream_time - self.gap - self.grace
        if self.kind == "sliding":  # inclusive end: end < stream time - grace
            return end < self.stream_time - self.grace
        return end <= self.stream_time - self.grace  # exclusive end

    def _close(self) -> None:
        if self.kind == "session":
            for key in list(self.sessions):
                keep = []
                for start, end, agg in self.sessions[key]:
                    if self.is_closed(end):
                        self.pending.append((end, key, start, agg, end))
                    else:
                        keep.append([start, end, agg])
                self.sessions[key] = keep
        else:
            for (key, start), (agg, newest) in list(self.windows.items()):
                if self.is_closed(self.end_of(start)):
                    del self.windows[(key, start)]
                    self.pending.append((self.end_of(start), key, start, agg, newest))

    def _flush(self) -> None:
        closed, self.pending = self.pending, []
        if self.mode == "final":
            for end, key, start, agg, ts in sorted(closed, key=lambda c: (c[0], c[1])):
                self.out.append((key, agg, start, end, ts))

    def batch(self, records: list[tuple[str, dict, int]]) -> None:
        for key, value, ts in records:
            self.stream_time = max(self.stream_time, ts)  # the record's own timestamp counts
            if self.kind == "session":
                self._session_record(key, value, ts)
            elif self.kind == "sliding":
                self._sliding_record(key, value, ts)
            else:
                self._time_record(key, value, ts)
            self._close()  # record by record, not once per batch
        self._flush()

    def advance_to(self, ts: int) -> None:
        self.stream_time = max(self.stream_time, ts)
        self._close()
        self._flush()

    def _time_record(self, key: str, value: dict, ts: int) -> None:
        mine = self.windows_of(ts)
        open_ = [(s, e) for s, e in mine if not self.is_closed(e)]
        if not open_:
            self.late.append(value["id"])
            self.late_windows.append((value["id"], mine[-1][0], mine[-1][1]))
            return
        for s, e in open_:  # increasing start
            agg, newest = self.windows.get((key, s), (initializer(), ts))
            agg, newest = adder(agg, value), max(newest, ts)
            self.windows[(key, s)] = [agg, newest]
            if self.mode == "update":
                self.out.append((key, agg, s, e, newest))

    def _sliding_record(self, key: str, value: dict, ts: int) -> None:
        d = self.size
        if ts + d < self.stream_time - self.grace:  # even its right window is closed
            self.late.append(value["id"])
            self.late_windows.append((value["id"], ts + 1, ts + 1 + d))
            return
        mine = self.accepted.setdefault(key, [])
        mine.append((ts, value))
        updated = {}
        for (k, s), w in self.windows.items():
            if k == key and s <= ts <= s + d:  # every stored window is open (closed: deleted)
                w[0], w[1] = adder(w[0], value), max(w[1], ts)
                updated[s] = w
        wanted = {0 if ts < d else ts - d}  # the left window ([0, d] for an early record)
        if any(ts < u <= ts + 1 + d for u, _ in mine):
            wanted.add(ts + 1)  # its right window, once a record falls into it
        # the right window of every earlier record this one falls into
        wanted |= {p + 1 for p, _ in mine if p < ts <= p + 1 + d}
        for s in wanted:
            if (key, s) in self.windows or self.is_closed(s + d):
                continue
            inside = sorted((t, v["id"], v) for t, v in mine if s <= t <= s + d)
            agg = initializer()
            for _t, _i, v in inside:
                agg = adder(agg, v)
            self.windows[(key, s)] = updated[s] = [agg, max(t for t, _i, _v in inside)]
        if self.mode == "update":
            for s in sorted(updated):
                self.out.append((key, updated[s][0], s, s + d, updated[s][1]))

    def _session_record(self, key: str, value: dict, ts: int) -> None:
        sessions = self.sessions.setdefault(key, [])  # open ones only (closed: deleted)
        merged = [x for x in sessions if x[1] >= ts - self.gap and x[0] <= ts + self.gap]
        merged.sort(key=lambda x: x[0])
        start = min([x[0] for x in merged] + [ts])
        end = max([x[1] for x in merged] + [ts])
        if self.is_closed(end):  # the merged session is closed already
            self.late.append(value["id"])
            return
        agg = initializer()
        for x in merged:
            agg = merger(agg, x[2])
        agg = adder(agg, value)
        for x in merged:
            sessions.remove(x)
        sessions.append([start, end, agg])
        if self.mode == "update":
            for old_start, old_end, _ in merged:
                if (old_start, old_end) != (start, end):
                    self.out.append((key, None, old_start, old_end, old_end))
            self.out.append((key, agg, start, end, end))


# -- running the real thing -----------------------------------------------------------------------

@dataclass
class Scenario:
    kind: str
    size: int
    advance: int
    gap: int
    grace: int
    batches: list  # [[(key, value, ts)]]

    def spec(self) -> Any:
        if self.kind == "tumbling":
            return TumblingWindows(size=self.size, grace=self.grace)
        if self.kind == "hopping":
            return HoppingWindows(size=self.size, advance=self.advance, grace=self.grace)
        if self.kind == "sliding":
            return SlidingWindows(max_difference=self.size, grace=self.grace)
        return SessionWindows(gap=self.gap, grace=self.grace)

    def oracle(self, mode: str) -> Oracle:
        return Oracle(self.kind, mode, size=self.size, advance=self.advance, gap=self.gap,
                      grace=self.grace)

    def end_time(self) -> int:
        """A stream time that closes every window."""
        top = max([ts for b in self.batches for _, _, ts in b] + [0])
        return top + self.size + self.gap + self.grace + 10


def build(kind_spec: Any, mode: str, op: str = "aggregate") -> Topology:
    t = Topology("winoracle", late_topic=LATE)
    w = t.stream(IN, timestamp="ts").group_by_key().window(kind_spec)
    if op == "count":
        table = w.count(name=NAME, emit=mode)
    elif op == "sum":
        table = w.sum(lambda v: v["n"], name=NAME, emit=mode)
    elif isinstance(kind_spec, SessionWindows):
        table = w.aggregate(initializer, adder, merger=merger, name=NAME, emit=mode)
    else:
        table = w.aggregate(initializer, adder, name=NAME, emit=mode)
    table.to(OUT)
    return t


def render(op: str, key: str, agg: dict | None, start: int, end: int, ts: int) -> tuple:
    """What the oracle's output looks like on the output topic."""
    if agg is None:
        return (key, None, start, end, ts)
    if op == "count":
        value: dict = {"value": agg["count"]}
    elif op == "sum":
        value = {"value": agg["sum"]}
    else:
        value = dict(agg)
    return (key, {**value, "window_start": start, "window_end": end}, start, end, ts)


def expected_outputs(oracle_out: list, op: str) -> list:
    return [render(op, *o) for o in oracle_out]


def _headers(rec: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in rec.headers}


def read_out(driver: TopologyTestDriver) -> list[tuple]:
    got = []
    for rec in driver.read_records(OUT):
        h = _headers(rec)
        ws = int(h["window_start"]) if "window_start" in h else None
        we = int(h["window_end"]) if "window_end" in h else None
        value = None if rec.value is None else json.loads(rec.value)
        got.append((rec.key.decode(), value, ws, we, rec.timestamp))
    return got


def read_late(driver: TopologyTestDriver, inputs: dict[int, tuple]) -> list[int]:
    """Ids of the late records, checking each late record's content and headers."""
    ids = []
    for rec in driver.read_records(LATE):
        h = _headers(rec)
        assert h.get("reason") == "late", h
        assert "error" in h, h
        assert h.get("source-topic") == IN, h
        assert h.get("source-partition") == "0", h
        offset = int(h["source-offset"])
        key, value, _ts = inputs[offset]
        assert rec.key is not None and rec.key.decode() == key
        assert rec.value is not None and json.loads(rec.value) == value
        assert "window_start" in h and "window_end" in h, h
        ids.append(offset)
    return ids


def late_headers(driver_late_records: list) -> list[tuple[int, int, int]]:
    return [(int(_headers(r)["source-offset"]), int(_headers(r)["window_start"]),
             int(_headers(r)["window_end"])) for r in driver_late_records]


def normalize(outputs: list[tuple]) -> list[tuple]:
    """Sort each run of consecutive tombstones of one key. Kafka Streams'
    ``KStreamSessionWindowAggregate`` forwards a tombstone for every merged-away session before
    the merged session's update; the order among those tombstones is the session store's
    iteration order, an implementation detail that neither this oracle nor the contract fixes."""
    out: list[tuple] = []
    run: list[tuple] = []

    def flush() -> None:
        out.extend(sorted(run, key=lambda r: (r[2], r[3])))
        run.clear()

    for o in outputs:
        if o[1] is None:
            if run and run[0][0] != o[0]:
                flush()
            run.append(o)
        else:
            flush()
            out.append(o)
    flush()
    return out


def all_inputs(sc: Scenario) -> dict[int, tuple]:
    return {value["id"]: (key, value, ts) for b in sc.batches for key, value, ts in b}


def late_total(driver: TopologyTestDriver) -> int:
    return sum(task.late.get(f"{NAME}-window", 0) for task in driver._tasks.values())


# -- scenarios ------------------------------------------------------------------------------------

@st.composite
def scenarios(draw: st.DrawFn, kind: str, max_records: int = 40) -> Scenario:
    size = advance = gap = 0
    if kind in ("tumbling", "sliding"):
        size = advance = draw(st.integers(1, 20))
    elif kind == "hopping":
        size = draw(st.integers(2, 20))
        advance = draw(st.integers(1, size))
    else:
        gap = draw(st.integers(1, 10))
    grace = draw(st.integers(0, 10))
    scale = size or gap
    keys = draw(st.sampled_from([["a"], ["a", "b"], ["a", "b", "c"]]))
    count = draw(st.integers(1, max_records))
    steps = draw(st.lists(st.tuples(
        st.sampled_from(keys),
        st.integers(0, 4),                       # drift of the base time
        st.integers(-scale, scale),              # jitter around it
        st.integers(0, 9),                       # 0: a big jump backwards
        st.integers(-5, 20)),                    # the value's integer field
        min_size=count, max_size=max_records))
    base = draw(st.integers(0, 30))
    records = []
    for i, (key, drift, jitter, jump, n) in enumerate(steps):
        base += drift
        if jump == 0:
            base = max(0, base - (3 * scale + grace))
        ts = max(0, base + jitter)
        records.append((key, {"n": n, "ts": ts, "id": i}, ts))
    sizes = draw(st.lists(st.integers(1, 8), min_size=len(records), max_size=len(records)))
    batches, i = [], 0
    for s in sizes:
        if i < len(records):
            batches.append(records[i:i + s])
            i += s
    if i < len(records):
        batches.append(records[i:])
    return Scenario(kind, size, advance, gap, grace, batches)


def ops_for(kind: str) -> st.SearchStrategy[str]:
    return st.sampled_from(["aggregate", "aggregate", "count", "sum"])


SETTINGS = settings(max_examples=examples(60), deadline=None, report_multiple_bugs=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- 1. property tests: record by record against the oracle ---------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(data=st.data())
def test_windowed_aggregation_matches_the_oracle(kind: str, mode: str, data: st.DataObject) -> None:
    sc = data.draw(scenarios(kind), label="scenario")
    op = data.draw(ops_for(kind), label="op")
    oracle = sc.oracle(mode)
    inputs = all_inputs(sc)
    with TopologyTestDriver(build(sc.spec(), mode, op)) as driver:
        for b in sc.batches:
            driver.pipe_batch(IN, b)
            oracle.batch(b)
        driver.advance_stream_time(sc.end_time())
        oracle.advance_to(sc.end_time())
        late_records = list(driver.topics.get(LATE, []))
        got_late = read_late(driver, inputs)
        got = read_out(driver)
        late_count = late_total(driver)
    want = expected_outputs(oracle.out, op)
    assert got_late == oracle.late
    assert late_count == len(oracle.late)
    if kind != "session":  # the latest of the record's windows (all closed)
        assert late_headers(late_records) == oracle.late_windows
    assert normalize(got) == normalize(want)
    if mode == "final":
        # every window exactly once, globally in (end, key) order; no tombstones. (Two final
        # sessions of a key may share a start: [0,0] closes, then 0 still merges into an open
        # [1,2] -- but never an end: a new session ending there would be closed, late.)
        assert all(v is not None for _, v, _, _, _ in got)
        assert [(we, k) for k, _, _, we, _ in got] == sorted((we, k) for k, _, _, we, _ in got)
        assert len({(k, we) for k, _, _, we, _ in got}) == len(got)


# -- 4. restarts ----------------------------------------------------------------------------------

RESTARTS = {
    "commit": dict(commit=True),
    "commit-lose-state": dict(commit=True, lose_state=True),
    "crash": dict(commit=False),
    "crash-lose-state": dict(commit=False, lose_state=True),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(40), deadline=None, report_multiple_bugs=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_restart_in_the_middle_matches_the_oracle(kind: str, mode: str,
                                                  data: st.DataObject) -> None:
    sc = data.draw(scenarios(kind, max_records=30), label="scenario")
    how = data.draw(st.sampled_from(sorted(RESTARTS)), label="restart")
    n = len(sc.batches)
    crash_at = data.draw(st.integers(0, n - 1), label="restart after batch")
    commit_at = data.draw(st.integers(-1, crash_at), label="commit after batch")
    oracle = sc.oracle(mode)
    inputs = all_inputs(sc)
    out_len, late_len = [0], [0]  # oracle outputs / late records after batch i: index i + 1
    with TopologyTestDriver(build(sc.spec(), mode), commit_every=10**9) as driver:
        for i, b in enumerate(sc.batches):
            driver.pipe_batch(IN, b)
            oracle.batch(b)
            out_len.append(len(oracle.out))
            late_len.append(len(oracle.late))
            if i == commit_at:
                driver.commit()
            if i == crash_at:
                driver.restart(**RESTARTS[how])
                driver.replay()
        driver.advance_stream_time(sc.end_time())
        oracle.advance_to(sc.end_time())
        got_late = read_late(driver, inputs)
        got = read_out(driver)
    want = expected_outputs(oracle.out, "aggregate")
    if RESTARTS[how]["commit"]:
        assert normalize(got) == normalize(want)
        assert got_late == oracle.late
        return
    # at least once: the outputs of the batches after the commit come again, as exact duplicates
    committed, crashed = commit_at + 1, crash_at + 1
    distinct = {repr(o) for o in got}
    assert distinct == {repr(o) for o in want}
    expected = want[:out_len[crashed]] + want[out_len[committed]:]
    assert normalize(got) == normalize(expected)
    assert got_late == (oracle.late[:late_len[crashed]] + oracle.late[late_len[committed]:])


# -- 2. the Kafka Streams session example ---------------------------------------------------------

def _session_run(mode: str, grace: int, batches: list[list[int]], key: str = "k") -> tuple:
    ids = iter(range(100))
    t = build(SessionWindows(gap=5, grace=grace), mode)
    inputs = {}
    with TopologyTestDriver(t) as driver:
        for b in batches:
            recs = []
            for ts in b:
                i = next(ids)
                recs.append((key, {"n": ts, "ts": ts, "id": i}, ts))
                inputs[i] = recs[-1]
            driver.pipe_batch(IN, recs)
        before_advance = read_out(driver)
        driver.advance_stream_time(1000)
        return before_advance, read_out(driver), read_late(driver, inputs)


def _agg(ids: list[int], tss: list[int], inits: int = 1) -> dict:
    """The aggregate of ``ids`` (timestamps ``tss``); ``inits``: initializer calls in it (a
    session merged from n sessions: 1 + theirs, as Kafka Streams merges)."""
    return {"count": len(ids), "sum": sum(tss), "ids": ids, "inits": inits}


@pytest.mark.parametrize("batches", [[[10], [12], [20], [16]], [[10, 12, 20, 16]]],
                         ids=["one-by-one", "one-batch"])
def test_kafka_session_example_update(batches: list) -> None:
    out, after, late = _session_run("update", 10, batches)
    def v(s: int, e: int, ids: list[int], tss: list[int], inits: int = 1) -> tuple:
        return ("k", {**_agg(ids, tss, inits), "window_start": s, "window_end": e}, s, e, e)
    expected = [
        v(10, 10, [0], [10]),
        ("k", None, 10, 10, 10), v(10, 12, [0, 1], [10, 12], 2),
        v(20, 20, [2], [20]),
        # 16 merges [10,12] and [20,20] into [10,20]: both retracted (each stamped with its
        # end), then the merged session (stamped with its end)
        ("k", None, 10, 12, 12), ("k", None, 20, 20, 20),
        v(10, 20, [0, 1, 2, 3], [10, 12, 20, 16], 1 + 2 + 1),
    ]
    assert normalize(out) == normalize(expected)
    assert after == [] and late == []


@pytest.mark.parametrize("batches", [[[10], [12], [20], [16]], [[10, 12, 20, 16]]],
                         ids=["one-by-one", "one-batch"])
def test_kafka_session_example_final(batches: list) -> None:
    out, after, late = _session_run("final", 10, batches)
    assert out == []  # [10,20] closes at stream time 31
    assert after == [("k", {**_agg([0, 1, 2, 3], [10, 12, 20, 16], 4),
                            "window_start": 10, "window_end": 20}, 10, 20, 20)]
    assert late == []


@pytest.mark.parametrize("batches", [[[10], [12], [20], [16]], [[10, 12, 20, 16]]],
                         ids=["one-by-one", "one-batch"])
def test_session_example_without_grace_does_not_reopen_a_closed_session(batches: list) -> None:
    """Grace 0: at stream time 20, [10,12] is closed (12 < 20 - 5 - 0) and emitted; 16 then
    merges only with [20,20] (a closed session never changes again)."""
    out, after, late = _session_run("final", 0, batches)
    first = ("k", {**_agg([0, 1], [10, 12], 2), "window_start": 10, "window_end": 12},
             10, 12, 12)
    second = ("k", {**_agg([2, 3], [20, 16], 2), "window_start": 16, "window_end": 20},
              16, 20, 20)
    assert out + after == [first, second]
    assert out == [first]
    assert late == []


# -- 3. late handling at the boundaries -----------------------------------------------------------

def _run(spec: Any, mode: str, batches: list[list[tuple[str, int]]]) -> tuple:
    """batches of (key, ts); returns (outputs, late ids, outputs after the final advance)."""
    t = build(spec, mode)
    inputs, i = {}, 0
    with TopologyTestDriver(t) as driver:
        for b in batches:
            recs = []
            for key, ts in b:
                recs.append((key, {"n": 1, "ts": ts, "id": i}, ts))
                inputs[i] = recs[-1]
                i += 1
            driver.pipe_batch(IN, recs)
        out = read_out(driver)
        late = read_late(driver, inputs)
        late_n = late_total(driver)
        driver.advance_stream_time(10_000)
        after = read_out(driver)
    assert late_n == len(late)
    return out, late, after


def _oracle_run(sc_kind: str, mode: str, batches: list, **kw: int) -> Oracle:
    o = Oracle(sc_kind, mode, **kw)
    i = 0
    for b in batches:
        recs = []
        for key, ts in b:
            recs.append((key, {"n": 1, "ts": ts, "id": i}, ts))
            i += 1
        o.batch(recs)
    return o


@pytest.mark.parametrize("split", [True, False], ids=["batches", "one-batch"])
@pytest.mark.parametrize("mode", MODES)
def test_tumbling_record_at_the_close_boundary_is_late(mode: str, split: bool) -> None:
    # [0,10) with grace 5 closes at stream time 15
    spec = TumblingWindows(size=10, grace=5)
    recs = [("a", 9), ("b", 14), ("a", 0), ("b", 15), ("a", 9), ("b", 0)]
    batches = [[r] for r in recs] if split else [recs]
    out, late, after = _run(spec, mode, batches)
    assert late == [4, 5]  # stream time 15 == end + grace: closed
    # stamped with the largest record timestamp of the window
    a_0 = ("a", {**_agg([0, 2], [1, 1]), "window_start": 0, "window_end": 10}, 0, 10, 9)
    b_10 = ("b", {**_agg([1, 3], [1, 1]), "window_start": 10, "window_end": 20}, 10, 20, 15)
    if mode == "final":
        assert out == [a_0]
        assert after == [b_10]
    else:
        assert a_0 in out and out[-1] == b_10
        assert after == []
    o = _oracle_run("tumbling", mode, batches, size=10, grace=5)
    assert o.late == late


@pytest.mark.parametrize("split", [True, False], ids=["batches", "one-batch"])
@pytest.mark.parametrize("mode", MODES)
def test_hopping_record_partly_late_updates_the_open_windows(mode: str, split: bool) -> None:
    spec = HoppingWindows(size=10, advance=5, grace=0)
    # 12 is in [5,15) and [10,20); at stream time 15 [5,15) is closed, [10,20) open
    recs = [("a", 7), ("b", 15), ("a", 12), ("a", 4)]
    batches = [[r] for r in recs] if split else [recs]
    out, late, after = _run(spec, mode, batches)
    assert late == [3]  # 4 is only in [0,10), closed
    def v(s: int, ids: list[int], ts: int) -> tuple:
        return ("a", {**_agg(ids, [1] * len(ids)), "window_start": s, "window_end": s + 10},
                s, s + 10, ts)
    if mode == "update":
        assert [o for o in out if o[0] == "a"] == [v(0, [0], 7), v(5, [0], 7), v(10, [2], 12)]
    else:  # [5,15) without the 12
        assert [o for o in out if o[0] == "a"] == [v(0, [0], 7), v(5, [0], 7)]
        assert [o for o in after if o[0] == "a"] == [v(10, [2], 12)]
    o = _oracle_run("hopping", mode, batches, size=10, advance=5, grace=0)
    assert o.late == late


@pytest.mark.parametrize("split", [True, False], ids=["batches", "one-batch"])
@pytest.mark.parametrize("mode", MODES)
def test_session_close_boundary(mode: str, split: bool) -> None:
    spec = SessionWindows(gap=5, grace=3)
    # [10,10] closes at stream time 19 (end < stream time - gap - grace)
    still_open = [("a", 10), ("b", 18), ("a", 7)]   # stream time 18 == end + gap + grace: merges
    closed = [("a", 10), ("b", 19), ("a", 7)]       # stream time 19: [10,10] closed, 7 is late
    for recs, expect_late in ((still_open, []), (closed, [2])):
        batches = [[r] for r in recs] if split else [recs]
        out, late, after = _run(spec, mode, batches)
        assert late == expect_late
        o = _oracle_run("session", mode, batches, gap=5, grace=3)
        assert o.late == late
        o.advance_to(10_000)
        assert normalize(out + after) == normalize(expected_outputs(o.out, "aggregate"))
    # and the merged session [7,10] in the first case
    out, _, after = _run(spec, "final", [[r] for r in still_open])
    assert ("a", {**_agg([0, 2], [1, 1], 2), "window_start": 7, "window_end": 10}, 7, 10, 10) in (
        out + after)


# -- the oracle itself, on hand-checked cases -----------------------------------------------------

def test_oracle_self_check() -> None:
    o = Oracle("hopping", "update", size=10, advance=3)
    assert o.windows_of(4) == [(0, 10), (3, 13)]
    assert o.windows_of(10) == [(3, 13), (6, 16), (9, 19)]
    s = Oracle("session", "update", gap=5, grace=100)
    for i, ts in enumerate([10, 12, 20, 16]):
        s.batch([("k", {"n": 1, "ts": ts, "id": i}, ts)])
    assert [(k, None if a is None else a["ids"], ws, we, ts) for k, a, ws, we, ts in s.out] == [
        ("k", [0], 10, 10, 10), ("k", None, 10, 10, 10), ("k", [0, 1], 10, 12, 12),
        ("k", [2], 20, 20, 20), ("k", None, 10, 12, 12), ("k", None, 20, 20, 20),
        ("k", [0, 1, 2, 3], 10, 20, 20)]
    assert normalize([("k", None, 5, 6), ("k", None, 1, 2), ("k", {}, 1, 6)]) == [
        ("k", None, 1, 2), ("k", None, 5, 6), ("k", {}, 1, 6)]


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(200), deadline=None)
@given(data=st.data())
def test_oracle_update_and_final_modes_agree(kind: str, data: st.DataObject) -> None:
    """The oracle's two modes describe the same windows: the last update of every window that
    is not retracted afterwards is its final result; the final results are disjoint sessions."""
    sc = data.draw(scenarios(kind), label="scenario")
    upd, fin = sc.oracle("update"), sc.oracle("final")
    for b in sc.batches:
        upd.batch(b)
        fin.batch(b)
    upd.advance_to(sc.end_time())
    fin.advance_to(sc.end_time())
    assert upd.late == fin.late
    last: dict = {}
    for key, agg, ws, we, ts in upd.out:
        if agg is None:
            del last[(key, ws, we)]
        else:
            last[(key, ws, we)] = (agg, ts)
    assert sorted(last.items(), key=repr) == sorted(
        (((k, ws, we), (agg, ts)) for k, agg, ws, we, ts in fin.out), key=repr)
    # every non-late record is counted once per window it fell into (sessions: exactly once;
    # sliding: a record whose own windows closed may only be in earlier records' windows)
    counted = sorted(i for _, agg, _, _, _ in fin.out for i in agg["ids"])
    on_time = [i for i in all_inputs(sc) if i not in set(fin.late)]
    if kind == "session":
        assert counted == on_time
    elif kind != "sliding":
        assert set(counted) == set(on_time)
    inclusive = kind in ("session", "sliding")
    for key, agg, ws, we, stamp in fin.out:
        times = [all_inputs(sc)[i][2] for i in agg["ids"]]
        for i in agg["ids"]:
            k, _, ts = all_inputs(sc)[i]
            assert k == key and ws <= ts and (ts <= we if inclusive else ts < we)
        assert stamp == (we if kind == "session" else max(times))


@pytest.mark.parametrize("mode", MODES)
def test_late_record_after_a_repartition_names_the_original_input(mode: str) -> None:
    """group_by repartitions: the late record is the one the window operator received (key =
    group key), and its source headers name the original input record."""
    t = Topology("winoracle2", late_topic=LATE)
    (t.stream(IN, timestamp="ts").group_by(lambda v: v["city"], name="by-city")
     .window(TumblingWindows(size=10)).count(name=NAME, emit=mode).to(OUT))
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch(IN, [("r1", {"city": "x", "ts": 15}, 15),
                               ("r2", {"city": "x", "ts": 3}, 3),
                               ("r3", {"city": "x", "ts": 12}, 12)])
        driver.advance_stream_time(100)
        (late,) = driver.read_records(LATE)
        out = read_out(driver)
    h = _headers(late)
    assert (late.key, json.loads(late.value)) == (b"x", {"city": "x", "ts": 3})
    assert (h["reason"], h["source-topic"], h["source-partition"], h["source-offset"]) == (
        "late", IN, "0", "1")
    assert (h["window_start"], h["window_end"]) == ("0", "10")
    assert out[-1] == ("x", {"value": 2, "window_start": 10, "window_end": 20}, 10, 20, 15)


@pytest.mark.parametrize("split", [True, False], ids=["batches", "one-batch"])
@pytest.mark.parametrize("mode", MODES)
def test_session_closed_by_an_earlier_record_of_the_batch_is_not_merged(mode: str,
                                                                        split: bool) -> None:
    """Gap 2, grace 0: after 0 and 3, stream time 3 closes [0,0] (0 < 3 - 2 - 0): it is
    final (emitted, deleted). 1 then merges with [3,3] only -- whether 3 and 1 came in one poll
    batch or not (stream time advances record by record)."""
    recs = [("a", 0), ("a", 3), ("a", 1)]
    batches = [[r] for r in recs] if split else [recs]
    out, late, after = _run(SessionWindows(gap=2), mode, batches)
    assert late == []
    def v(s: int, e: int, ids: list[int]) -> tuple:
        return ("a", {**_agg(ids, [1] * len(ids), len(ids)), "window_start": s, "window_end": e},
                s, e, e)
    if mode == "final":
        assert out + after == [v(0, 0, [0]), v(1, 3, [1, 2])]
    else:
        assert normalize(out) == [v(0, 0, [0]), v(3, 3, [1]), ("a", None, 3, 3, 3),
                                  v(1, 3, [1, 2])]
    o = _oracle_run("session", mode, batches, gap=2)
    o.advance_to(10_000)
    assert normalize(out + after) == normalize(expected_outputs(o.out, "aggregate"))


# -- Kafka Streams' own cases, transcribed (``k@5``: key k at timestamp 5) ------------------------

def _counts(spec: Any, mode: str, records: list[tuple[str, int]], advance: int | None = None
            ) -> list[tuple]:
    """(key, count, start, end, timestamp) of every output of a count over ``records``, each
    its own poll batch; then stream time advanced to ``advance`` if given."""
    with TopologyTestDriver(build(spec, mode, "count")) as driver:
        for i, (key, ts) in enumerate(records):
            driver.pipe_batch(IN, [(key, {"n": 1, "ts": ts, "id": i}, ts)])
        if advance is not None:
            driver.advance_stream_time(advance)
        return [(k, None if v is None else v["value"], s, e, ts)
                for k, v, s, e, ts in read_out(driver)]


def test_tumbling_update_is_stamped_with_the_largest_timestamp_of_the_window() -> None:
    """Kafka: k@5, k@3 -> 1@5, 2@5 (the out-of-order record does not move the stamp back)."""
    got = _counts(TumblingWindows(size=10, grace=100), "update", [("k", 5), ("k", 3)])
    assert got == [("k", 1, 0, 10, 5), ("k", 2, 0, 10, 5)]


def test_tumbling_final_is_stamped_with_the_largest_timestamp_of_the_window() -> None:
    """Kafka: k@3, k@20 -> [0,10) 1@3 (not the window's last millisecond)."""
    got = _counts(TumblingWindows(size=10, grace=0), "final", [("k", 3), ("k", 20)])
    assert got == [("k", 1, 0, 10, 3)]


def test_sliding_final_is_stamped_with_the_largest_timestamp_of_the_window() -> None:
    """Kafka: k@3, k@30 -> [0,10] 1@3 (not the window's end)."""
    got = _counts(SlidingWindows(max_difference=10, grace=0), "final", [("k", 3), ("k", 30)])
    assert got == [("k", 1, 0, 10, 3)]


def test_session_update_and_retraction_are_stamped_with_the_session_end() -> None:
    """Kafka: k@10, k@5 -> [10,10] 1@10, retraction [10,10]@10, [5,10] 2@10."""
    got = _counts(SessionWindows(gap=10), "update", [("k", 10), ("k", 5)])
    assert got == [("k", 1, 10, 10, 10), ("k", None, 10, 10, 10), ("k", 2, 5, 10, 10)]


@pytest.mark.parametrize("mode", MODES)
def test_session_record_is_late_only_once_its_merged_session_is_closed(mode: str) -> None:
    """Kafka (gap 10, grace 1): at stream time 11 a record at 0 is kept (its session [0,0] is
    not closed: 0 >= 11 - 10 - 1); at stream time 12 it is late."""
    records = [("dummy", 0), ("on-time-1", 0), ("dummy", 11), ("on-time-2", 0), ("dummy", 12),
               ("late-1", 0)]
    spec = SessionWindows(gap=10, grace=1)
    with TopologyTestDriver(build(spec, mode, "count")) as driver:
        for i, (key, ts) in enumerate(records):
            driver.pipe_batch(IN, [(key, {"n": 1, "ts": ts, "id": i}, ts)])
        driver.advance_stream_time(100)
        late = read_late(driver, {i: (k, {"n": 1, "ts": ts, "id": i}, ts)
                                  for i, (k, ts) in enumerate(records)})
        got = {k for k, v, *_ in read_out(driver) if v is not None}
    assert late == [5]
    assert {"on-time-1", "on-time-2"} <= got and "late-1" not in got


@pytest.mark.parametrize("mode", MODES)
def test_session_merge_starts_from_the_initializer(mode: str) -> None:
    """Kafka builds a merged session as initializer, merger with each session, then the adder:
    init "0", adder agg+v, merger a+b: k@0 "1", then k@5 "2" gives "0+0+1+2"."""
    t = Topology("winmerge")
    (t.stream(IN, timestamp="ts").group_by_key().window(SessionWindows(gap=10))
     .aggregate(lambda: "0", lambda agg, v: f"{agg}+{v['v']}", merger=lambda a, b: f"{a}+{b}",
                name=NAME, emit=mode).to(OUT))
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch(IN, [("k", {"v": "1", "ts": 0}, 0)])
        driver.pipe_batch(IN, [("k", {"v": "2", "ts": 5}, 5)])
        driver.advance_stream_time(100)
        got = [(v["value"], s, e) for _k, v, s, e, _ts in read_out(driver) if v is not None]
    assert got[-1] == ("0+0+1+2", 0, 5)


# -- windows stored before timestamps were kept --------------------------------------------------

@pytest.mark.parametrize("lose_state", [False, True], ids=["local-state", "from-changelog"])
@pytest.mark.parametrize("spec", [TumblingWindows(size=10), SlidingWindows(max_difference=9)],
                         ids=["tumbling", "sliding"])
def test_windows_stored_without_a_timestamp_still_open_and_emit(spec: Any,
                                                                lose_state: bool) -> None:
    """A window value in the format without a timestamp (plain serde bytes, locally and in the
    changelog) is read as it is; its result is stamped with the records seen since (an updated
    window) or with the largest timestamp the window can hold (closed without an update)."""
    with TopologyTestDriver(build(spec, "final", "count"), commit_every=10**9) as driver:
        driver.pipe_batch(IN, [("a", {"n": 1, "ts": 3, "id": 0}, 3),
                               ("b", {"n": 1, "ts": 2, "id": 1}, 2)])
        (task,) = driver._tasks.values()
        view = task.tables[NAME]
        for key in ("a", "b"):  # rewrite both windows [0, ...) in the old format
            stored = view.get(key, 0)
            assert view.get_stamped(key, 0) == (stored, 3 if key == "a" else 2)
            view.replace(key, 0, stored)
            assert view.get_stamped(key, 0) == (stored, None)
        driver.restart(commit=True, lose_state=lose_state)
        driver.pipe_batch(IN, [("a", {"n": 1, "ts": 1, "id": 2}, 1)])
        driver.advance_stream_time(100)
        got = [(k, v["value"], s, e, ts) for k, v, s, e, ts in read_out(driver)]
    end = 10 if isinstance(spec, TumblingWindows) else 9
    last = 9  # the largest timestamp [0, 10) / [0, 9] can hold
    assert got[:2] == [("a", 2, 0, end, 1), ("b", 1, 0, end, last)]
    if isinstance(spec, SlidingWindows):  # and the new right window of 1, stamped as usual
        assert got[2:] == [("a", 1, 2, 11, 3)]


def test_sliding_window_created_late_keeps_the_records_it_covers() -> None:
    """Documented deviation: d = 10, grace 0, j@30 then k@22 (its left window [12,22] is
    closed, no window of k holds it) then k@21: 21's right window [22,32] is created and holds
    22 (Kafka, building it from existing aggregates, finds none and creates no window)."""
    got = _counts(SlidingWindows(max_difference=10, grace=0), "final",
                  [("j", 30), ("k", 22), ("k", 21)], advance=100)
    assert [g for g in got if g[0] == "k"] == [("k", 1, 22, 32, 22)]
