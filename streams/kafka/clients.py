"""Where every Kafka client gets its address and security settings.

Consumers, producers and admin clients are all built with ``**client_kwargs(kafka)``, so a
cluster that needs SASL or TLS is configured once (the ``[security]`` settings) and reaches
every client. ``kafka`` is a :class:`KafkaConnection` (address + security) or a plain bootstrap
string for an unsecured cluster.

>>> client_kwargs("127.0.0.1:9092")
{'bootstrap_servers': '127.0.0.1:9092'}
>>> KafkaConnection("b1:9093", SecuritySettings("SASL_PLAINTEXT", "SCRAM-SHA-256", "alice"))
KafkaConnection('b1:9093', protocol=SASL_PLAINTEXT, sasl=SCRAM-SHA-256 user alice)
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any

from ..config import ConfigError, SecuritySettings, Settings


@dataclass(frozen=True, repr=False)
class KafkaConnection:
    """A cluster's bootstrap list and how to authenticate to it. Holds no secrets: passwords
    are read from the environment when a client is created."""

    bootstrap: str
    security: SecuritySettings = SecuritySettings()

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        return cls(settings.broker, settings.security)

    def __str__(self) -> str:
        # Error messages say "no broker answers at {kafka}": the address, nothing else.
        return self.bootstrap

    def __repr__(self) -> str:
        sec = self.security
        text = f"KafkaConnection({self.bootstrap!r}, protocol={sec.protocol}"
        if sec.uses_sasl:
            text += f", sasl={sec.sasl_mechanism} user {sec.sasl_username}"
        return text + ")"


Kafka = KafkaConnection | str


def client_kwargs(kafka: Kafka) -> dict[str, Any]:
    """Keyword arguments shared by ``AIOKafkaConsumer``, ``AIOKafkaProducer`` and
    ``AIOKafkaAdminClient``: the bootstrap list plus the security settings.

    Raises :class:`ConfigError` (one line, no secret in it) when a password variable is unset.
    """
    if not isinstance(kafka, KafkaConnection):
        return {"bootstrap_servers": kafka}
    sec = kafka.security
    kwargs: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap}
    if sec.protocol == "PLAINTEXT":
        return kwargs
    kwargs["security_protocol"] = sec.protocol
    if sec.uses_sasl:
        password = os.environ.get(sec.sasl_password_env)
        if not password:
            raise ConfigError(f"security.protocol is {sec.protocol} but the SASL password "
                              f"variable {sec.sasl_password_env} is not set")
        kwargs.update(sasl_mechanism=sec.sasl_mechanism, sasl_plain_username=sec.sasl_username,
                      sasl_plain_password=password)
    if sec.uses_ssl:
        kwargs["ssl_context"] = ssl_context(sec)
    return kwargs


def ssl_context(sec: SecuritySettings) -> ssl.SSLContext:
    """A TLS client context: the configured CA (else the system's), an optional client
    certificate, hostname checks unless turned off."""
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(sec, name)
        if path and not os.path.isfile(path):
            raise ConfigError(f"security.{name} {path} does not exist")
    try:
        context = ssl.create_default_context(cafile=sec.ssl_cafile or None)
        context.check_hostname = sec.ssl_check_hostname
        if sec.ssl_certfile:
            context.load_cert_chain(sec.ssl_certfile, sec.ssl_keyfile or None,
                                    password=os.environ.get(sec.ssl_key_password_env) or None)
    except ssl.SSLError as exc:
        # The message names the failing file, never the key password.
        raise ConfigError(f"cannot load the TLS settings: {exc.reason or exc}") from None
    return context
