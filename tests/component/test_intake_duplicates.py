"""Duplicate linking: a probable repeat is still its own incident, and also says which one it repeats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contracts.events import DuplicateLinked, IncidentClosed
from contracts.reference import demo_city
from contracts.vocabulary import ClosureOutcome
from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from services.runtime.clock import FakeClock
from tests.support import envelope_for, outbox_envelopes, publish, running

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CITY = demo_city()


def make_app(tmp_path, clock: FakeClock):
    return create_app(IntakeSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/intake.db"), clock=clock)


def worker_of(grid_id: str) -> str:
    """The grid worker of a demo grid: the only one who may report there."""
    return CITY.grid(grid_id).grid_worker_ids[0]


def report_body(**overrides):
    body = {
        "grid_id": "G0001",
        "reporter_id": "W0001",
        "description": "3号楼楼下有人打架",
        "category_hint": "violence",
        "location": {"address": "幸福路8号"},
    }
    if "grid_id" in overrides and "reporter_id" not in overrides and isinstance(overrides["grid_id"], str):
        overrides["reporter_id"] = worker_of(overrides["grid_id"]) if CITY.grid(overrides["grid_id"]) else "W0001"
    return {**body, **overrides}


async def post(client, **overrides) -> str:
    response = await client.post("/api/v1/incidents", json=report_body(**overrides))
    assert response.status_code == 202, response.text
    return response.json()["incident_id"]


async def links(app) -> list[DuplicateLinked]:
    return [e.data for e in await outbox_envelopes(app) if isinstance(e.data, DuplicateLinked)]


async def test_same_grid_same_category_is_stored_and_linked_in_the_same_transaction(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        original = await post(client)
        clock.advance(timedelta(minutes=10))
        # The grid's only worker reports it again (others would come in through Open311).
        repeat = await post(client, description="楼下在打架")

        envelopes = await outbox_envelopes(app)
        assert [e.type for e in envelopes] == ["IncidentReported", "IncidentReported", "DuplicateLinked"]
        link = envelopes[2]
        assert (link.data.incident_id, link.data.original_incident_id) == (repeat, original)
        assert "same grid" in link.data.reason
        assert link.causation_id == envelopes[1].id and link.correlation_id == envelopes[1].correlation_id

        view = (await client.get(f"/api/v1/incidents/{repeat}")).json()
        assert view["duplicate_of"] == original and view["status"] == "reported"
        assert [t["type"] for t in view["timeline"]] == ["IncidentReported", "DuplicateLinked"]
        assert (await client.get(f"/api/v1/incidents/{original}")).json()["duplicate_of"] is None


async def test_nearby_report_in_another_grid_is_linked_within_the_radius(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        original = await post(client, location={"latitude": 28.1000, "longitude": 112.9000})
        clock.advance(timedelta(minutes=3))
        near = await post(client, grid_id="G0002", location={"latitude": 28.1010, "longitude": 112.9000})
        far = await post(client, grid_id="G0003", location={"latitude": 28.1100, "longitude": 112.9000})
        linked = {(link.incident_id, link.original_incident_id) for link in await links(app)}
        assert linked == {(near, original)}
        assert far not in {link.incident_id for link in await links(app)}


async def test_window_expiry_and_different_category_are_not_linked(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        await post(client)
        clock.advance(timedelta(minutes=5))
        await post(client, category_hint="noise", description="3号楼楼下有人打架")
        clock.advance(timedelta(minutes=31))
        late = await post(client)
        assert await links(app) == []
        assert (await client.get(f"/api/v1/incidents/{late}")).json()["duplicate_of"] is None


async def test_reports_without_hints_link_only_on_near_identical_text(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        original = await post(client, category_hint=None, description="3号楼东侧井盖丢失，有人差点掉下去")
        clock.advance(timedelta(minutes=2))
        similar = await post(client, category_hint=None, description="3号楼东侧井盖丢失,有人差点掉下去!")
        await post(client, category_hint=None, description="小区门口垃圾很多没人清理")
        assert [(link.incident_id, link.original_incident_id) for link in await links(app)] == [(similar, original)]


async def test_a_closed_incident_is_not_an_original(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        original = await post(client)
        await publish(
            app,
            envelope_for(
                IncidentClosed(incident_id=original, outcome=ClosureOutcome.RESOLVED, closed_at=START),
                original,
                at=START,
            ),
        )
        clock.advance(timedelta(minutes=1))
        await post(client)
        assert await links(app) == []
