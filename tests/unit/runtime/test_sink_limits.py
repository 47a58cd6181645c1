"""An output too large for the producer becomes a dead letter instead of failing the commit."""

from streams import Topology
from streams.runtime.processors import MAX_RECORD_BYTES
from streams.testing import TopologyTestDriver


def test_oversized_output_goes_to_the_dlq_and_the_rest_flows() -> None:
    t = Topology("big")
    t.stream("in").map(lambda v: {**v, "pad": "x" * (v["n"] * MAX_RECORD_BYTES)}).to("out")
    with TopologyTestDriver(t) as driver:
        driver.pipe("in", "a", {"n": 0})
        driver.pipe("in", "b", {"n": 2})
        driver.pipe("in", "c", {"n": 0})
        assert [k for k, _ in driver.read_output("out")] == ["a", "c"]
        (dead,) = driver.read_records("big-dlq")
        headers = dict(dead.headers)
        assert b"exceeds" in headers["error"] and headers["source-offset"] == b"1"
        assert dead.key == b"b" and dead.value == b'{"n":2}'


def test_a_failing_record_in_a_batch_goes_alone_to_the_dlq() -> None:
    """The batch fast path falls back to record-by-record for the failing node only."""
    t = Topology("batchy")
    (t.stream("in")
      .map(lambda v: {"n": 100 // v["d"]})          # d == 0 raises ZeroDivisionError
      .filter(lambda v: v["n"] != 50)
      .flat_map(lambda v: [v] * (v["n"] % 3))
      .to("out"))
    ds = [1, 2, 0, 4, 5, 0, 3]
    with TopologyTestDriver(t) as driver:
        driver.pipe_batch("in", [(f"k{i}", {"d": d}, i) for i, d in enumerate(ds)])
        expected = []
        for i, d in enumerate(ds):
            if d == 0:
                continue
            n = 100 // d
            if n != 50:
                expected += [(f"k{i}", {"n": n})] * (n % 3)
        assert driver.read_output("out") == expected
        dead = driver.read_records("batchy-dlq")
        assert [int(dict(r.headers)["source-offset"]) for r in dead] == [2, 5]
        assert all(b"ZeroDivisionError" in dict(r.headers)["error"] for r in dead)
