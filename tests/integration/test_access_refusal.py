"""A service process outside development mode refuses to start on the development token secret."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from infra.local import ServiceProcess, free_port
from services.runtime.settings import DEV_TOKEN_SECRET

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("service", ["intake", "classification", "routing", "sla_timer", "closure", "console"])
def test_a_service_without_a_secret_and_without_dev_mode_exits_saying_why(tmp_path: Path, service: str) -> None:
    upper = service.upper()
    env = {
        "GW_AUTH_DEV_MODE": "0",  # the test process runs in dev mode; a deployment does not
        "GW_AUTH_TOKEN_SECRET": DEV_TOKEN_SECRET,
        f"GW_{upper}_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/{service}.db",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # never reached: the refusal comes first
    }
    proc = ServiceProcess(service, env, free_port(), tmp_path / f"{service}.log").start()
    deadline = time.monotonic() + 60
    while proc.is_running and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not proc.is_running, "the service started on the development secret"
    assert proc.returncode != 0
    assert "GW_AUTH_TOKEN_SECRET is the development default" in proc.log_tail(60)
