"""Ride statistics per driver (windowed per-city statistics come with the window operators).

rides {ride_id, rider_id, driver_id, city, fare, ts} keyed by city
  -> group_by driver_id (repartition) -> table `driver-totals` {driver_id, rides, fare_total}
  -> every update to the topic `driver-totals`
Fares are decimal strings; totals are computed with Decimal and written with two places.
"""

from decimal import Decimal

from streams import Topology

topology = Topology("trip_stats", description="ride statistics per driver")


def new_totals() -> dict:
    return {"driver_id": None, "rides": 0, "fare_total": "0.00"}


def add_ride(totals: dict, ride: dict) -> dict:
    fare_total = Decimal(totals["fare_total"]) + Decimal(ride["fare"])
    return {"driver_id": ride["driver_id"], "rides": totals["rides"] + 1,
            "fare_total": f"{fare_total:.2f}"}


rides = topology.stream("rides", timestamp="ts")

(rides.group_by(lambda ride: ride["driver_id"], name="rides-by-driver")
      .aggregate(new_totals, add_ride, name="driver-totals")
      .to("driver-totals"))
