"""Intake on PostgreSQL: the unique key stops concurrent duplicates, row locks keep the projection whole."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import func, select, text

from contracts.events import HandoffAcknowledged, HandoffDispatched, IncidentClassified, IncidentClosed
from contracts.vocabulary import Category, ClosureOutcome, HandoffRole, Urgency
from services.intake.app import create_app
from services.intake.repository import incidents
from services.intake.settings import IntakeSettings
from services.runtime.clock import FakeClock
from tests.support import envelope_for, outbox_envelopes, publish, running

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
BODY = {
    "grid_id": "G0001",
    "reporter_id": "W0001",
    "description": "楼下有人打架",
    "location": {"latitude": 28.12, "longitude": 112.92},
}


def make_app(pg_url: str):
    return create_app(IntakeSettings(database_url=pg_url, log_json=False), clock=FakeClock(START))


async def test_concurrent_requests_with_one_key_create_one_incident(pg_url):
    app = make_app(pg_url)
    async with running(app) as client:
        responses = await asyncio.gather(
            *(client.post("/api/v1/incidents", json=BODY, headers={"Idempotency-Key": "tap"}) for _ in range(10))
        )
        assert {r.status_code for r in responses} == {202}
        assert len({r.json()["incident_id"] for r in responses}) == 1
        runtime = app.state.runtime
        async with runtime.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(incidents))).scalar_one() == 1
        assert len(await outbox_envelopes(app)) == 1


async def test_projection_and_open311_filters_work_on_postgres(pg_url):
    app = make_app(pg_url)
    async with running(app) as client:
        incident = (await client.post("/api/v1/incidents", json=BODY)).json()["incident_id"]
        ack = HandoffAcknowledged(
            incident_id=incident, handoff_id="h1", unit_id="U-POL-P0001", actor_id="P0001", acknowledged_at=START
        )
        dispatch = HandoffDispatched(
            incident_id=incident, handoff_id="h1", unit_id="U-POL-P0001", department="police", role=HandoffRole.LEAD,
            category=Category.VIOLENCE, urgency=Urgency.URGENT, grid_id="G0001", dispatched_at=START,
            report_due_at=START,
        )
        await publish(app, envelope_for(ack, incident, at=START))
        await publish(app, envelope_for(dispatch, incident, at=START))
        view = (await client.get(f"/api/v1/incidents/{incident}")).json()
        assert view["handoffs"][0]["state"] == "acknowledged" and view["all_reported"] is True
        await publish(
            app,
            envelope_for(IncidentClosed(incident_id=incident, outcome=ClosureOutcome.RESOLVED, closed_at=START), incident),
        )
        closed = (await client.get("/open311/v2/requests.json", params={"status": "closed"})).json()
        assert [r["service_request_id"] for r in closed] == [incident]
        assert (await client.get("/open311/v2/requests.json", params={"status": "open"})).json() == []


async def test_classification_links_duplicates_once_on_postgres(pg_url):
    clock = FakeClock(START)
    app = create_app(IntakeSettings(database_url=pg_url, log_json=False, duplicate_window_minutes=10), clock=clock)
    async with running(app) as client:
        original = (await client.post("/api/v1/incidents", json={**BODY, "description": "小区门口有人吵架"})).json()["incident_id"]
        clock.advance(timedelta(minutes=10))
        repeat = (await client.post("/api/v1/incidents", json={**BODY, "description": "门口两个男的动手了"})).json()["incident_id"]
        clock.advance(timedelta(seconds=1))
        late = (await client.post("/api/v1/incidents", json={**BODY, "description": "门口又有人动手"})).json()["incident_id"]
        decisions = [
            envelope_for(
                IncidentClassified(
                    incident_id=i, grid_id="G0001", category=Category.VIOLENCE, urgency=Urgency.URGENT, priority=1,
                    confidence=0.9, classifier_version="test",
                ),
                i,
            )
            for i in (repeat, original, late)
        ]
        for decision in decisions:
            await publish(app, decision)
        await publish(app, decisions[0])  # redelivered
        links = [(e.data.incident_id, e.data.original_incident_id) for e in await outbox_envelopes(app) if e.type == "DuplicateLinked"]
        # The late report is 10 min 1 s after the original (outside the window) but 1 s after the repeat.
        assert links == [(repeat, original), (late, repeat)]


async def test_pooled_connections_killed_by_the_server_are_replaced_and_the_report_lands_never_a_500(pg_url):
    """A pooled connection the server dropped (as on a restart) is found dead when checked out and
    replaced. Without that ping its first statement fails in asyncpg's InternalClientError ("cannot
    switch to state"), which is no recognised disconnect: a 500, and a broken connection kept."""
    app = make_app(pg_url)
    async with running(app) as client:
        first = await client.post("/api/v1/incidents", json=BODY, headers={"Idempotency-Key": "before"})
        assert first.status_code == 202
        runtime = app.state.runtime
        async with runtime.engine.connect() as conn:
            mine = (await conn.execute(text("SELECT current_database()"))).scalar_one()
        # Every other session of this database is killed server-side, as a restart would.
        admin = await asyncpg.connect(pg_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                mine,
            )
        finally:
            await admin.close()
        assert killed >= 1
        statuses = []
        for _ in range(5):
            response = await client.post("/api/v1/incidents", json=BODY, headers={"Idempotency-Key": "after"})
            statuses.append(response.status_code)
            if response.status_code != 503:
                break
            assert response.headers["Retry-After"] == "1"
            assert "database unreachable" in response.json()["detail"][0]["msg"]
        assert statuses[-1] == 202 and set(statuses[:-1]) <= {503}, statuses
        assert runtime.metrics.requests_refused.labels("database_unreachable")._value.get() == len(statuses) - 1
