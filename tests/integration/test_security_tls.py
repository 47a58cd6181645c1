"""TLS end to end: a private broker with SSL and SASL_SSL (SCRAM) listeners whose certificate
is signed by a CA made here with openssl; the framework's clients connect with
``security.ssl_cafile`` pointing at that CA (hostname checked against the certificate's
127.0.0.1 SAN), and a client that trusts another CA fails with one line.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.config import SecuritySettings
from streams.devtools import broker
from streams.kafka import admin
from streams.kafka.clients import KafkaConnection

from tests.conftest import ROOT

pytestmark = pytest.mark.broker

USER, PASSWORD = "tls-user", "Tls-Scram-Pa55"


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", f"/CN={name}", cwd=directory)
    return directory / "ca.pem", directory / "ca.key"


def make_broker_keystore(directory: Path, ca: Path, ca_key: Path) -> Path:
    """The broker's PEM keystore: unencrypted PKCS#8 key + certificate for 127.0.0.1."""
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=localhost", cwd=directory)
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext",
             cwd=directory)
    _openssl("pkcs8", "-topk8", "-nocrypt", "-in", "server.key", "-out", "server.pk8",
             cwd=directory)
    keystore = directory / "keystore.pem"
    keystore.write_text((directory / "server.pk8").read_text() +
                        (directory / "server.pem").read_text())
    return keystore


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    if shutil.which("java") is None or shutil.which("openssl") is None:
        pytest.skip("java and openssl are needed")
    root = tmp_path_factory.mktemp("tls")
    ca, ca_key = make_ca(root / "ca", "streams-test-ca")
    other_ca, _ = make_ca(root / "other-ca", "some-other-ca")
    keystore = make_broker_keystore(root / "ca", ca, ca_key)
    saved = {k: os.environ.get(k) for k in ("STREAMS_HOME", "KAFKA_HOME")}
    cache = broker.streams_home() / f"kafka-{broker.KAFKA_VERSION}"
    if not os.environ.get("KAFKA_HOME") and (cache / "complete").exists():
        os.environ["KAFKA_HOME"] = str(cache)
    os.environ["STREAMS_HOME"] = str(root / "home")
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(24000, 24900, 4)  # below the ephemeral port range
        if all(broker.port_free(p) for p in range(port, port + 4)):
            break
    try:
        broker.start(port, verbose=False, secured={"SSL": port + 2, "SASL_SSL": port + 3},
                     scram_users={USER: PASSWORD}, tls=broker.Tls(keystore, ca), heap="512m")
        yield {"ssl": f"127.0.0.1:{port + 2}", "sasl_ssl": f"127.0.0.1:{port + 3}",
               "ca": ca, "other_ca": other_ca}
    finally:
        broker.stop(port)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_ssl_clients_trust_the_configured_ca(tls_broker: dict) -> None:
    kafka = KafkaConnection(tls_broker["ssl"],
                            SecuritySettings("SSL", ssl_cafile=str(tls_broker["ca"])))
    topic = "tls-test-topic"
    admin.run(admin.ensure_topics(kafka, [admin.TopicSpec(topic, 2)]))
    assert topic in admin.run(admin.list_topics(kafka))
    assert sorted(admin.run(admin.end_offsets(kafka, topic))) == [0, 1]


def test_generate_and_consume_over_sasl_ssl(tls_broker: dict, tmp_path: Path) -> None:
    env = {**os.environ, "STREAMS_BROKER": tls_broker["sasl_ssl"],
           "STREAMS_SECURITY_PROTOCOL": "SASL_SSL", "STREAMS_SASL_MECHANISM": "SCRAM-SHA-512",
           "STREAMS_SASL_USERNAME": USER, "STREAMS_SASL_PASSWORD": PASSWORD,
           "STREAMS_SSL_CAFILE": str(tls_broker["ca"])}
    gen = cli("generate", "profile_notifications", "--count", "300", env=env)
    assert gen.returncode == 0, gen.stderr
    counted = cli("consume", "profile-views", "--count", env=env)
    assert counted.returncode == 0, counted.stderr
    assert "profile-views: 300 records" in counted.stdout
    assert PASSWORD not in gen.stdout + gen.stderr + counted.stdout + counted.stderr


def test_untrusted_certificate_is_one_line(tls_broker: dict) -> None:
    env = {**os.environ, "STREAMS_BROKER": tls_broker["ssl"], "STREAMS_SECURITY_PROTOCOL": "SSL",
           "STREAMS_SSL_CAFILE": str(tls_broker["other_ca"])}
    result = cli("consume", "profile-views", "--count", env=env)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0
    assert len(output.splitlines()) == 1, output
    assert "TLS handshake" in output and "CERTIFICATE_VERIFY_FAILED" in output, output
