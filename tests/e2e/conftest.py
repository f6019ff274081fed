"""Fixtures that start the whole system as OS processes on real Kafka and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import yaml

from contracts.deadline_policy import DEFAULT_POLICY
from infra.local import create_topics_sync
from tests.e2e.stack import SERVICES, Stack

# General matters get a 4-second report deadline so path (b) breaches within the test; urgent
# matters keep the real 15 minutes so path (a) is never at risk of a spurious breach.
SHORT_GENERAL_REPORT_SECONDS = 4.0


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, postgres_server, tmp_path_factory) -> Iterator[Stack]:
    """All five services, each its own process and PostgreSQL database, on a private topic prefix."""
    prefix = f"e2e{uuid.uuid4().hex[:8]}."
    create_topics_sync(kafka_bootstrap, prefix=prefix)
    work = tmp_path_factory.mktemp("e2e")
    policy = DEFAULT_POLICY.model_dump(mode="json")
    policy["version"] = "e2e-short-general"
    policy["general"]["report"] = SHORT_GENERAL_REPORT_SECONDS
    policy_file = work / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy), encoding="utf-8")
    databases = {name: postgres_server.create_database(f"e2e_{name}_{uuid.uuid4().hex[:6]}") for name in SERVICES}
    running = Stack(kafka_bootstrap, prefix, databases, work / "logs", policy_file)
    try:
        running.start()
    except Exception:
        print(running.logs())
        running.stop()
        raise
    yield running
    running.stop()
    print(running.logs())
