"""The compose stack runs every service with a health check, and Prometheus and Grafana see them all.

`docker compose config` (Compose's own schema and interpolation check) runs when a Docker CLI
with the compose plugin answers, or a standalone `docker-compose` binary is on PATH or in
.cache/tools/bin; otherwise only that check is skipped and the file is checked by parsing it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.devstack import SERVICES
from tests.support import ops_tool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
DASHBOARD = json.loads((ROOT / "infra" / "grafana" / "dashboards" / "gridwhistle.json").read_text(encoding="utf-8"))


def compose_command() -> list[str] | None:
    """How to run Docker Compose here: the docker CLI plugin, a standalone binary, or None."""
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    local = ROOT / ".cache" / "tools" / "bin" / "docker-compose"
    standalone = str(local) if local.is_file() else shutil.which("docker-compose")
    if standalone:
        candidates.append([standalone])
    for command in candidates:
        try:
            if subprocess.run([*command, "version"], capture_output=True, timeout=30).returncode == 0:
                return command
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def test_compose_file_passes_docker_compose_config():
    command = compose_command()
    if command is None:
        pytest.skip("no Docker Compose here (`docker compose version` fails and no docker-compose binary)")
    compose = [*command, "-f", str(ROOT / "deploy" / "docker-compose.yml"), "config", "-q"]
    env = {k: v for k, v in os.environ.items() if k != "GW_AUTH_TOKEN_SECRET"}
    result = subprocess.run(compose, capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env={**env, "GW_AUTH_TOKEN_SECRET": "x" * 48})
    assert result.returncode == 0, result.stdout + result.stderr
    # Without a token secret the stack refuses to come up rather than run on a known one.
    refused = subprocess.run(compose, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert refused.returncode != 0 and "GW_AUTH_TOKEN_SECRET" in refused.stdout + refused.stderr


def test_every_service_is_composed_with_port_database_and_a_readiness_health_check():
    databases = re.findall(r"CREATE DATABASE (\w+);", (ROOT / "deploy" / "postgres-init.sql").read_text())
    for name, port in SERVICES:
        service = COMPOSE[name]
        env = service["environment"]
        prefix = f"GW_{name.upper()}_"
        assert env["SERVICE"] == name
        assert env[f"{prefix}HTTP_HOST"] == "0.0.0.0"
        assert env[f"{prefix}DATABASE_URL"].rsplit("/", 1)[1] in databases
        assert service["ports"] == [f"{port}:{port}"]
        assert f"http://127.0.0.1:{port}/health" in " ".join(service["healthcheck"]["test"])
        assert service["healthcheck"]["interval"] == "10s"  # the shared x-health block was merged


def test_prometheus_and_grafana_are_provisioned_from_the_repository():
    assert "../infra/prometheus:/etc/prometheus:ro" in COMPOSE["prometheus"]["volumes"]
    assert set(COMPOSE["grafana"]["volumes"]) == {
        "../infra/grafana/provisioning:/etc/grafana/provisioning:ro",
        "../infra/grafana/dashboards:/var/lib/grafana/dashboards:ro",
    }
    providers = yaml.safe_load((ROOT / "infra/grafana/provisioning/dashboards/gridwhistle.yml").read_text())["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    datasources = yaml.safe_load((ROOT / "infra/grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {panel["datasource"]["uid"] for panel in DASHBOARD["panels"]}
    assert uids == {ds["uid"] for ds in datasources["datasources"]}


def test_dashboard_shows_the_flow_the_slos_and_the_runtime_health():
    queries = " ".join(t["expr"] for panel in DASHBOARD["panels"] for t in panel["targets"])
    for metric in [
        "gridwhistle_classification_incidents_classified_total",
        "gridwhistle_intake_report_to_dispatch_seconds_bucket",
        "gridwhistle_sla_timer_deadlines_pending",
        "gridwhistle_sla_timer_deadlines_breached_total",
        "gridwhistle_sla_timer_breach_lateness_seconds_bucket",
        "gridwhistle_sla_timer_warning_lateness_seconds_bucket",
        "_consumer_lag_records",
        "_outbox_backlog_events",
        "_dead_letters_total",
        "_event_loop_lag_seconds_bucket",
    ]:
        assert metric in queries, f"no panel queries {metric}"


def test_dashboard_queries_are_valid_promql(tmp_path):
    # promtool parses PromQL when checking rules, so each panel query becomes a recording rule.
    rules = [
        {"record": f"dashboard:query_{panel['id']}_{target['refId']}", "expr": target["expr"]}
        for panel in DASHBOARD["panels"]
        for target in panel["targets"]
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run([ops_tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
