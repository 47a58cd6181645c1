"""Ride statistics: windowed per city and per rider, and running totals per driver.

rides {ride_id, rider_id, driver_id, city, fare, ts} keyed by city; event time = ts
  -> grouped by its key, the city (already partitioned by it: no repartition)
     -> tumbling 1 min, grace 30 s, emit final  -> `rides-per-city-1m`
     -> hopping 5 min every 1 min, grace 30 s, emit on update -> `rides-per-city-5m`
        {city, window_start, window_end, rides, fare_total}
  -> group_by rider_id (repartition `rides-by-rider`)
     -> sessions, gap 30 min, grace 30 s, emit final -> `rider-sessions`
        {rider_id, window_start, window_end, rides}
  -> group_by driver_id (repartition `rides-by-driver`)
     -> table `driver-totals` {driver_id, rides, fare_total}, every update -> `driver-totals`
     -> sliding windows of 10 min, grace 30 s, emit final, only windows with rides > 5
        -> `busy-drivers` {driver_id, window_start, window_end, rides}
Rides later than a window's grace are dropped, counted (streams_late_events_total{node}) and
written to `rides-late` (once per windowed aggregation they are late for; header `node`).
Fares are decimal strings; totals are computed with Decimal and written with two places.

Every ride is validated once, where it is read (``valid_ride``): a JSON object with non-empty
string ride_id, rider_id, driver_id and city, and a fare that is money (a string of ASCII
digits with exactly two places, below 10^15: :func:`streams.validation.money`). Anything else
is ONE dead letter in `trip_stats-dlq` (reason ``invalid``) and no aggregation counts it.
"""

from datetime import timedelta
from decimal import Decimal

from streams import HoppingWindows, SessionWindows, SlidingWindows, Topology, TumblingWindows
from streams.validation import money, require_fields, require_text

topology = Topology("trip_stats", description="ride statistics per city, rider and driver",
                    late_topic="rides-late")

GRACE = timedelta(seconds=30)


RIDE_FIELDS = ("ride_id", "rider_id", "driver_id", "city", "fare", "ts")


def valid_ride(ride: dict) -> None:
    """Refuse (ValueError) a ride any aggregation could not count (the timestamp is checked by
    the source's ``timestamp="ts"``)."""
    require_fields(ride, RIDE_FIELDS, "ride")
    require_text(ride, ("ride_id", "rider_id", "driver_id", "city"), "ride")
    money(ride["fare"], field="fare")


def _money(total: Decimal) -> str:
    if not total.is_finite():  # a NaN total would stay NaN for ever: never store one
        raise ValueError(f"total {total} is not finite")
    return f"{total:.2f}"


# -- per driver (not windowed) --------------------------------------------------------------------
def new_totals() -> dict:
    return {"driver_id": None, "rides": 0, "fare_total": "0.00"}


def add_ride(totals: dict, ride: dict) -> dict:
    fare_total = Decimal(totals["fare_total"]) + Decimal(ride["fare"])
    return {"driver_id": ride["driver_id"], "rides": totals["rides"] + 1,
            "fare_total": _money(fare_total)}


# -- per city and window --------------------------------------------------------------------------
def new_city_stats() -> dict:
    return {"city": None, "rides": 0, "fare_total": "0.00"}


def add_city_ride(stats: dict, ride: dict) -> dict:
    return {"city": ride["city"], "rides": stats["rides"] + 1,
            "fare_total": _money(Decimal(stats["fare_total"]) + Decimal(ride["fare"]))}


# -- per driver and sliding window ---------------------------------------------------------------
def new_driver_count() -> dict:
    return {"driver_id": None, "rides": 0}


def add_driver_ride(count: dict, ride: dict) -> dict:
    return {"driver_id": ride["driver_id"], "rides": count["rides"] + 1}


# -- per rider session ----------------------------------------------------------------------------
def new_session() -> dict:
    return {"rider_id": None, "rides": 0}


def add_session_ride(session: dict, ride: dict) -> dict:
    return {"rider_id": ride["rider_id"], "rides": session["rides"] + 1}


def merge_sessions(a: dict, b: dict) -> dict:
    return {"rider_id": a["rider_id"] or b["rider_id"], "rides": a["rides"] + b["rides"]}


rides = topology.stream("rides", timestamp="ts", validate=valid_ride)

by_city = rides.group_by_key()  # rides are keyed by city
(by_city.window(TumblingWindows(size=timedelta(minutes=1), grace=GRACE))
        .aggregate(new_city_stats, add_city_ride, name="rides-per-city-1m", emit="final")
        .to("rides-per-city-1m"))
(by_city.window(HoppingWindows(size=timedelta(minutes=5), advance=timedelta(minutes=1),
                               grace=GRACE))
        .aggregate(new_city_stats, add_city_ride, name="rides-per-city-5m", emit="update")
        .to("rides-per-city-5m"))

(rides.group_by(lambda ride: ride["rider_id"], name="rides-by-rider")
      .window(SessionWindows(gap=timedelta(minutes=30), grace=GRACE))
      .aggregate(new_session, add_session_ride, merger=merge_sessions, name="rider-sessions",
                 emit="final")
      .to("rider-sessions"))

by_driver = rides.group_by(lambda ride: ride["driver_id"], name="rides-by-driver")
by_driver.aggregate(new_totals, add_ride, name="driver-totals").to("driver-totals")
(by_driver.window(SlidingWindows(max_difference=timedelta(minutes=10), grace=GRACE))
          .aggregate(new_driver_count, add_driver_ride, name="busy-drivers", emit="final")
          .to_stream()
          .filter(lambda window: window["rides"] > 5)
          .to("busy-drivers"))
