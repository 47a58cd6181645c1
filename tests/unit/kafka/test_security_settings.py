"""Security and replication settings: TOML/env -> settings -> aiokafka keyword arguments.

The password never becomes part of a settings object; it is read from the environment variable
that the settings name, only when a client is created.
"""

from __future__ import annotations

import doctest
import ssl
import subprocess
from pathlib import Path

import pytest

from streams.config import ConfigError, SecuritySettings, load_settings
from streams.kafka import admin, clients
from streams.kafka.admin import Replication
from streams.kafka.clients import KafkaConnection, client_kwargs

SECRET = "s3cr3t-Pa55-word"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config dir with the repository's defaults and an empty environment for security."""
    for var in ("STREAMS_BROKER", "STREAMS_SECURITY_PROTOCOL", "STREAMS_SASL_MECHANISM",
                "STREAMS_SASL_USERNAME", "STREAMS_SSL_CAFILE", "STREAMS_SASL_PASSWORD",
                "STREAMS_METRICS_HOST"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "defaults.toml").write_text((ROOT / "config" / "defaults.toml").read_text())
    monkeypatch.setenv("STREAMS_CONFIG_DIR", str(tmp_path))
    return tmp_path


def test_defaults_are_plaintext_local_and_auto_replication(config: Path) -> None:
    s = load_settings()
    assert s.security == SecuritySettings()
    assert client_kwargs(KafkaConnection.from_settings(s)) == {"bootstrap_servers": s.broker}
    assert s.metrics_host == "127.0.0.1"
    assert (s.replication_factor, s.min_insync_replicas) == ("auto", "auto")


def test_scram_from_toml_with_password_from_named_env(config: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (config / "app.toml").write_text(
        'broker = "k1:9096,k2:9096"\n[security]\nprotocol = "SASL_PLAINTEXT"\n'
        'sasl_mechanism = "SCRAM-SHA-512"\nsasl_username = "app"\n'
        'sasl_password_env = "APP_KAFKA_PASSWORD"\n')
    monkeypatch.setenv("APP_KAFKA_PASSWORD", SECRET)
    s = load_settings(config_file=config / "app.toml")
    kw = client_kwargs(KafkaConnection.from_settings(s))
    assert kw == {"bootstrap_servers": "k1:9096,k2:9096", "security_protocol": "SASL_PLAINTEXT",
                  "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "app",
                  "sasl_plain_password": SECRET}
    # Nothing that is printed or logged carries the secret.
    conn = KafkaConnection.from_settings(s)
    for text in (repr(s), str(s), repr(conn), str(conn), repr(s.security)):
        assert SECRET not in text


def test_env_overrides_security_settings(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMS_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAMS_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("STREAMS_SASL_USERNAME", "alice")
    monkeypatch.setenv("STREAMS_SASL_PASSWORD", SECRET)
    kw = client_kwargs(KafkaConnection.from_settings(load_settings()))
    assert (kw["sasl_mechanism"], kw["sasl_plain_username"], kw["sasl_plain_password"]) == \
        ("SCRAM-SHA-256", "alice", SECRET)


def test_missing_password_variable_is_one_line_naming_the_variable(config: Path) -> None:
    sec = SecuritySettings("SASL_SSL", "PLAIN", "bob", sasl_password_env="NOT_SET_ANYWHERE")
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE is not set"):
        client_kwargs(KafkaConnection("b:9093", sec))


@pytest.mark.parametrize("table, message", [
    ('protocol = "SASL_TLS"', "security.protocol must be one of"),
    ('protocol = "SASL_SSL"\nsasl_mechanism = "GSSAPI"\nsasl_username = "x"',
     "sasl_mechanism must be one of"),
    ('protocol = "SASL_PLAINTEXT"', "sasl_username is required"),
    ('sasl_password = "inline"', "unknown setting security.sasl_password"),
])
def test_bad_security_settings_are_refused(config: Path, table: str, message: str) -> None:
    (config / "bad.toml").write_text(f"[security]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(config_file=config / "bad.toml")


def test_bad_replication_settings_are_refused(config: Path) -> None:
    (config / "bad.toml").write_text('replication_factor = "three"\n')
    with pytest.raises(ConfigError, match="replication_factor must be"):
        load_settings(config_file=config / "bad.toml")


def test_ssl_settings_build_a_context_with_the_ca(config: Path, tmp_path: Path) -> None:
    ca = _self_signed(tmp_path)
    sec = SecuritySettings("SSL", ssl_cafile=str(ca), ssl_check_hostname=False)
    kw = client_kwargs(KafkaConnection("b:9093", sec))
    assert kw["security_protocol"] == "SSL"
    context = kw["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is False
    assert any("streams-test-ca" in str(c.get("subject")) for c in context.get_ca_certs())


def test_ssl_missing_file_is_one_line(config: Path) -> None:
    sec = SecuritySettings("SASL_SSL", "PLAIN", "u", ssl_cafile="/nonexistent/ca.pem")
    with pytest.raises(ConfigError, match="ssl_cafile /nonexistent/ca.pem does not exist"):
        clients.ssl_context(sec)


def _self_signed(tmp_path: Path) -> Path:
    key, cert = tmp_path / "ca.key", tmp_path / "ca.pem"
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=streams-test-ca"],
        capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"openssl unavailable: {result.stderr[-200:]}")
    return cert


@pytest.mark.parametrize("brokers, want", [(1, (1, 1)), (2, (2, 1)), (3, (3, 2)), (7, (3, 2))])
def test_auto_replication_follows_cluster_size(brokers: int, want: tuple[int, int]) -> None:
    assert Replication().resolve(brokers) == want


def test_explicit_replication_beyond_cluster_is_refused() -> None:
    with pytest.raises(admin.BrokerUnavailable, match="needs at least 3 brokers"):
        Replication(3, 2).resolve(1)
    with pytest.raises(admin.BrokerUnavailable, match="more than the replication factor"):
        Replication(2, 3).resolve(3)
    assert Replication(2, "auto").resolve(3) == (2, 1)


def test_module_examples() -> None:
    for module in (clients, admin):
        failed, _ = doctest.testmod(module)
        assert failed == 0, module.__name__


def test_every_kafka_client_is_built_through_client_kwargs() -> None:
    """A client built with bootstrap_servers= directly would skip the security settings."""
    offenders = []
    for path in (ROOT / "streams").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "bootstrap_servers=" in line and path.name != "clients.py":
                offenders.append(f"{path.relative_to(ROOT)}:{n}")
    assert not offenders, offenders
