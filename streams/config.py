"""Settings: ``config/defaults.toml`` + ``config/<topology>.toml`` + environment + flags."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

def config_dir() -> Path:
    """``STREAMS_CONFIG_DIR``, else ``./config``, else the repository's ``config/``."""
    if os.environ.get("STREAMS_CONFIG_DIR"):
        return Path(os.environ["STREAMS_CONFIG_DIR"])
    if Path("config/defaults.toml").exists():
        return Path("config")
    return Path(__file__).resolve().parent.parent / "config"


@dataclass(frozen=True)
class Settings:
    broker: str = "127.0.0.1:9092"
    state_dir: str = ".streams/state"
    partitions: int = 4
    # "at_least_once" or "exactly_once" (streams.runtime.transactions); the only switch.
    processing_guarantee: str = "at_least_once"
    commit_interval_ms: int = 1000
    # exactly_once: the broker aborts a transaction open longer than this; well above the
    # commit interval, so only a stuck or dead worker's transaction times out.
    transaction_timeout_ms: int = 60000
    commit_every_records: int = 50000
    max_batch_records: int = 5000
    session_timeout_ms: int = 15000
    # > 0: a task whose input is quiet this long has its stream time follow the wall clock, so
    # final windows close without a next event; records arriving after that may become late.
    idle_close_ms: int = 0
    metrics_port: int = 9400
    metrics_host: str = "127.0.0.1"

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


class ConfigError(ValueError):
    pass


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_settings(topology: str | None = None, config_file: str | Path | None = None,
                  **overrides: Any) -> Settings:
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    layers = [config_dir() / "defaults.toml"]
    if topology:
        layers.append(config_dir() / f"{topology}.toml")
    if config_file:
        if not Path(config_file).exists():
            raise ConfigError(f"config file {config_file} does not exist")
        layers.append(Path(config_file))
    for layer in layers:
        for key, value in _read(layer).items():
            if key not in known:
                raise ConfigError(f"{layer}: unknown setting {key!r}")
            values[key] = value
    if os.environ.get("STREAMS_BROKER"):
        values["broker"] = os.environ["STREAMS_BROKER"]
    if os.environ.get("STREAMS_STATE_DIR"):
        values["state_dir"] = os.environ["STREAMS_STATE_DIR"]
    return validate(Settings(**values).with_overrides(**overrides))


GUARANTEES = ("at_least_once", "exactly_once")


def validate(settings: Settings) -> Settings:
    """One clear error for settings that cannot work together."""
    if settings.processing_guarantee not in GUARANTEES:
        raise ConfigError(f"processing_guarantee must be one of {', '.join(GUARANTEES)}, not "
                          f"{settings.processing_guarantee!r}")
    if settings.transaction_timeout_ms < 5 * settings.commit_interval_ms:
        raise ConfigError(f"transaction_timeout_ms ({settings.transaction_timeout_ms}) must be at "
                          f"least 5 x commit_interval_ms ({settings.commit_interval_ms})")
    return settings
