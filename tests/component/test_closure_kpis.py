"""KPIs computed from events: a generated history through the in-memory broker, checked against its own record.

The expected figures come from the generator's own record of what happened (`expected_rows` in
test_closure_kpi_history.py), never from `services.closure.kpi`.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from contracts.vocabulary import ClosureOutcome
from services.closure.app import create_app
from services.closure.settings import ClosureSettings
from services.runtime.clock import FakeClock
from tests.component.test_closure_kpi_history import (
    AS_OF,
    DIMENSIONS,
    History,
    assert_same_figures,
    expected_rows,
    generate_history,
)
from tests.support import outbox_envelopes, publish, running, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Small enough to feed through both closure consumers on SQLite in seconds; the full-size history
# runs through the same merge and compute functions in tests/unit/test_closure_kpi.py.
HISTORY_SIZE = 50


@pytest.fixture(scope="module")
def history() -> History:
    return generate_history(incidents=HISTORY_SIZE)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fed(tmp_path_factory, history):
    """A closure service that consumed the whole history, with an HTTP client."""
    clock = FakeClock(AS_OF)
    settings = ClosureSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('kpi')}/closure.db",
        log_json=False,
        log_level="WARNING",
        kpi_refresh_seconds=1.0,
        kpi_gauge_window_days=60,
    )
    app = create_app(settings, clock=clock)
    async with running(app) as client:
        for envelope in history.envelopes:
            await publish(app, envelope)
        # Closure's own IncidentResolved events come round through its outbox and the broker.
        await wait_for(lambda: _outbox_drained(app), timeout=30)
        yield client


async def _outbox_drained(app) -> bool:
    runtime = app.state.runtime
    outbox = runtime.tables[0]
    async with runtime.engine.connect() as conn:
        pending = (await conn.execute(outbox.select().where(outbox.c.published_at.is_(None)))).all()
    return not pending and bool(await outbox_envelopes(app))


@pytest.mark.parametrize("dimension", DIMENSIONS)
async def test_every_kpi_per_dimension_matches_the_history(fed, history, dimension):
    response = await fed.get("/api/v1/kpis", params={"dimension": dimension})
    assert response.status_code == 200, response.text
    assert_same_figures(response.json()["rows"], expected_rows(history, dimension))


async def test_a_local_date_range_counts_only_what_was_whistled_or_dispatched_inside_it(fed, history):
    response = await fed.get(
        "/api/v1/kpis", params={"dimension": "district", "from": "2026-03-03T00:00:00", "to": "2026-03-05T00:00:00"}
    )
    assert response.status_code == 200, response.text
    start = datetime(2026, 3, 2, 16, tzinfo=UTC)  # local midnight of 3 March in UTC
    expected = expected_rows(history, "district", start, start + timedelta(days=2))
    assert_same_figures(response.json()["rows"], expected)
    overall = expected_rows(history, "all")["all"]
    assert 0 < sum(row["incidents"] for row in expected.values()) < overall["incidents"]


async def test_the_history_has_honest_headline_figures(fed, history):
    """Sanity of the generated figures themselves: every rate strictly between 0 and 1."""
    row = (await fed.get("/api/v1/kpis")).json()["rows"][0]
    for name in ("on_time_report", "response", "bounce", "resolution", "handoff_resolution", "satisfaction", "reopen"):
        assert 0 < row[f"{name}_rate"]["rate"] < 1, name
    assert row["report_breaches"] > 0
    closed_unresolved = sum(1 for i in history.incidents if i.outcome is ClosureOutcome.CLOSED_UNRESOLVED)
    assert row["resolution_rate"]["denominator"] - row["resolution_rate"]["numerator"] >= closed_unresolved


async def test_the_csv_export_has_a_bom_and_round_trips_to_the_json_figures(fed):
    json_rows = (await fed.get("/api/v1/kpis", params={"dimension": "department"})).json()["rows"]
    response = await fed.get("/api/v1/kpis.csv", params={"dimension": "department"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert [r["group"] for r in rows] == [r["group"] for r in json_rows]
    for csv_row, json_row in zip(rows, json_rows, strict=True):
        assert csv_row["dimension"] == "department"
        for name, value in json_row.items():
            if isinstance(value, dict):
                for part, inner in value.items():
                    cell = csv_row[f"{name}_{part}"]
                    assert (None if cell == "" else float(cell)) == pytest.approx(inner), (name, part)
            elif name != "group":
                assert int(csv_row[name]) == value, name


async def test_unknown_dimensions_are_refused(fed):
    assert (await fed.get("/api/v1/kpis", params={"dimension": "incident"})).status_code == 422
    assert (await fed.get("/api/v1/kpis.csv", params={"from": "yesterday"})).status_code == 422


async def test_headline_gauges_on_metrics_match_the_figures_with_bounded_labels(fed, history):
    overall = expected_rows(history, "all")["all"]
    police = expected_rows(history, "department")["police"]

    def gauge(text: str, name: str, dimension: str, group: str) -> float | None:
        match = re.search(rf'^{name}{{dimension="{dimension}",group="{group}"}} (\S+)$', text, re.MULTILINE)
        return float(match.group(1)) if match else None

    wanted = {
        ("gridwhistle_closure_kpi_on_time_report_ratio", "all", "all"): overall["on_time_report_rate"]["rate"],
        ("gridwhistle_closure_kpi_resolution_ratio", "all", "all"): overall["resolution_rate"]["rate"],
        ("gridwhistle_closure_kpi_report_breaches", "all", "all"): overall["report_breaches"],
        ("gridwhistle_closure_kpi_satisfaction_ratio", "department", "police"): police["satisfaction_rate"]["rate"],
    }

    async def showing_the_figures() -> str | None:
        # The gauges are recomputed every second; a refresh during the feed saw only part of it.
        text = (await fed.get("/metrics")).text
        shown = {key: gauge(text, *key) for key in wanted}
        return text if all(shown[k] == pytest.approx(v) for k, v in wanted.items()) else None

    text = await wait_for(showing_the_figures, timeout=10)
    for district in expected_rows(history, "district"):
        assert gauge(text, "gridwhistle_closure_kpi_response_ratio", "district", district) is not None
    kpi_lines = [line for line in text.splitlines() if line.startswith("gridwhistle_closure_kpi_")]
    assert not any(i.incident_id in text for i in history.incidents)
    assert not any('dimension="unit"' in line or 'dimension="grid"' in line for line in kpi_lines)


async def test_the_time_to_report_distribution_counts_every_report_once(fed, history):
    body = (await fed.get("/api/v1/kpis/time-to-report")).json()
    seconds = [(h.acked_at - h.dispatched_at).total_seconds() for i in history.incidents for h in i.handoffs if h.acked_at]
    assert sum(b["count"] for b in body["buckets"]) == len(seconds)
    assert body["buckets"][2] == {
        "from_seconds": 300, "to_seconds": 900, "count": sum(1 for s in seconds if 300 < s <= 900),
    }
    bounded = (await fed.get("/api/v1/kpis/time-to-report", params={"from": "2030-01-01"})).json()
    assert sum(b["count"] for b in bounded["buckets"]) == 0


async def test_breaches_of_every_kind_are_gauged_per_kind(fed, history):
    overall = expected_rows(history, "all")["all"]["breaches"]
    assert all(overall[kind] > 0 for kind in ("report", "on_scene", "resolution", "verification"))

    async def shown() -> str | None:
        text = (await fed.get("/metrics")).text
        line = f'gridwhistle_closure_kpi_breaches{{dimension="all",group="all",kind="verification"}} {float(overall["verification"])}'
        return text if line in text else None

    await wait_for(shown, timeout=10)
