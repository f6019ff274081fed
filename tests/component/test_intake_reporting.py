"""Intake's report API: durable acceptance, one IncidentReported per incident, strict validation, idempotency."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from faststream.kafka.annotations import KafkaMessage
from sqlalchemy import func, select

from contracts.envelope import correlation_for
from contracts.events import CATALOGUE, IncidentReported
from contracts.reference import demo_city
from contracts.topics import INTAKE_INCIDENTS
from services.intake.app import create_app
from services.intake.repository import incidents
from services.intake.settings import IntakeSettings
from services.runtime.clock import FakeClock
from tests.support import as_user, outbox_envelopes, running

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CITY = demo_city()


def make_app(tmp_path, clock: FakeClock | None = None, **overrides):
    settings = IntakeSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/intake.db", **overrides)
    return create_app(settings, clock=clock or FakeClock(START))


def worker_of(grid_id: str) -> str:
    """The grid worker of a demo grid: the only one who may report there."""
    return CITY.grid(grid_id).grid_worker_ids[0]


def report_body(**overrides):
    body = {
        "grid_id": "G0001",
        "reporter_id": "W0001",
        "description": "3号楼楼下有人打架，有人流血",
        "location": {"latitude": 28.12, "longitude": 112.92, "address": "幸福路8号"},
    }
    if "grid_id" in overrides and "reporter_id" not in overrides and isinstance(overrides["grid_id"], str):
        overrides["reporter_id"] = worker_of(overrides["grid_id"]) if CITY.grid(overrides["grid_id"]) else "W0001"
    return {**body, **overrides}


async def stored_counts(app) -> tuple[int, int]:
    runtime = app.state.runtime
    async with runtime.engine.connect() as conn:
        reports = (await conn.execute(select(func.count()).select_from(incidents))).scalar_one()
        events = (await conn.execute(select(func.count()).select_from(runtime.tables[0]))).scalar_one()
    return reports, events


async def outbox_rows(app):
    runtime = app.state.runtime
    outbox = runtime.tables[0]
    async with runtime.engine.connect() as conn:
        return (await conn.execute(select(outbox).order_by(outbox.c.id))).all()


async def test_report_is_accepted_after_commit_with_one_incident_reported_event(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        response = await client.post("/api/v1/incidents", json=report_body(category_hint="violence"))
        assert response.status_code == 202, response.text
        body = response.json()
        incident_id = body["incident_id"]
        assert uuid.UUID(incident_id).version == 4
        assert body["status"] == "reported"
        assert body["links"]["self"] == f"/api/v1/incidents/{incident_id}"

        rows = await outbox_rows(app)
        assert len(rows) == 1
        row = rows[0]
        assert row.key == incident_id and row.topic == INTAKE_INCIDENTS.name
        (envelope,) = await outbox_envelopes(app)
        assert isinstance(envelope.data, IncidentReported)
        assert envelope.subject == incident_id and envelope.key() == incident_id.encode()
        assert envelope.correlation_id == correlation_for(incident_id)
        assert row.headers["gw-correlation-id"] == str(correlation_for(incident_id))
        assert envelope.data.reported_at == START and envelope.occurred_at == START
        assert envelope.data.category_hint.value == "violence"

        view = (await client.get(f"/api/v1/incidents/{incident_id}")).json()
        assert view["status"] == "reported"
        assert view["grid_id"] == "G0001" and view["location"]["address"] == "幸福路8号"
        assert view["handoffs"] == [] and view["all_reported"] is False
        assert [t["type"] for t in view["timeline"]] == ["IncidentReported"]


async def test_two_reports_make_two_incidents_each_with_its_own_event(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        first = await client.post("/api/v1/incidents", json=report_body(grid_id="G0001"))
        second = await client.post("/api/v1/incidents", json=report_body(grid_id="G0500", description="小区垃圾堆放"))
        ids = {first.json()["incident_id"], second.json()["incident_id"]}
        reported = [e for e in await outbox_envelopes(app) if e.type == "IncidentReported"]
        assert {e.subject for e in reported} == ids and len(reported) == 2


FUTURE = (START + timedelta(hours=1)).isoformat()

INVALID_BODIES = {
    "missing grid_id": ({k: v for k, v in report_body().items() if k != "grid_id"}, ["body", "grid_id"]),
    "missing location": ({k: v for k, v in report_body().items() if k != "location"}, ["body", "location"]),
    "grid_id not a string": (report_body(grid_id=17), ["body", "grid_id"]),
    "latitude not a number": (report_body(location={"latitude": "north", "longitude": 1}), ["body", "location", "latitude"]),
    "latitude without longitude": (report_body(location={"latitude": 28.1}), ["body", "location"]),
    "location without coordinates or address": (report_body(location={}), ["body", "location"]),
    "unknown category_hint": (report_body(category_hint="alien_landing"), ["body", "category_hint"]),
    "too many media": (report_body(media=[f"https://m/{i}" for i in range(11)]), ["body", "media"]),
    "description too long": (report_body(description="x" * 2001), ["body", "description"]),
    "naive occurred_at": (report_body(occurred_at="2026-03-01T08:00:00"), ["body", "occurred_at"]),
    "future occurred_at": (report_body(occurred_at=FUTURE), ["body", "occurred_at"]),
    "empty description without hint": (report_body(description="  "), ["body", "description"]),
    "unknown grid": (report_body(grid_id="G9999"), ["body", "grid_id"]),
    "unknown field": (report_body(priority=1), ["body", "priority"]),
    "body is a list": ([report_body()], ["body"]),
}


@pytest.mark.parametrize("case", INVALID_BODIES.keys())
async def test_invalid_report_is_rejected_field_by_field_and_creates_nothing(tmp_path, case):
    body, loc = INVALID_BODIES[case]
    app = make_app(tmp_path)
    async with running(app) as client:
        response = await client.post("/api/v1/incidents", json=body, headers={"Idempotency-Key": "k-" + case})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert any(error["loc"] == loc for error in detail), detail
        assert all({"loc", "msg", "type"} <= error.keys() for error in detail)
        assert await stored_counts(app) == (0, 0)
        # The key was not consumed by the rejected request.
        ok = await client.post("/api/v1/incidents", json=report_body(), headers={"Idempotency-Key": "k-" + case})
        assert ok.status_code == 202


async def test_unknown_grid_says_which_grid(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        response = await client.post("/api/v1/incidents", json=report_body(grid_id="G9999"))
        (error,) = response.json()["detail"]
        assert error == {"loc": ["body", "grid_id"], "msg": "unknown grid 'G9999'", "type": "unknown_grid"}


async def test_small_clock_skew_and_hint_only_reports_are_accepted(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        skewed = (START + timedelta(minutes=2)).isoformat()
        response = await client.post("/api/v1/incidents", json=report_body(occurred_at=skewed))
        assert response.status_code == 202, response.text
        hint_only = await client.post(
            "/api/v1/incidents", json=report_body(description="", category_hint="fire", grid_id="G0300")
        )
        assert hint_only.status_code == 202, hint_only.text


async def test_invalid_json_is_a_400_that_says_so(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        response = await client.post(
            "/api/v1/incidents", content=b'{"grid_id": "G0001",', headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400
        (error,) = response.json()["detail"]
        assert error["type"] == "json_invalid" and "not valid JSON" in error["msg"]
        assert await stored_counts(app) == (0, 0)


async def test_oversized_body_is_refused_with_413_and_creates_nothing(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        response = await client.post("/api/v1/incidents", json=report_body(description="火" * 40_000))
        assert response.status_code == 413
        assert "exceeds" in response.json()["detail"][0]["msg"]
        assert await stored_counts(app) == (0, 0)


async def test_overlong_idempotency_key_is_refused(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        response = await client.post("/api/v1/incidents", json=report_body(), headers={"Idempotency-Key": "k" * 129})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
        assert await stored_counts(app) == (0, 0)


async def test_same_key_and_same_body_replays_the_same_incident(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        headers = {"Idempotency-Key": "phone-42-report-7"}
        first = await client.post("/api/v1/incidents", json=report_body(), headers=headers)
        # Same content, different key order and formatting: still the same request.
        reordered = dict(reversed(list(report_body().items())))
        again = await client.post("/api/v1/incidents", json=reordered, headers=headers)
        assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
        assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["incident_id"] == first.json()["incident_id"]
        assert await stored_counts(app) == (1, 1)


async def test_same_key_with_a_different_body_is_a_conflict(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        headers = {"Idempotency-Key": "phone-42-report-8"}
        await client.post("/api/v1/incidents", json=report_body(), headers=headers)
        conflict = await client.post("/api/v1/incidents", json=report_body(description="另一件事"), headers=headers)
        assert conflict.status_code == 409
        assert "different request body" in conflict.json()["detail"]
        assert await stored_counts(app) == (1, 1)


async def test_idempotency_survives_a_restart_on_the_same_database(tmp_path):
    headers = {"Idempotency-Key": "survives-restart"}
    first_app = make_app(tmp_path)
    async with running(first_app) as client:
        original = (await client.post("/api/v1/incidents", json=report_body(), headers=headers)).json()
    second_app = make_app(tmp_path)
    async with running(second_app) as client:
        replay = await client.post("/api/v1/incidents", json=report_body(), headers=headers)
        assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json()["incident_id"] == original["incident_id"]
        conflict = await client.post("/api/v1/incidents", json=report_body(description="变了"), headers=headers)
        assert conflict.status_code == 409
        assert await stored_counts(second_app) == (1, 1)


async def test_concurrent_duplicates_with_one_key_create_one_incident(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        headers = {"Idempotency-Key": "double-tap"}
        responses = await asyncio.gather(
            *(client.post("/api/v1/incidents", json=report_body(), headers=headers) for _ in range(8))
        )
        assert {r.status_code for r in responses} == {202}
        assert len({r.json()["incident_id"] for r in responses}) == 1
        assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 7
        assert await stored_counts(app) == (1, 1)


async def test_unknown_incident_is_a_404_with_a_message(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        response = await client.get("/api/v1/incidents/no-such-incident")
        assert response.status_code == 404
        assert response.json()["detail"] == "incident 'no-such-incident' not found"


async def test_reporter_lists_own_reports_newest_first_with_paging(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        ids = []
        for matter in ("有人打架", "垃圾堆放", "噪音扰民"):
            ids.append((await client.post("/api/v1/incidents", json=report_body(description=matter))).json()["incident_id"])
            clock.advance(timedelta(minutes=1))
        await client.post("/api/v1/incidents", json=report_body(grid_id="G0600"))  # W0600's
        page = (await client.get("/api/v1/incidents", params={"reporter_id": "W0001", "limit": 2})).json()
        assert [i["incident_id"] for i in page["items"]] == [ids[2], ids[1]]
        rest = (await client.get("/api/v1/incidents", params={"reporter_id": "W0001", "limit": 2, "offset": 2})).json()
        assert [i["incident_id"] for i in rest["items"]] == [ids[0]]
        # Without reporter_id: the caller's own reports.
        mine = (await client.get("/api/v1/incidents", headers=as_user(app, "W0600"))).json()["items"]
        assert [i["grid_id"] for i in mine] == ["G0600"]


async def test_reports_are_counted_by_category_hint(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        await client.post("/api/v1/incidents", json=report_body(category_hint="fire"))
        await client.post("/api/v1/incidents", json=report_body(grid_id="G0300"))
        await client.post("/api/v1/incidents", json=report_body(grid_id="G9999"))  # rejected: not counted
        metrics = (await client.get("/metrics")).text
        assert 'gridwhistle_intake_incidents_reported_total{category_hint="fire",channel="api"} 1.0' in metrics
        assert 'gridwhistle_intake_incidents_reported_total{category_hint="none",channel="api"} 1.0' in metrics


async def test_events_reach_the_broker_through_the_outbox_relay(tmp_path):
    app = make_app(tmp_path)
    seen: list[tuple[bytes, bytes]] = []
    broker = app.state.runtime.broker

    @broker.subscriber(INTAKE_INCIDENTS.name, group_id="probe")
    async def probe(msg: KafkaMessage) -> None:
        seen.append((msg.raw_message.key, msg.body))

    async with running(app) as client:
        incident_id = (await client.post("/api/v1/incidents", json=report_body())).json()["incident_id"]
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.02)
        assert seen, "the relay did not publish the committed event"
        key, value = seen[0]
        assert key == incident_id.encode()
        assert CATALOGUE.decode(value).data.incident_id == incident_id


async def test_a_report_without_reporter_id_is_filed_as_the_signed_in_grid_worker(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        body = {k: v for k, v in report_body().items() if k != "reporter_id"}
        response = await client.post("/api/v1/incidents", json=body, headers=as_user(app, "W0001"))
        assert response.status_code == 202, response.text
        (envelope,) = await outbox_envelopes(app)
        assert envelope.data.reporter_id == "W0001"
