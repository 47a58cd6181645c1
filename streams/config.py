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
    # None (not set): the guarantee's default, see effective_commit_interval_ms
    commit_interval_ms: int | None = None
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
    # A record whose event time is more than this ahead of the wall clock is a dead letter
    # ("timestamp") and never moves stream time (-1: no limit).
    max_future_ms: int = 86_400_000
    # An upstream task caught up on its input and quiet this long tells the tasks behind its
    # repartition topics that it is idle (they stop waiting for it; streams.runtime.watermarks).
    repartition_idle_ms: int = 2000
    metrics_port: int = 9400
    metrics_host: str = "127.0.0.1"
    # The host other workers and clients reach this worker's HTTP server at (its tables):
    # "" = metrics_host, or this machine's name when metrics_host listens on every interface.
    advertised_host: str = ""
    # Each worker writes its metrics endpoint here for Prometheus' file_sd
    # (streams.runtime.discovery); "" = off.
    discovery_dir: str = ".streams/discovery"
    # Replication of the topics a worker creates: "auto" = min(3, brokers in the cluster);
    # min.insync.replicas "auto" = 2 when the replication factor is 3 or more, else 1.
    replication_factor: int | str = "auto"
    min_insync_replicas: int | str = "auto"
    security: SecuritySettings = SecuritySettings()
    # "throughput": large batches, long fetch waits; "latency": small batches, sent at once
    # (see :mod:`streams.runtime.tuning`). TOML: ``processing.mode = "latency"``.
    processing_mode: str = "throughput"
    # Warm copies of each stateful task on other workers (Kafka Streams' num.standby.replicas):
    # a task that moves resumes from a standby's state instead of restoring its changelog.
    num_standby_replicas: int = 0

    @property
    def effective_commit_interval_ms(self) -> int:
        """``commit_interval_ms`` if set, else the default of the guarantee: exactly-once
        outputs become visible at the commit, so it commits every
        :data:`EXACTLY_ONCE_COMMIT_INTERVAL_MS` (as Kafka Streams does); at-least-once outputs
        are visible when sent, so it commits every :data:`COMMIT_INTERVAL_MS`.

        >>> Settings(processing_guarantee="exactly_once").effective_commit_interval_ms
        100
        >>> Settings(processing_guarantee="exactly_once",
        ...          commit_interval_ms=500).effective_commit_interval_ms
        500
        """
        if self.commit_interval_ms is not None:
            return self.commit_interval_ms
        if self.processing_guarantee == "exactly_once":
            return EXACTLY_ONCE_COMMIT_INTERVAL_MS
        return COMMIT_INTERVAL_MS

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


# The commit interval when commit_interval_ms is not set, per guarantee.
COMMIT_INTERVAL_MS = 1000
EXACTLY_ONCE_COMMIT_INTERVAL_MS = 100


class ConfigError(ValueError):
    pass


PROCESSING_MODES = ("throughput", "latency")
GUARANTEES = ("at_least_once", "exactly_once")

# Bounds the cluster imposes (Kafka's broker defaults): a session timeout outside the group
# coordinator's [group.min.session.timeout.ms, group.max.session.timeout.ms] is refused only
# when the worker joins the group; a transaction timeout above transaction.max.timeout.ms only
# when the first transactional producer starts. Checked here so they fail at load instead.
MIN_SESSION_TIMEOUT_MS = 6_000
MAX_SESSION_TIMEOUT_MS = 1_800_000
MAX_TRANSACTION_TIMEOUT_MS = 900_000
MAX_BATCH_RECORDS = 1_000_000  # one poll's records are held in memory together

# (minimum, maximum or None) of every integer setting; the meaning of the edges is in
# config/defaults.toml.
INT_RANGES: dict[str, tuple[int, int | None]] = {
    "partitions": (1, None),
    "commit_interval_ms": (1, None),
    "transaction_timeout_ms": (1_000, MAX_TRANSACTION_TIMEOUT_MS),
    "commit_every_records": (1, None),
    "max_batch_records": (1, MAX_BATCH_RECORDS),
    "session_timeout_ms": (MIN_SESSION_TIMEOUT_MS, MAX_SESSION_TIMEOUT_MS),
    "idle_close_ms": (0, None),
    "max_task_idle_ms": (-1, None),     # -1: never wait
    "metrics_port": (-1, 65_535),       # -1: no metrics server; 0: any free port
    "num_standby_replicas": (0, None),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "processing_guarantee": GUARANTEES,
    "processing_mode": PROCESSING_MODES,
}
TEXT = ("broker", "state_dir", "metrics_host")  # non-empty strings


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
    except UnicodeDecodeError as exc:  # tomllib decodes UTF-8 itself, without naming the file
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except OSError as exc:  # a directory, no permission...
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None


def _display_key(key: str) -> str:
    return "processing.mode" if key == "processing_mode" else key


def load_settings(topology: str | None = None, config_file: str | Path | None = None,
                  **overrides: Any) -> Settings:
    """The settings of ``topology``: ``config/defaults.toml``, ``config/<topology>.toml``,
    ``config_file``, the environment, then ``overrides`` (CLI flags; None = not given).

    Every value is validated here, before anything connects to Kafka: a wrong type, a value
    out of range or settings that cannot work together are one :class:`ConfigError` line
    naming the key and where it was set (the file, the environment variable or the option).
    """
    known = {f.name for f in fields(Settings)} - {"security"}
    known_security = {f.name for f in fields(SecuritySettings)}
    values: dict[str, Any] = {}
    security: dict[str, Any] = {}
    # key (security keys as "security.x") -> where it was last set; a key set again moves to
    # the end, so the order says which of two keys the user changed last
    origins: dict[str, str] = {}

    def set_origin(key: str, where: str) -> None:
        origins.pop(key, None)
        origins[key] = where

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
                    set_origin(f"security.{skey}", str(layer))
                continue
            for fkey, fvalue in _flatten({key: value}).items():
                if fkey not in known:
                    raise ConfigError(f"{layer}: unknown setting {fkey!r}")
                values[fkey] = fvalue
                set_origin(fkey, str(layer))
    for env, key in _ENV.items():
        if os.environ.get(env):
            values[key] = os.environ[env]
            set_origin(key, f"environment variable {env}")
    for env, key in _SECURITY_ENV.items():
        if os.environ.get(env):
            security[key] = os.environ[env]
            set_origin(f"security.{key}", f"environment variable {env}")
    for key, value in overrides.items():
        if value is not None:
            set_origin(key, f"option --{key.replace('_', '-')}")
    problems = _security_problems(security, origins) + _value_problems(
        {**values, **{k: v for k, v in overrides.items() if v is not None}}, origins)
    if problems:
        raise ConfigError(problems[0])
    sec = SecuritySettings(**security)
    problems = [f"{_origin(origins, 'security.protocol')}{p}" for p in sec.problems()]
    if problems:
        raise ConfigError(problems[0])
    return validate(Settings(**values, security=sec).with_overrides(**overrides), origins)


_ENV = {
    "STREAMS_BROKER": "broker",
    "STREAMS_STATE_DIR": "state_dir",
    "STREAMS_METRICS_HOST": "metrics_host",
    "STREAMS_ADVERTISED_HOST": "advertised_host",
    "STREAMS_DISCOVERY_DIR": "discovery_dir",
}

# Environment overrides of the [security] table (never the password itself: that variable is
# named by sasl_password_env and read only when a client is created).
_SECURITY_ENV = {
    "STREAMS_SECURITY_PROTOCOL": "protocol",
    "STREAMS_SASL_MECHANISM": "sasl_mechanism",
    "STREAMS_SASL_USERNAME": "sasl_username",
    "STREAMS_SSL_CAFILE": "ssl_cafile",
}


def _origin(origins: dict[str, str], key: str) -> str:
    """``"<where key was set>: "``, or ``""`` for a built-in default."""
    where = origins.get(key)
    return f"{where}: " if where else ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _value_problem(key: str, value: Any) -> str | None:
    """What is wrong with ``value`` for setting ``key`` on its own (None: nothing)."""
    name = _display_key(key)
    if key in INT_RANGES:
        low, high = INT_RANGES[key]
        if not _is_int(value):
            return f"{name} must be an integer, not {_short(value)}"
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
            return f"{name} must be {bounds}, not {value}"
    elif key in CHOICES:
        if value not in CHOICES[key]:
            return f"{name} must be one of {', '.join(CHOICES[key])}, not {_short(value)}"
    elif key in TEXT:
        if not isinstance(value, str) or not value.strip():
            return f"{name} must be a non-empty string, not {_short(value)}"
        if key == "broker":
            return _broker_problem(value)
    elif key == "discovery_dir":
        if not isinstance(value, str):
            return f"discovery_dir must be a string (a directory; \"\" = off), not {_short(value)}"
        if value and Path(value).exists() and not Path(value).is_dir():
            return f"discovery_dir must be a directory, but {value} is a file"
    elif key in ("replication_factor", "min_insync_replicas"):
        if value != "auto" and not (_is_int(value) and value >= 1):
            return f"{name} must be \"auto\" or a positive integer, not {_short(value)}"
    return None


def _broker_problem(value: str) -> str | None:
    for address in value.split(","):
        host, _, port = address.strip().rpartition(":")
        if not host or not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
            return f"broker must be host:port[,host:port...], not {_short(value)}"
    return None


def _value_problems(values: dict[str, Any], origins: dict[str, str]) -> list[str]:
    out = []
    for key, value in values.items():
        problem = _value_problem(key, value)
        if problem:
            out.append(f"{_origin(origins, key)}{problem}")
    return out


def _security_problems(security: dict[str, Any], origins: dict[str, str]) -> list[str]:
    out = []
    types = {f.name: f.type for f in fields(SecuritySettings)}
    for key, value in security.items():
        want_bool = types[key] in (bool, "bool")
        if (isinstance(value, bool) if want_bool else isinstance(value, str)):
            continue
        kind = "true or false" if want_bool else "a string"
        out.append(f"{_origin(origins, f'security.{key}')}security.{key} must be {kind}, "
                   f"not {_short(value)}")
    return out


def validate(settings: Settings, origins: dict[str, str] | None = None) -> Settings:
    """One clear error for a setting out of range or settings that cannot work together;
    ``origins`` (key -> where it was set) names the file, variable or option in the error."""
    origins = origins or {}
    for f in fields(Settings):
        if f.name == "security":
            continue
        value = getattr(settings, f.name)
        if value is None and f.name == "commit_interval_ms":
            continue  # the guarantee's default
        problem = _value_problem(f.name, value)
        if problem:
            raise ConfigError(f"{_origin(origins, f.name)}{problem}")
    interval = settings.effective_commit_interval_ms
    if settings.transaction_timeout_ms < 5 * interval:
        # named where the user changed it last: the other one is usually the default
        order = list(origins)
        last = max(("transaction_timeout_ms", "commit_interval_ms"),
                   key=lambda k: order.index(k) if k in origins else -1)
        raise ConfigError(f"{_origin(origins, last)}transaction_timeout_ms "
                          f"({settings.transaction_timeout_ms}) must be at least 5 x "
                          f"commit_interval_ms ({interval})")
    return settings
