"""Settings shared by every service; each service subclasses with its own env prefix (GW_<NAME>_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


def _shared(env: str, field: str) -> AliasChoices:
    # One env name for every service (no GW_<NAME>_ prefix); the field name works as a kwarg.
    return AliasChoices(env, field)


class KafkaClientSettings(BaseSettings):
    """How a process reaches Kafka: bootstrap servers and security, from env names every service shares.

    In a deployment each service runs as its own principal: its pods get their own
    KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD (from a Secret), everything else is common.
    See deploy/KAFKA_SECURITY.md; services/runtime/kafka_security.py turns this into clients.
    """

    # A validation error would otherwise quote the input, a password among it.
    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", hide_input_in_errors=True)

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=_shared("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
    )
    kafka_security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT", validation_alias=_shared("KAFKA_SECURITY_PROTOCOL", "kafka_security_protocol")
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        default="SCRAM-SHA-512", validation_alias=_shared("KAFKA_SASL_MECHANISM", "kafka_sasl_mechanism")
    )
    kafka_sasl_username: str | None = Field(
        default=None, validation_alias=_shared("KAFKA_SASL_USERNAME", "kafka_sasl_username")
    )
    # SecretStr: shown as '**********' in reprs, validation errors and logs.
    kafka_sasl_password: SecretStr | None = Field(
        default=None, validation_alias=_shared("KAFKA_SASL_PASSWORD", "kafka_sasl_password")
    )
    # PEM CA bundle that signed the brokers' certificates (unset: the system's trust store).
    kafka_ssl_cafile: Path | None = Field(
        default=None, validation_alias=_shared("KAFKA_SSL_CAFILE", "kafka_ssl_cafile")
    )
    # Client certificate and key (PEM) for mutual TLS; the key may sit in the certificate file.
    kafka_ssl_certfile: Path | None = Field(
        default=None, validation_alias=_shared("KAFKA_SSL_CERTFILE", "kafka_ssl_certfile")
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None, validation_alias=_shared("KAFKA_SSL_KEYFILE", "kafka_ssl_keyfile")
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None, validation_alias=_shared("KAFKA_SSL_KEY_PASSWORD", "kafka_ssl_key_password")
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True, validation_alias=_shared("KAFKA_SSL_CHECK_HOSTNAME", "kafka_ssl_check_hostname")
    )

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> KafkaClientSettings:
        """Refuse half-configured security instead of silently connecting without it."""
        protocol = self.kafka_security_protocol
        sasl = self.kafka_sasl_username is not None or self.kafka_sasl_password is not None
        if protocol in SASL_PROTOCOLS and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        if protocol not in SASL_PROTOCOLS and sasl:
            raise ValueError(
                f"KAFKA_SASL_USERNAME/PASSWORD are set but KAFKA_SECURITY_PROTOCOL={protocol} does not "
                "authenticate with SASL (use SASL_SSL or SASL_PLAINTEXT)"
            )
        tls_files = [self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile, self.kafka_ssl_key_password]
        if protocol not in TLS_PROTOCOLS and any(v is not None for v in tls_files):
            raise ValueError(
                f"KAFKA_SSL_* files are set but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS "
                "(use SSL or SASL_SSL)"
            )
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            raise ValueError("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE (the client certificate)")
        return self


# Signs the development tokens; every service refuses it unless GW_AUTH_DEV_MODE is on.
DEV_TOKEN_SECRET = "dev-only-gridwhistle-token-secret-change-me"


class AccessSettings(BaseSettings):
    """Who may call the HTTP APIs: the token secret and lifetime, supervisors and admins (services/runtime/auth.py).

    Shared env names (no GW_<NAME>_ prefix): every service verifies the same tokens.
    """

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", hide_input_in_errors=True)

    auth_token_secret: str = Field(
        default=DEV_TOKEN_SECRET, validation_alias=_shared("GW_AUTH_TOKEN_SECRET", "auth_token_secret"), repr=False
    )
    # Secrets being rotated out: tokens they signed still verify; new tokens use auth_token_secret.
    auth_previous_token_secrets: tuple[str, ...] = Field(
        default=(), validation_alias=_shared("GW_AUTH_PREVIOUS_TOKEN_SECRETS", "auth_previous_token_secrets"), repr=False
    )
    # On a laptop and in tests only: accept the development secret and the demo Open311 key.
    auth_dev_mode: bool = Field(default=False, validation_alias=_shared("GW_AUTH_DEV_MODE", "auth_dev_mode"))
    auth_token_ttl_seconds: int = Field(
        default=12 * 3600, ge=60, le=7 * 24 * 3600,
        validation_alias=_shared("GW_AUTH_TOKEN_TTL_SECONDS", "auth_token_ttl_seconds"),
    )
    # Reference data names no supervisors or admins; these user ids are (env as JSON lists).
    auth_supervisors: tuple[str, ...] = Field(
        default=("sup-1",), validation_alias=_shared("GW_AUTH_SUPERVISORS", "auth_supervisors")
    )
    auth_admins: tuple[str, ...] = Field(default=("admin",), validation_alias=_shared("GW_AUTH_ADMINS", "auth_admins"))


class ServiceSettings(KafkaClientSettings, AccessSettings):
    """Common knobs: broker (and its security), access, database, HTTP, logging, consumer retry bounds."""

    model_config = SettingsConfigDict(env_prefix="GW_", populate_by_name=True, extra="ignore")

    # Lets tests and parallel environments share one cluster without seeing each other.
    topic_prefix: str = Field(
        default="", validation_alias=AliasChoices("GW_TOPIC_PREFIX", "topic_prefix")
    )
    database_url: str = "sqlite+aiosqlite:///./gridwhistle.db"
    # Reference data (YAML/JSON file or CSV directory; None = the demo city): areas of grids and
    # units for access checks, and whatever else a service looks up in it.
    reference_data: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    log_level: str = "INFO"
    log_json: bool = True
    # Bounded in-process retries for a failing handler before the record is dead-lettered.
    handler_max_attempts: int = Field(default=3, ge=1, le=20)
    # Back-off before a record is redelivered after an infrastructure failure (DB or broker).
    infra_retry_backoff_seconds: float = Field(default=1.0, ge=0)
    outbox_batch_size: int = Field(default=500, ge=1)
    outbox_poll_seconds: float = Field(default=0.5, gt=0)
    max_request_bytes: int = Field(default=64 * 1024, ge=1024)
    # API requests past this many in flight are answered 503 at once (probes and event streams
    # excepted); twice the database pool (10 + 10 overflow) keeps a short queue without timeouts.
    max_requests_in_flight: int = Field(default=40, ge=1)
    # What a 503 (overloaded, database busy or unreachable) tells the caller to wait, in seconds.
    retry_after_seconds: int = Field(default=1, ge=1)
    metrics_enabled: bool = True
    # A consumer group with lag that finished no record for this long makes readiness fail.
    consumer_stall_seconds: float = Field(default=120.0, gt=0)
    health_sample_seconds: float = Field(default=5.0, gt=0)
    # Offsets are committed in bulk (the idempotent consumer makes a redelivery harmless): after
    # this many records, and at least this often while records are processed.
    commit_every_records: int = Field(default=100, ge=1)
    commit_interval_seconds: float = Field(default=0.2, gt=0)
    # Records handled in one transaction at most, and how long an idle consumer waits for more.
    consumer_batch_max_records: int = Field(default=100, ge=1, le=10_000)
    consumer_poll_ms: int = Field(default=10, ge=1, le=1000)
