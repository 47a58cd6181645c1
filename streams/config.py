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
    processing_guarantee: str = "at_least_once"
    commit_interval_ms: int = 1000
    commit_every_records: int = 50000
    max_batch_records: int = 5000
    session_timeout_ms: int = 15000
    # > 0: a task whose input is quiet this long has its stream time follow the wall clock, so
    # final windows close without a next event; records arriving after that may become late.
    idle_close_ms: int = 0
    metrics_port: int = 9400
    metrics_host: str = "127.0.0.1"
    # "throughput": large batches, long fetch waits; "latency": small batches, sent at once
    # (see :mod:`streams.runtime.tuning`). TOML: ``processing.mode = "latency"``.
    processing_mode: str = "throughput"

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


class ConfigError(ValueError):
    pass


PROCESSING_MODES = ("throughput", "latency")


def _flatten(table: dict[str, Any]) -> dict[str, Any]:
    """``[processing] mode = "x"`` (or ``processing.mode = "x"``) -> ``processing_mode``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                out[f"{key}_{sub}"] = v
        else:
            out[key] = value
    return out


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
        for key, value in _flatten(_read(layer)).items():
            if key not in known:
                raise ConfigError(f"{layer}: unknown setting {key!r}")
            values[key] = value
    if os.environ.get("STREAMS_BROKER"):
        values["broker"] = os.environ["STREAMS_BROKER"]
    if os.environ.get("STREAMS_STATE_DIR"):
        values["state_dir"] = os.environ["STREAMS_STATE_DIR"]
    settings = Settings(**values).with_overrides(**overrides)
    if settings.processing_mode not in PROCESSING_MODES:
        raise ConfigError(f"processing.mode must be one of {', '.join(PROCESSING_MODES)}, "
                          f"not {settings.processing_mode!r}")
    return settings
