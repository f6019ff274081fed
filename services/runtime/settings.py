"""Settings shared by every service; each service subclasses with its own env prefix (GW_<NAME>_)."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Common knobs: broker, database, HTTP, logging, consumer retry bounds."""

    model_config = SettingsConfigDict(env_prefix="GW_", populate_by_name=True, extra="ignore")

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
    )
    # Lets tests and parallel environments share one cluster without seeing each other.
    topic_prefix: str = Field(
        default="", validation_alias=AliasChoices("GW_TOPIC_PREFIX", "topic_prefix")
    )
    database_url: str = "sqlite+aiosqlite:///./gridwhistle.db"
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
    metrics_enabled: bool = True
    # A consumer group with lag that finished no record for this long makes readiness fail.
    consumer_stall_seconds: float = Field(default=120.0, gt=0)
    health_sample_seconds: float = Field(default=5.0, gt=0)
    # Offsets are committed in bulk (the idempotent consumer makes a redelivery harmless): after
    # this many records, and at least this often while records are processed.
    commit_every_records: int = Field(default=100, ge=1)
    commit_interval_seconds: float = Field(default=0.2, gt=0)
