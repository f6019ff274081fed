"""Every running service exposes lint-clean Prometheus metrics, and the domain metrics move with an incident."""

from __future__ import annotations

import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import stack  # noqa: F401 - the module-scoped fixture that runs all five services
from tests.e2e.stack import SERVICES, Stack, eventually
from tests.support import ops_tool

pytestmark = pytest.mark.integration

RUNTIME_METRICS = {
    "consumer_lag_records": "gauge",
    "consumer_stuck": "gauge",
    "consumer_last_processed_timestamp_seconds": "gauge",
    "event_loop_lag_seconds": "histogram",
    "handler_duration_seconds": "histogram",
    "events_consumed": "counter",
    "dead_letters": "counter",
    "outbox_backlog_events": "gauge",
    "outbox_oldest_age_seconds": "gauge",
}
DOMAIN_METRICS = {
    "intake": {"report_to_dispatch_seconds": "histogram", "incidents_reported": "counter"},
    "classification": {"incidents_classified": "counter"},
    "routing": {"handoffs_dispatched": "counter", "time_to_report_seconds": "histogram"},
    "sla_timer": {
        "deadlines_pending": "gauge",
        "deadlines_breached": "counter",
        "breach_lateness_seconds": "histogram",
        "warning_lateness_seconds": "histogram",
        "breaches_withdrawn": "counter",
        "held_partitions": "gauge",
    },
    "closure": {"incidents_closed": "counter"},
}


# Series that carry labels once an incident was reported and dispatched, by service.
LABELLED_SERIES = {
    "intake": ["gridwhistle_intake_incidents_reported_total"],
    "classification": ["gridwhistle_classification_incidents_classified_total"],
    "routing": ["gridwhistle_routing_handoffs_dispatched_total"],
    "sla_timer": ["gridwhistle_sla_timer_deadlines_armed_total"],
}
# FastStream's Prometheus middleware: every service consumes.
FASTSTREAM_RECEIVED = ["faststream_received_messages_total", "faststream_received_processed_messages_duration_seconds_count"]
# These have published through their outbox relay by then (which hands rows to aiokafka itself).
PUBLISHERS = ("intake", "classification", "routing", "sla_timer")


async def report_and_wait_for_dispatch(client: httpx.AsyncClient, stack: Stack, idempotency_key: str) -> str:
    """Report an incident through intake and wait until it is dispatched; return its id."""
    created = await client.post(
        f"{stack.url('intake')}/api/v1/incidents",
        headers={"Idempotency-Key": idempotency_key, **stack.as_user("W0001")},
        json={
            "grid_id": "G0001",
            "reporter_id": "W0001",
            "description": "楼下有人打架，有人流血",
            "location": {"latitude": 28.10795, "longitude": 112.932143, "address": "幸福路8号"},
        },
    )
    assert created.status_code == 202
    incident_id = created.json()["incident_id"]
    await eventually(
        lambda: client.get(f"{stack.url('intake')}/api/v1/incidents/{incident_id}", headers=stack.as_user("W0001")),
        lambda r: r.json().get("status") == "dispatched",
        what="the incident dispatched",
    )
    return incident_id


async def scrape(client: httpx.AsyncClient, stack: Stack, service: str) -> str:
    response = await client.get(f"{stack.url(service)}/metrics")
    response.raise_for_status()
    return response.text


def families(text: str) -> dict[str, str]:
    """Metric family name -> type."""
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def samples(text: str, sample_name: str) -> list[float]:
    """Values of every sample called `sample_name` (one per label set)."""
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == sample_name
    ]


def labelled_samples(text: str, sample_name: str) -> list[dict[str, str]]:
    """Label sets of the samples called `sample_name` that carry at least one label."""
    return [
        sample.labels
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == sample_name and sample.labels
    ]


def total(text: str, sample_name: str) -> float:
    """Sum of every sample called `sample_name`."""
    return sum(samples(text, sample_name))


async def test_every_service_exposes_runtime_and_domain_metrics_with_their_types(stack: Stack):  # noqa: F811
    async with httpx.AsyncClient(timeout=10) as client:
        for service in SERVICES:
            exposed = families(await scrape(client, stack, service))
            expected = {**RUNTIME_METRICS, **DOMAIN_METRICS.get(service, {})}
            for noun, kind in expected.items():
                name = f"gridwhistle_{service}_{noun}"
                assert exposed.get(name) == kind, f"{service}: {name} should be a {kind}, found {exposed.get(name)}"


async def test_metrics_pass_promtool_lint_on_every_service_after_an_incident_flowed(stack: Stack):  # noqa: F811
    # Linting a fresh scrape would check only HELP/TYPE lines: the labelled series (domain and
    # FastStream's) appear once messages flowed, so the scrape is taken after a dispatch.
    promtool = ops_tool("promtool")
    async with httpx.AsyncClient(timeout=10) as client:
        await report_and_wait_for_dispatch(client, stack, "observability-lint-1")
        for service in SERVICES:
            expected = [*LABELLED_SERIES.get(service, ()), f"gridwhistle_{service}_events_consumed_total"]
            expected += FASTSTREAM_RECEIVED + ([f"gridwhistle_{service}_outbox_published_total"] if service in PUBLISHERS else [])

            async def scraped(service: str = service) -> str:
                return await scrape(client, stack, service)

            def has_every_series(text: str, expected: list[str] = expected) -> bool:
                return all(labelled_samples(text, name) for name in expected)

            text = await eventually(scraped, has_every_series, what=f"{service}'s labelled series", timeout=20)
            assert {name for name in families(text) if name.startswith("faststream_")} >= {
                "faststream_received_messages",
                "faststream_received_processed_messages",
                "faststream_received_processed_messages_duration_seconds",
            }, service
            lint = subprocess.run(
                [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
            )
            assert lint.returncode == 0, f"{service}: {lint.stdout}{lint.stderr}"


async def test_domain_metrics_move_when_an_incident_is_reported_and_dispatched(stack: Stack):  # noqa: F811
    async with httpx.AsyncClient(timeout=10) as client:
        before = {service: await scrape(client, stack, service) for service in SERVICES}
        await report_and_wait_for_dispatch(client, stack, "observability-metrics-1")

        async def moved(service: str, sample: str) -> bool:
            return total(await scrape(client, stack, service), sample) > total(before[service], sample)

        for service, sample in [
            ("intake", "gridwhistle_intake_incidents_reported_total"),
            ("intake", "gridwhistle_intake_report_to_dispatch_seconds_count"),
            ("classification", "gridwhistle_classification_incidents_classified_total"),
            ("routing", "gridwhistle_routing_handoffs_dispatched_total"),
            ("sla_timer", "gridwhistle_sla_timer_deadlines_armed_total"),
            ("routing", "gridwhistle_routing_events_consumed_total"),
        ]:
            await eventually(lambda: moved(service, sample), bool, what=f"{sample} to grow", timeout=15)

        async def lag_partitions() -> int:
            return len(samples(await scrape(client, stack, "routing"), "gridwhistle_routing_consumer_lag_records"))

        # Routing's consumers have assignments by now, so their lag is sampled per partition.
        await eventually(lag_partitions, lambda n: n > 0, what="routing's consumer lag series", timeout=15)
