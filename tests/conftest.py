"""Shared pytest configuration for gridwhistle's tests."""

# Real Kafka / PostgreSQL fixtures (kafka_bootstrap, pg_url, topic_prefix, ...):
# see tests/_infra.py.
pytest_plugins = ["tests._infra"]
