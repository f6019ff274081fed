"""The Prometheus configuration is valid and every alert is unit-tested with promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from infra.devstack import SERVICES
from tests.support import ops_tool

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "infra" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool in infra/prometheus and return the finished process."""
    return subprocess.run(
        [ops_tool("promtool"), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120
    )


def test_alert_rules_pass_promtool_check():
    result = promtool("check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_stays_quiet_in_promtool_unit_tests():
    result = promtool("test", "rules", "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_tests_cover_every_alert_both_ways():
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    firing, quiet = set(), set()
    for case in yaml.safe_load((PROMETHEUS_DIR / "rules_test.yml").read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown quiet on a healthy series"


def test_scrape_config_is_valid_and_names_every_service():
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert targets == {name: f"{name}:{port}" for name, port in SERVICES}
