"""Kafka security settings: shared env names, refused half-configurations, one builder for every client."""

from __future__ import annotations

import ssl

import pytest
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import ValidationError

from services.classification.settings import ClassificationSettings
from services.runtime.kafka_security import aiokafka_client_kwargs, kafka_security, tls_context
from services.runtime.settings import KafkaClientSettings, ServiceSettings

SECRET = "s3cr3t-Passw0rd"
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"


def test_plaintext_is_the_default_and_needs_no_security_object():
    settings = ServiceSettings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert kafka_security(settings) is None
    assert aiokafka_client_kwargs(settings) == {"bootstrap_servers": "127.0.0.1:9092"}


def test_every_service_reads_the_same_unprefixed_env_names(monkeypatch):
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "scram-sha-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "classification")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("KAFKA_SSL_CHECK_HOSTNAME", "false")
    # a service's own prefix does not apply to the shared names
    monkeypatch.setenv("GW_CLASSIFICATION_KAFKA_SASL_USERNAME", "ignored")
    for settings in (ClassificationSettings(), KafkaClientSettings()):
        assert settings.kafka_security_protocol == "SASL_PLAINTEXT"
        assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
        assert settings.kafka_sasl_username == "classification"
        assert settings.kafka_sasl_password is not None and settings.kafka_sasl_password.get_secret_value() == SECRET
        assert settings.kafka_ssl_check_hostname is False


@pytest.mark.parametrize(
    ("mechanism", "kind"), [("PLAIN", SASLPlaintext), ("SCRAM-SHA-256", SASLScram256), ("SCRAM-SHA-512", SASLScram512)]
)
def test_sasl_mechanisms_map_to_faststream_security(mechanism, kind):
    settings = ServiceSettings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="routing",
        kafka_sasl_password=SECRET,
    )
    security = kafka_security(settings)
    assert type(security) is kind
    assert security.use_ssl is False and security.ssl_context is None
    kwargs = aiokafka_client_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert kwargs["sasl_mechanism"] == mechanism
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("routing", SECRET)


@pytest.mark.skipif(not __import__("os").path.isfile(SYSTEM_CA), reason="no system CA bundle")
def test_sasl_ssl_carries_a_verifying_tls_context():
    settings = ServiceSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="intake",
        kafka_sasl_password=SECRET,
        kafka_ssl_cafile=SYSTEM_CA,
    )
    security = kafka_security(settings)
    assert isinstance(security, SASLScram512) and security.use_ssl
    assert security.ssl_context.verify_mode == ssl.CERT_REQUIRED and security.ssl_context.check_hostname
    assert aiokafka_client_kwargs(settings)["security_protocol"] == "SASL_SSL"


def test_ssl_alone_is_tls_without_sasl():
    settings = ServiceSettings(kafka_security_protocol="SSL", kafka_ssl_check_hostname=False)
    security = kafka_security(settings)
    assert type(security) is BaseSecurity and security.use_ssl
    assert security.ssl_context.check_hostname is False
    assert security.ssl_context.verify_mode == ssl.CERT_REQUIRED  # the chain is still verified
    assert aiokafka_client_kwargs(settings)["security_protocol"] == "SSL"
    assert tls_context(settings).minimum_version >= ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"}, "needs KAFKA_SASL_USERNAME"),
        ({"kafka_sasl_username": "u", "kafka_sasl_password": SECRET}, "does not authenticate with SASL"),
        ({"kafka_ssl_cafile": "/ca.pem"}, "does not use TLS"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/k.pem"}, "needs KAFKA_SSL_CERTFILE"),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
    ],
)
def test_half_configured_security_is_refused_at_start(fields, complaint):
    with pytest.raises(ValidationError, match=complaint):
        ServiceSettings(**fields)


def test_the_password_never_shows_in_reprs_dumps_or_validation_errors():
    settings = ServiceSettings(
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="closure", kafka_sasl_password=SECRET
    )
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert SECRET not in settings.model_dump_json()
    assert SECRET not in repr(kafka_security(settings))
    with pytest.raises(ValidationError) as refused:
        ServiceSettings(kafka_sasl_username="closure", kafka_sasl_password=SECRET)  # no SASL protocol
    assert SECRET not in str(refused.value)


def test_the_service_broker_is_built_with_the_security(tmp_path):
    from sqlalchemy import MetaData

    from services.runtime.host import ServiceRuntime

    settings = ServiceSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/c.db",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="classification",
        kafka_sasl_password=SECRET,
    )
    runtime = ServiceRuntime("classification", settings, MetaData(), configure_logs=False)
    kwargs = runtime.broker._connection_kwargs  # noqa: SLF001 - what aiokafka will be given
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["sasl_plain_username"] == "classification"
