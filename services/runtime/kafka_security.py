"""Kafka client security (TLS, SASL) from the shared settings: one place for every client we make.

`kafka_security(settings)` is what the service host passes to FastStream's KafkaBroker;
`aiokafka_client_kwargs(settings)` gives the same connection (bootstrap servers and security)
to the plain aiokafka clients of command-line tools (topic creation, the KPI rebuild).
How the brokers, principals and ACLs are set up: deploy/KAFKA_SECURITY.md.
"""

from __future__ import annotations

import ssl
from typing import Any

from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from services.runtime.settings import SASL_PROTOCOLS, TLS_PROTOCOLS, KafkaClientSettings

_SASL = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}


def kafka_security(settings: KafkaClientSettings) -> BaseSecurity | None:
    """FastStream's security object for these settings; None for PLAINTEXT (no TLS, no SASL)."""
    protocol = settings.kafka_security_protocol
    context = tls_context(settings) if protocol in TLS_PROTOCOLS else None
    if protocol not in SASL_PROTOCOLS:
        return None if context is None else BaseSecurity(ssl_context=context, use_ssl=True)
    assert settings.kafka_sasl_username and settings.kafka_sasl_password  # checked by the settings
    return _SASL[settings.kafka_sasl_mechanism](
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        use_ssl=context is not None,
    )


def tls_context(settings: KafkaClientSettings) -> ssl.SSLContext:
    """A client TLS context: the configured CA (or the system's), optional client certificate."""
    cafile = settings.kafka_ssl_cafile
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile is not None:
        key_password = settings.kafka_ssl_key_password
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            key_password.get_secret_value() if key_password else None,
        )
    return context


def aiokafka_client_kwargs(settings: KafkaClientSettings) -> dict[str, Any]:
    """bootstrap_servers plus the security keyword arguments of an aiokafka client."""
    return {"bootstrap_servers": settings.kafka_bootstrap_servers, **parse_security(kafka_security(settings))}
