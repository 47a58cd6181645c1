"""Bad input: standard JSON in strict UTF-8, money checked where it is read, one dead letter per
refused record (at the source, before any fan-out) naming the node that refused it, and tables
that cannot hold a NaN or infinite Decimal."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import faust
import pytest

from streams import Topology
from streams.serdes import (JsonObjectSerde, JsonSerde, RecordSerde, SchemaError, SerdeError,
                                json_dumps)
from streams.testing import TopologyTestDriver
from streams.validation import MAX_MONEY_DIGITS, Invalid, money
from topologies import enrichment, fraud_alerts, order_shipments, payments, trip_stats

BAD_MONEY = ["NaN", "Infinity", "-Infinity", "-500.00", "1e999000", "١٠.٠٠", "12.5", "12.500",
             "abc", "", " 1.00", "1.00 ", "+1.00", "1_000.00", "1" * (MAX_MONEY_DIGITS + 1) + ".00"]
BAD_MONEY_VALUES: list[Any] = [*BAD_MONEY, 12.5, 12, None, True, ["1.00"]]


# -- A: the JSON serde ----------------------------------------------------------------------------
@pytest.mark.parametrize("data", [
    b'{"fare": NaN}', b'{"fare": Infinity}', b'{"fare": -Infinity}', b"NaN",
    b'{"fare": 1e999}', b'{"fare": -1e999}',                 # float overflow is infinity
])
def test_json_serde_refuses_non_standard_numbers(data: bytes) -> None:
    for serde in (JsonSerde(), JsonObjectSerde()):
        with pytest.raises(SerdeError, match="invalid JSON"):
            serde.deserialize(data)


@pytest.mark.parametrize("data", [
    '{"a": "b"}'.encode("utf-16"), '{"a": "b"}'.encode("utf-16-le"),
    '{"a": "b"}'.encode("utf-32"), '{"a": "b"}'.encode("utf-8-sig"),
    b'{"a": "\xff"}', b'{"a": "\xed\xa0\x80"}',              # not UTF-8; an encoded surrogate
])
def test_json_serde_reads_strict_utf8_only(data: bytes) -> None:
    with pytest.raises(SerdeError, match="invalid JSON"):
        JsonObjectSerde().deserialize(data)


def test_json_serde_still_reads_standard_json() -> None:
    assert JsonObjectSerde().deserialize('{"city": "Zürich", "n": 1.5e3}'.encode()) == \
        {"city": "Zürich", "n": 1500.0}


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 10**40, 18446744073709551615])
def test_json_serde_keeps_integers_of_any_size_exact(number: int) -> None:
    decoded = JsonObjectSerde().deserialize(f'{{"id": {number}, "n": [1, 2.5]}}'.encode())
    assert decoded == {"id": number, "n": [1, 2.5]}
    assert type(decoded["id"]) is int


def test_json_serde_refuses_what_the_fast_decoder_refuses_with_a_reason() -> None:
    with pytest.raises(SerdeError, match="invalid JSON: Extra data"):
        JsonObjectSerde().deserialize(b'{"a": 1} x')


@pytest.mark.parametrize("value", [float("nan"), float("inf"), Decimal("NaN"),
                                   Decimal("-Infinity"), Decimal("sNaN"), {"t": [Decimal("Inf")]}])
def test_non_finite_numbers_are_never_serialized(value: Any) -> None:
    with pytest.raises(ValueError):
        json_dumps(value)


# -- A: money -------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", BAD_MONEY_VALUES)
def test_money_is_ascii_digits_with_two_places_and_bounded(raw: Any) -> None:
    with pytest.raises(Invalid):
        money(raw)


def test_money_accepts_the_largest_amount_and_zero_unless_positive() -> None:
    assert money("9" * MAX_MONEY_DIGITS + ".99") == Decimal("9" * MAX_MONEY_DIGITS + ".99")
    assert money("0.00") == 0
    with pytest.raises(Invalid, match="positive"):
        money("0.00", positive=True)


def _ride(i: int, fare: Any, *, driver: str = "d1", rider: str = "r1", ts: int | None = None
          ) -> dict[str, Any]:
    return {"ride_id": f"ride{i}", "rider_id": rider, "driver_id": driver, "city": "berlin",
            "fare": fare, "ts": 1_000_000 + i * 1000 if ts is None else ts}


def test_trip_stats_refuses_poisoned_fares_once_and_counts_only_money() -> None:
    with TopologyTestDriver(trip_stats.topology) as driver:
        driver.pipe("rides", "berlin", _ride(0, "10.00"))
        for i, fare in enumerate(BAD_MONEY_VALUES, start=1):
            driver.pipe("rides", "berlin", _ride(i, fare))
        driver.pipe_raw("rides", b"berlin", b'{"ride_id": "x", "rider_id": "r1", '
                        b'"driver_id": "d1", "city": "berlin", "fare": NaN, "ts": 1000500}')
        driver.pipe("rides", "berlin", _ride(99, "2.50", ts=1_000_900))
        dead = driver.read_dead_letters()
        assert [d.reason for d in dead] == ["invalid"] * len(BAD_MONEY_VALUES) + ["decode"]
        source = trip_stats.rides.node.name
        assert {d.node for d in dead} == {source}
        assert all("fare" in d.error for d in dead[:-1])
        assert driver.table("driver-totals") == {
            "d1": {"driver_id": "d1", "rides": 2, "fare_total": "12.50"}}
        driver.advance_stream_time(10_000_000)
        [(_, one_minute)] = driver.read_output("rides-per-city-1m")
        assert (one_minute["rides"], one_minute["fare_total"]) == (2, "12.50")
        assert [v["rides"] for _, v in driver.read_output("rider-sessions")] == [2]


def test_a_nan_total_is_never_stored() -> None:
    with pytest.raises(ValueError, match="not finite"):
        trip_stats.add_ride(trip_stats.new_totals(), {"driver_id": "d", "fare": "NaN"})


def _pay(pid: str, amount: str, ts: int = 10) -> dict[str, Any]:
    return {"payment_id": pid, "from_account": "a", "to_account": "b", "amount": amount,
            "currency": "EUR", "ts": ts}


def test_payments_rejects_unicode_digit_amounts_and_never_credits_other_encodings() -> None:
    deposit = {"deposit_id": "d1", "account": "a", "amount": "100.00", "ts": 1}
    with TopologyTestDriver(payments.topology) as driver:
        driver.pipe("deposits", "a", deposit)
        driver.pipe("payments", "a", _pay("p1", "١٠.٠٠"))
        driver.pipe("payments", "a", _pay("p2", "1e999000"))
        assert [(v["status"], v["reason"]) for _, v in driver.read_output("payment-results")] \
            == [("REJECTED", "INVALID")] * 2
        other = {**deposit, "deposit_id": "d2"}
        for encoding in ("utf-16", "utf-32", "utf-8-sig"):
            driver.pipe_raw("deposits", b"a", json.dumps(other).encode(encoding))
        driver.pipe_raw("deposits", b"a", b'{"deposit_id": "d3", "account": "a", '
                        b'"amount": Infinity, "ts": 1}')
        for amount in ("NaN", "Infinity", "١٠.٠٠", "-5.00", "1e3"):
            driver.pipe("deposits", "a", {**deposit, "deposit_id": "d4", "amount": amount})
        dead = driver.read_dead_letters()
        assert [d.reason for d in dead] == ["decode"] * 4 + ["invalid"] * 5
        assert {d.node for d in dead[4:]} == {payments.deposit.node.parents[0].name}
        assert driver.table("balances") == {"a": "100.00"}


@pytest.mark.parametrize("topology,topic,key,value", [
    (order_shipments.topology, "orders", "o1",
     {"order_id": "o1", "customer_id": "c1", "amount": "١٠.٠٠", "ts": 1}),
    (order_shipments.topology, "orders", "o1",
     {"order_id": "o1", "customer_id": "c1", "amount": "1" * 16 + ".00", "ts": 1}),
    (enrichment.topology, "transactions", "u1",
     {"txn_id": "t1", "user_id": "u1", "product_id": "p1", "amount": "1e999000", "ts": 1}),
    (fraud_alerts.topology, "card-transactions", "u1",
     {"txn_id": "t1", "user_id": "u1", "amount": "١٠.٠٠", "merchant": "m", "ts": 1}),
    (fraud_alerts.topology, "card-transactions", "u1",
     {"txn_id": "t1", "user_id": "u1", "amount": 10.5, "merchant": "m", "ts": 1}),
])
def test_reference_topologies_refuse_what_is_not_money(topology: Topology, topic: str, key: str,
                                                       value: dict[str, Any]) -> None:
    with TopologyTestDriver(topology) as driver:
        driver.pipe(topic, key, value)
        [dead] = driver.read_dead_letters()
        assert dead.reason == "invalid" and "amount" in dead.error
        assert dead.node.startswith("source-")


# -- A: tables cannot hold a NaN or infinite Decimal ----------------------------------------------
def test_an_aggregate_that_becomes_nan_is_a_dead_letter_and_changes_nothing() -> None:
    t = Topology("nan_aggregate")
    (t.stream("in").group_by_key()
     .aggregate(lambda: "0", lambda agg, v: Decimal(agg) + Decimal(v["x"]), name="sums")
     .to("sums-out"))
    with TopologyTestDriver(t) as driver:
        driver.pipe("in", "k", {"x": "1.5"})
        driver.pipe("in", "k", {"x": "NaN"})      # a string: only the store can refuse it
        driver.pipe("in", "k", {"x": "-Infinity"})
        driver.pipe("in", "k", {"x": "2"})
        dead = driver.read_dead_letters()
        assert [d.reason for d in dead] == ["processing"] * 2
        assert {d.node for d in dead} == {"sums-aggregate"}
        assert "non-finite" in dead[0].error
        assert [v for _, v in driver.read_output("sums-out")] == ["1.5", "3.5"]
        assert driver.table("sums") == {"k": "3.5"}


def test_an_agent_event_storing_nan_is_dead_lettered_whole() -> None:
    t = Topology("nan_agent")
    totals = t.table_store("totals", default=lambda: "0")

    @t.agent("in", sink=["out"])
    async def add(stream):  # type: ignore[no-untyped-def]
        async for key, value in stream.items():
            yield {"seen": value["x"]}                       # staged: must not be sent
            totals[key] = Decimal(totals[key]) + Decimal(value["x"])

    with TopologyTestDriver(t) as driver:
        driver.pipe("in", "k", {"x": "1"})
        driver.pipe("in", "k", {"x": "Infinity"})
        driver.pipe("in", "k", {"x": "2"})
        [dead] = driver.read_dead_letters()
        assert (dead.reason, dead.node, dead.source_offset) == ("processing", "add", 1)
        assert [v["seen"] for _, v in driver.read_output("out")] == ["1", "2"]
        assert driver.table("totals") == {"k": "3"}


# -- B: one dead letter, at the source ------------------------------------------------------------
def test_trip_stats_a_bad_fare_is_one_dead_letter_and_no_aggregation_counts_it() -> None:
    with TopologyTestDriver(trip_stats.topology) as driver:
        rides = [_ride(i, "5.00") for i in range(6)]
        rides.insert(3, _ride(50, "abc"))
        for ride in rides:
            driver.pipe("rides", "berlin", ride)
        driver.advance_stream_time(100_000_000)
        [dead] = driver.read_dead_letters()
        assert (dead.reason, dead.source_topic, dead.source_offset) == ("invalid", "rides", 3)
        assert dead.node == trip_stats.rides.node.name and "'abc'" in dead.error
        assert [v["rides"] for _, v in driver.read_output("rider-sessions")] == [6]
        assert [v["rides"] for _, v in driver.read_output("busy-drivers")] == [6]
        assert [v["rides"] for _, v in driver.read_output("rides-per-city-1m")] == [6]
        assert driver.read_output("driver-totals")[-1][1] == \
            {"driver_id": "d1", "rides": 6, "fare_total": "30.00"}


def _fan_out(validate: Any) -> Topology:
    t = Topology("fan_out")
    s = t.stream("in", validate=validate)
    s.to("all")
    s.group_by(lambda v: v["user"], name="by-user").count(name="per-user").to("counts")
    s.filter(lambda v: v["n"] > 1).to("big")
    return t


def test_validator_refuses_before_the_fan_out() -> None:
    def positive_n(value: dict[str, Any]) -> None:
        if not isinstance(value.get("n"), int) or value["n"] <= 0:
            raise ValueError(f"n must be a positive integer, got {value.get('n')!r}")

    t = _fan_out(positive_n)
    with TopologyTestDriver(t) as driver:
        driver.pipe("in", "k", {"user": "u", "n": 2})
        driver.pipe("in", "k", {"user": "u", "n": "2"})
        driver.pipe("in", "k", {"n": -1})
        dead = driver.read_dead_letters()
        assert [(d.reason, d.node, d.error, d.source_offset) for d in dead] == [
            ("invalid", "source-0001", "n must be a positive integer, got '2'", 1),
            ("invalid", "source-0001", "n must be a positive integer, got -1", 2)]
        assert len(driver.read_output("all")) == len(driver.read_output("big")) == 1
        assert driver.read_output("counts") == [("u", 1)]


def test_validator_returning_false_and_seeing_the_key() -> None:
    calls: list[tuple[Any, Any]] = []

    def same_key(key: Any, value: Any) -> bool:
        calls.append((key, value))
        return key == value.get("user")

    with TopologyTestDriver(_fan_out(same_key)) as driver:
        driver.pipe("in", "u", {"user": "u", "n": 1})
        driver.pipe("in", "x", {"user": "u", "n": 1})
        [dead] = driver.read_dead_letters()
        assert (dead.reason, dead.source_offset) == ("invalid", 1)
        assert "validator" in dead.error and "source-0001" in dead.error
        assert calls == [("u", {"user": "u", "n": 1}), ("x", {"user": "u", "n": 1})]
        assert driver.read_output("counts") == [("u", 1)]


def test_a_validator_that_crashes_dead_letters_the_record_and_the_worker_goes_on() -> None:
    with TopologyTestDriver(_fan_out(lambda v: v["n"] > 0 or None)) as driver:
        driver.pipe("in", "k", {"user": "u"})
        driver.pipe("in", "k", {"user": "u", "n": 1})
        [dead] = driver.read_dead_letters()
        assert dead.reason == "invalid" and "'n'" in dead.error
        assert driver.read_output("counts") == [("u", 1)]


class Ride(faust.Record):
    ride_id: str
    fare: Decimal
    ts: int
    tip: float = 0.0
    note: str | None = None


@pytest.mark.parametrize("value,field", [
    ({"ride_id": "r", "fare": "abc", "ts": 1}, "fare"),
    ({"ride_id": "r", "fare": "١٠.٠٠", "ts": 1}, "fare"),
    ({"ride_id": "r", "fare": "NaN", "ts": 1}, "fare"),
    ({"ride_id": "r", "fare": 12.5, "ts": 1}, "fare"),                  # a float lost the cents
    ({"ride_id": "r", "fare": "1." + "0" * 200, "ts": 1}, "fare"),
    ({"ride_id": 7, "fare": "1.00", "ts": 1}, "ride_id"),
    ({"ride_id": "r", "fare": "1.00", "ts": "1"}, "ts"),
    ({"ride_id": "r", "fare": "1.00", "ts": True}, "ts"),
    ({"ride_id": "r", "fare": "1.00", "ts": 1, "tip": "1"}, "tip"),
    ({"ride_id": "r", "fare": "1.00", "ts": 1, "note": 5}, "note"),
    ({"ride_id": "r", "ts": 1}, "fare"),
    ({"ride_id": None, "fare": "1.00", "ts": 1}, "ride_id"),
])
def test_a_record_schema_refuses_wrong_field_types(value: dict[str, Any], field: str) -> None:
    with pytest.raises(SchemaError, match=f"field '{field}'"):
        RecordSerde(Ride).deserialize(json.dumps(value).encode())


def test_a_record_source_hands_typed_values_and_dead_letters_misfits_once() -> None:
    t = Topology("typed")
    rides = t.stream("rides", value=Ride, timestamp="ts")
    rides.map(lambda r: {"fare": r.fare * 2, "tip": r.tip, "note": r.note}).to("doubled")
    rides.group_by(lambda r: r.ride_id, name="by-ride").count(name="n").to("counts")
    with TopologyTestDriver(t) as driver:
        driver.pipe("rides", "k", {"ride_id": "r1", "fare": "12.50", "ts": 5, "note": None})
        driver.pipe("rides", "k", {"ride_id": "r2", "fare": "abc", "ts": 6})
        assert driver.read_output("doubled") == [("k", {"fare": "25.00", "tip": 0.0,
                                                        "note": None})]
        assert driver.read_output("counts") == [("r1", 1)]
        [dead] = driver.read_dead_letters()
        assert (dead.reason, dead.node, dead.source_offset) == ("invalid", "source-0001", 1)
        assert "not a valid Ride: field 'fare'" in dead.error


def test_agents_take_a_validator_on_their_topic_source() -> None:
    t = Topology("agent_validate")
    t2 = Topology("agent_validate_stream")

    @t.agent("in", sink=["out"], validate=lambda v: "id" in v)
    async def echo(stream):  # type: ignore[no-untyped-def]
        async for value in stream:
            yield value["id"]

    with TopologyTestDriver(t) as driver:
        driver.pipe("in", "k", {"id": "a"})
        driver.pipe("in", "k", {"other": 1})
        assert driver.read_output("out") == [("k", "a")]
        [dead] = driver.read_dead_letters()
        assert (dead.reason, dead.node) == ("invalid", echo.node.parents[0].name)

    with pytest.raises(ValueError, match="validate= applies to a topic source"):
        t2.agent(t2.stream("in"), validate=lambda v: True)(lambda stream: None)
    with pytest.raises(TypeError, match="validate= must be a function"):
        t2.stream("other", validate="id")  # type: ignore[arg-type]


# -- B: every dead letter names its node ----------------------------------------------------------
def test_operator_and_agent_dead_letters_name_their_node() -> None:
    t = Topology("named")
    t.stream("in").map(lambda v: 1 / v["n"], name="invert").to("out")
    t.stream("in").select_key(lambda v: v["user"], name="by-user").to("keyed")

    @t.agent("in2", sink=["out2"])
    async def fragile(stream):  # type: ignore[no-untyped-def]
        async for value in stream:
            yield 1 / value["n"]

    with TopologyTestDriver(t) as driver:
        driver.pipe("in", "k", {"n": 0, "user": "u"})
        driver.pipe("in", "k", {"n": 1})
        driver.pipe("in2", "k", {"n": 0})
        driver.pipe_raw("in2", b"k", b"not json")
        dead = driver.read_dead_letters()
        assert [(d.reason, d.node) for d in dead] == [
            ("processing", "invert"), ("processing", "by-user"), ("processing", "fragile"),
            ("decode", fragile.node.parents[0].name)]


def test_describe_names_a_source_validator() -> None:
    assert "source rides (validated by valid_ride)" in trip_stats.topology.describe()
    assert "(validated by a function)" in _fan_out(lambda v: True).describe()


def test_docstring_examples_run() -> None:
    import doctest

    from streams import validation
    from streams import serdes
    from streams.dsl import topology

    for module in (serdes, validation, topology):
        result = doctest.testmod(module)
        assert result.attempted and result.failed == 0, module.__name__


class Totals(faust.Record):
    driver_id: str
    rides: int
    mean: float


def test_a_store_reads_back_what_the_topology_wrote_even_off_its_record_types() -> None:
    """Field types are checked on input; a table's values come from the topology's own
    functions (faust does not enforce types there), so reading them back never refuses."""
    t = Topology("store_types")

    def add(totals: Totals, value: dict[str, Any]) -> Totals:
        rides = totals.rides + 1
        return Totals(driver_id=None, rides=rides, mean=Decimal(value["fare"]) / rides)

    t.stream("in").group_by_key().aggregate(lambda: Totals(driver_id="", rides=0, mean=0.0),
                                            add, name="totals").to("out")
    with TopologyTestDriver(t, commit_every=1) as driver:
        driver.pipe("in", "d1", {"fare": "10.00"})
        driver.pipe("in", "d1", {"fare": "10.00"})
        assert driver.read_dead_letters() == []
        assert [v["rides"] for _, v in driver.read_output("out")] == [1, 2]
