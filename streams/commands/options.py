"""Option types and options shared by several commands."""

from __future__ import annotations

import math
from typing import Any

import click

from ..config import load_settings
from ..kafka.clients import KafkaConnection

PORT = click.IntRange(1, 65535)


class FiniteFloat(click.ParamType):
    """A finite float in ``(low, inf)`` (``low`` excluded): click's FloatRange lets ``nan``
    through every bound check."""

    name = "float"

    def __init__(self, low: float = 0.0) -> None:
        self.low = low

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number <= self.low:
            self.fail(f"{value!r} is not a finite number > {self.low:g}", param, ctx)
        return number


def broker_option(f: Any) -> Any:
    # STREAMS_BROKER is read by load_settings (not as click's envvar), so that an error names
    # the variable rather than the option
    return click.option("--broker", default=None,
                        help="bootstrap address (default: STREAMS_BROKER, else "
                             "127.0.0.1:9092)")(f)


def state_dir_option(f: Any) -> Any:
    return click.option("--state-dir", default=None,  # STREAMS_STATE_DIR: load_settings
                        help="state directory of the workers on this host (default: "
                             "STREAMS_STATE_DIR, else state_dir in the config)")(f)


def topology_argument(f: Any) -> Any:
    return click.argument("name", metavar="NAME|MODULE:ATTR")(f)


def bootstrap(value: str | None) -> KafkaConnection:
    """The cluster to talk to: its address (``--broker`` first) and the security settings."""
    return KafkaConnection.from_settings(load_settings(broker=value))
