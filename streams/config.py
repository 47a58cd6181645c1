"""Settings: ``config/defaults.toml`` + ``config/<topology>.toml`` + environment + flags."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def config_dir() -> Path:
    """``STREAMS_CONFIG_DIR``, else ``./config``, else the repository's ``config/``."""
    if os.environ.get("STREAMS_CONFIG_DIR"):
        return Path(os.environ["STREAMS_CONFIG_DIR"])
    if Path("config/defaults.toml").exists():
        return Path("config")
    return Path(__file__).resolve().parent.parent / "config"


@dataclass(frozen=True)
class SecuritySettings:
    """How clients authenticate and encrypt (the ``[security]`` table).

    Secrets are never settings: the SASL password and the SSL key password are read from the
    environment variables named here when a client is created, so no settings object, log line
    or ``describe`` output can contain them.
    """

    protocol: str = "PLAINTEXT"             # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    sasl_mechanism: str = "PLAIN"           # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    sasl_username: str = ""
    sasl_password_env: str = "STREAMS_SASL_PASSWORD"
    ssl_cafile: str = ""                    # CA bundle that signed the brokers' certificates
    ssl_certfile: str = ""                  # client certificate (mutual TLS), PEM
    ssl_keyfile: str = ""                   # its private key, PEM
    ssl_key_password_env: str = "STREAMS_SSL_KEY_PASSWORD"
    ssl_check_hostname: bool = True

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def problems(self) -> list[str]:
        """What is wrong with these settings (one line each; empty when usable)."""
        out: list[str] = []
        if self.protocol not in SECURITY_PROTOCOLS:
            out.append(f"security.protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                       f"not {self.protocol!r}")
        if self.uses_sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                out.append(f"security.sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)},"
                           f" not {self.sasl_mechanism!r}")
            if not self.sasl_username:
                out.append(f"security.sasl_username is required with {self.protocol}")
        return out


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
    # How long a client waits for one broker request; a lost broker is retried past it (the
    # worker rides out an outage of any length), it only decides when a try counts as failed.
    request_timeout_ms: int = 30000
    # > 0: a task whose input is quiet this long has its stream time follow the wall clock, so
    # final windows close without a next event; records arriving after that may become late.
    idle_close_ms: int = 0
    # A task reading several partitions takes records in timestamp order across them; this long
    # (ms of wall time) it waits for an input with no buffered record before going on without
    # it (0: only while the broker is known to hold records for it; -1: never wait).
    max_task_idle_ms: int = 0
    metrics_port: int = 9400
    metrics_host: str = "127.0.0.1"
    # Replication of the topics a worker creates: "auto" = min(3, brokers in the cluster);
    # min.insync.replicas "auto" = 2 when the replication factor is 3 or more, else 1.
    replication_factor: int | str = "auto"
    min_insync_replicas: int | str = "auto"
    security: SecuritySettings = SecuritySettings()
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
    known = {f.name for f in fields(Settings)} - {"security"}
    known_security = {f.name for f in fields(SecuritySettings)}
    values: dict[str, Any] = {}
    security: dict[str, Any] = {}
    layers = [config_dir() / "defaults.toml"]
    if topology:
        layers.append(config_dir() / f"{topology}.toml")
    if config_file:
        if not Path(config_file).exists():
            raise ConfigError(f"config file {config_file} does not exist")
        layers.append(Path(config_file))
    for layer in layers:
        for key, value in _read(layer).items():
            if key == "security" and isinstance(value, dict):
                for skey, svalue in value.items():
                    if skey not in known_security:
                        raise ConfigError(f"{layer}: unknown setting security.{skey}")
                    security[skey] = svalue
                continue
            for fkey, fvalue in _flatten({key: value}).items():
                if fkey not in known:
                    raise ConfigError(f"{layer}: unknown setting {fkey!r}")
                values[fkey] = fvalue
    if os.environ.get("STREAMS_BROKER"):
        values["broker"] = os.environ["STREAMS_BROKER"]
    if os.environ.get("STREAMS_STATE_DIR"):
        values["state_dir"] = os.environ["STREAMS_STATE_DIR"]
    for env, key in _SECURITY_ENV.items():
        if os.environ.get(env):
            security[key] = os.environ[env]
    if os.environ.get("STREAMS_METRICS_HOST"):
        values["metrics_host"] = os.environ["STREAMS_METRICS_HOST"]
    sec = SecuritySettings(**security)
    problems = sec.problems() + _replication_problems(values)
    if problems:
        raise ConfigError(problems[0])
    return validate(Settings(**values, security=sec).with_overrides(**overrides))


# Environment overrides of the [security] table (never the password itself: that variable is
# named by sasl_password_env and read only when a client is created).
_SECURITY_ENV = {
    "STREAMS_SECURITY_PROTOCOL": "protocol",
    "STREAMS_SASL_MECHANISM": "sasl_mechanism",
    "STREAMS_SASL_USERNAME": "sasl_username",
    "STREAMS_SSL_CAFILE": "ssl_cafile",
}


def _replication_problems(values: dict[str, Any]) -> list[str]:
    out = []
    for key in ("replication_factor", "min_insync_replicas"):
        value = values.get(key, "auto")
        if value != "auto" and not (isinstance(value, int) and not isinstance(value, bool)
                                    and value >= 1):
            out.append(f"{key} must be \"auto\" or a positive integer, not {value!r}")
    return out


GUARANTEES = ("at_least_once", "exactly_once")


def validate(settings: Settings) -> Settings:
    """One clear error for settings that cannot work together."""
    if settings.processing_mode not in PROCESSING_MODES:
        raise ConfigError(f"processing.mode must be one of {', '.join(PROCESSING_MODES)}, "
                          f"not {settings.processing_mode!r}")
    if settings.processing_guarantee not in GUARANTEES:
        raise ConfigError(f"processing_guarantee must be one of {', '.join(GUARANTEES)}, not "
                          f"{settings.processing_guarantee!r}")
    if settings.transaction_timeout_ms < 5 * settings.commit_interval_ms:
        raise ConfigError(f"transaction_timeout_ms ({settings.transaction_timeout_ms}) must be at "
                          f"least 5 x commit_interval_ms ({settings.commit_interval_ms})")
    return settings
