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
