"""Shared pytest configuration for gridwhistle's tests."""

import os

# Services refuse the development token secret unless dev mode is on. In-process apps of the
# unit, component and integration tests run in dev mode; the e2e stack and the chaos harness
# start their processes with a generated secret and dev mode off (tests/e2e/stack.py).
os.environ.setdefault("GW_AUTH_DEV_MODE", "1")

# Real Kafka / PostgreSQL fixtures (kafka_bootstrap, pg_url, topic_prefix, ...):
# see tests/_infra.py.
pytest_plugins = ["tests._infra"]
