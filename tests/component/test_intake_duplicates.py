"""Duplicate linking: a probable repeat is still its own incident, and also says which one it repeats.

Linked when the report arrives (same hint, or near-identical text without one) and again once
classification has decided the category (IncidentClassified / IncidentReclassified, in any order).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts.envelope import Envelope, correlation_for
from contracts.events import DuplicateLinked, IncidentClassified, IncidentClosed, IncidentReclassified
from contracts.reference import demo_city
from contracts.vocabulary import Category, ClosureOutcome, Urgency
from services.intake.domain import haversine_m
from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from services.runtime.clock import FakeClock
from tests.support import envelope_for, outbox_envelopes, publish, running

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CITY = demo_city()


def make_app(tmp_path, clock: FakeClock, **settings):
    return create_app(IntakeSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/intake.db", **settings), clock=clock)


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


# --- once the category is known ---------------------------------------------------------------


def classification(incident_id: str, category: Category, *, grid_id: str = "G0001", at: datetime | None = None) -> Envelope:
    return envelope_for(
        IncidentClassified(
            incident_id=incident_id, grid_id=grid_id, category=category, urgency=Urgency.GENERAL, priority=3,
            confidence=0.9, classifier_version="test",
        ),
        incident_id,
        at=at or START,
    )


def reclassification(incident_id: str, category: Category, previous: Category, *, at: datetime) -> Envelope:
    return envelope_for(
        IncidentReclassified(
            incident_id=incident_id, grid_id="G0001", category=category, urgency=Urgency.GENERAL, previous_category=previous,
            previous_urgency=Urgency.GENERAL, actor_id="desk-S0101-1", reason="看错了",
        ),
        incident_id,
        at=at,
    )


def pairs(found: list[DuplicateLinked]) -> list[tuple[str, str]]:
    return [(link.incident_id, link.original_incident_id) for link in found]


async def unhinted(client, description: str, **overrides) -> str:
    return await post(client, category_hint=None, description=description, **overrides)


async def test_reports_without_hints_are_linked_once_both_are_classified_the_same(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        original = await unhinted(client, "小区门口有人吵架，快打起来了")
        clock.advance(timedelta(minutes=12))
        repeat = await unhinted(client, "门口两个男的动手了")
        assert await links(app) == []  # different words, no hints: nothing to go on yet

        await publish(app, classification(original, Category.VIOLENCE))
        assert await links(app) == []  # the later report is not classified yet
        clock.advance(timedelta(seconds=5))
        decided = classification(repeat, Category.VIOLENCE, at=clock.now())
        await publish(app, decided)

        envelopes = [e for e in await outbox_envelopes(app) if e.type == "DuplicateLinked"]
        (link,) = envelopes
        assert (link.data.incident_id, link.data.original_incident_id) == (repeat, original)
        assert link.data.reason == "same grid G0001, same category violence (classified), 12 min earlier"
        assert link.subject == repeat and link.correlation_id == correlation_for(repeat)
        assert link.causation_id == decided.id and link.source == "intake" and link.occurred_at == clock.now()

        view = (await client.get(f"/api/v1/incidents/{repeat}")).json()
        assert view["duplicate_of"] == original and view["duplicate_reason"] == link.data.reason
        assert [t["type"] for t in view["timeline"]] == ["IncidentReported", "IncidentClassified", "DuplicateLinked"]
        assert view["timeline"][-1]["summary"] == f"probable duplicate of {original} ({link.data.reason})"
        assert (await client.get(f"/api/v1/incidents/{original}")).json()["duplicate_of"] is None
        metrics = (await client.get("/metrics")).text
        assert 'gridwhistle_intake_duplicates_linked_total{stage="classification"} 1.0' in metrics


async def test_the_later_report_is_linked_to_the_earlier_whichever_is_classified_first(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        original = await unhinted(client, "小区门口有人吵架")
        clock.advance(timedelta(minutes=3))
        repeat = await unhinted(client, "门口两个男的动手了")
        await publish(app, classification(repeat, Category.VIOLENCE))
        assert await links(app) == []
        await publish(app, classification(original, Category.VIOLENCE))
        assert pairs(await links(app)) == [(repeat, original)]


async def test_redelivered_and_later_decisions_never_link_a_pair_again_or_backwards(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        original = await unhinted(client, "小区门口有人吵架")
        clock.advance(timedelta(minutes=3))
        repeat = await unhinted(client, "门口两个男的动手了")
        first = classification(original, Category.VIOLENCE)
        await publish(app, first)
        await publish(app, classification(repeat, Category.VIOLENCE))
        await publish(app, first)  # a redelivery
        await publish(app, classification(repeat, Category.VIOLENCE, at=START + timedelta(minutes=4)))
        later = START + timedelta(minutes=5)
        await publish(app, reclassification(original, Category.VIOLENCE, Category.VIOLENCE, at=later))
        await publish(app, reclassification(repeat, Category.VIOLENCE, Category.VIOLENCE, at=later))
        assert pairs(await links(app)) == [(repeat, original)]
        view = (await client.get(f"/api/v1/incidents/{repeat}")).json()
        assert [t["type"] for t in view["timeline"]].count("DuplicateLinked") == 1


async def test_different_categories_are_not_linked_until_a_reclassification_makes_them_one(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        original = await unhinted(client, "楼上一直在吵")
        clock.advance(timedelta(minutes=3))
        repeat = await unhinted(client, "楼上邻居和我吵起来了")
        await publish(app, classification(original, Category.NOISE))
        await publish(app, classification(repeat, Category.NEIGHBOUR_DISPUTE))
        assert await links(app) == []
        corrected = reclassification(original, Category.NEIGHBOUR_DISPUTE, Category.NOISE, at=START + timedelta(minutes=9))
        await publish(app, corrected)
        (link,) = [e for e in await outbox_envelopes(app) if e.type == "DuplicateLinked"]
        assert (link.data.incident_id, link.data.original_incident_id) == (repeat, original)
        assert link.causation_id == corrected.id and "neighbour_dispute" in link.data.reason


async def test_a_stale_decision_does_not_link_by_a_category_that_was_overruled(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        original = await unhinted(client, "楼上一直在吵")
        clock.advance(timedelta(minutes=3))
        repeat = await unhinted(client, "楼上邻居和我吵起来了")
        await publish(app, classification(original, Category.NOISE))
        await publish(app, reclassification(repeat, Category.NEIGHBOUR_DISPUTE, Category.NOISE, at=START + timedelta(minutes=8)))
        # The original classification arrives last but is older: the reclassification stands.
        await publish(app, classification(repeat, Category.NOISE, at=START + timedelta(minutes=4)))
        assert await links(app) == []


async def test_no_classification_link_to_a_closed_incident_or_for_a_closed_one(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        closed_original = await unhinted(client, "小区门口有人吵架")
        await publish(app, envelope_for(IncidentClosed(incident_id=closed_original, outcome=ClosureOutcome.RESOLVED, closed_at=START), closed_original))
        clock.advance(timedelta(minutes=2))
        repeat = await unhinted(client, "门口两个男的动手了")
        await publish(app, classification(closed_original, Category.VIOLENCE))
        await publish(app, classification(repeat, Category.VIOLENCE))
        assert await links(app) == []

        clock.advance(timedelta(minutes=2))
        closed_repeat = await unhinted(client, "门口又打起来了")
        await publish(app, envelope_for(IncidentClosed(incident_id=closed_repeat, outcome=ClosureOutcome.RESOLVED, closed_at=clock.now()), closed_repeat))
        await publish(app, classification(closed_repeat, Category.VIOLENCE))
        assert await links(app) == []


async def test_an_incident_linked_at_report_time_is_not_linked_again_on_classification(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        first = await post(client)  # hint violence
        clock.advance(timedelta(minutes=2))
        second = await unhinted(client, "有人打架")  # not linked: no hint, different text
        clock.advance(timedelta(minutes=2))
        third = await post(client, description="又打起来了")  # linked by hint to the first
        assert pairs(await links(app)) == [(third, first)]
        for incident_id in (first, second, third):
            await publish(app, classification(incident_id, Category.VIOLENCE))
        assert pairs(await links(app)) == [(third, first), (second, first)]
        metrics = (await client.get("/metrics")).text
        assert 'gridwhistle_intake_duplicates_linked_total{stage="report"} 1.0' in metrics
        assert 'gridwhistle_intake_duplicates_linked_total{stage="classification"} 1.0' in metrics


async def test_at_report_time_an_earlier_incidents_classified_category_counts(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        original = await unhinted(client, "楼道里有人大声放音乐")
        await publish(app, classification(original, Category.NOISE))
        clock.advance(timedelta(minutes=6))
        repeat = await post(client, category_hint="noise", description="半夜装修电钻声")
        (link,) = await links(app)
        assert (link.incident_id, link.original_incident_id) == (repeat, original)
        assert link.reason == "same grid G0001, same category noise, 6 min earlier"


# A 500 m radius and a 10 minute window instead of the defaults (200 m, 30 min).
POLICY = {"duplicate_radius_m": 500, "duplicate_window_minutes": 10}
ORIGIN = {"latitude": 28.1, "longitude": 112.9}
INSIDE = {"latitude": 28.1044, "longitude": 112.9}  # about 489 m north
OUTSIDE = {"latitude": 28.1046, "longitude": 112.9}  # about 511 m north
JUST_INSIDE_WINDOW = timedelta(minutes=10)
JUST_OUTSIDE_WINDOW = timedelta(minutes=10, seconds=1)

EDGES = {
    "inside the radius, at the end of the window": (INSIDE, JUST_INSIDE_WINDOW, True),
    "inside the radius, a second past the window": (INSIDE, JUST_OUTSIDE_WINDOW, False),
    "just outside the radius, inside the window": (OUTSIDE, timedelta(minutes=1), False),
    # Farther than the default radius (200 m), so the setting is what links it.
    "inside the radius but 250 m away, inside the window": ({"latitude": 28.10225, "longitude": 112.9}, timedelta(minutes=1), True),
}


def test_the_edge_points_lie_where_the_cases_say():
    assert haversine_m(28.1, 112.9, INSIDE["latitude"], INSIDE["longitude"]) < 500
    assert haversine_m(28.1, 112.9, OUTSIDE["latitude"], OUTSIDE["longitude"]) > 500
    assert 200 < haversine_m(28.1, 112.9, 28.10225, 112.9) < 500


@pytest.mark.parametrize("stage", ["report", "classification"])
@pytest.mark.parametrize("case", EDGES.keys())
async def test_configured_radius_and_window_decide_at_both_stages(tmp_path, stage, case):
    where, later, linked = EDGES[case]
    clock = FakeClock(START)
    app = make_app(tmp_path, clock, **POLICY)
    hint = "violence" if stage == "report" else None
    async with running(app) as client:
        # Another grid each time, so only the distance can place them together.
        original = await post(client, grid_id="G0001", category_hint=hint, description="小区门口有人吵架", location=ORIGIN)
        clock.advance(later)
        repeat = await post(client, grid_id="G0002", category_hint=hint, description="门口两个男的动手了", location=where)
        if stage == "classification":
            assert await links(app) == []
            await publish(app, classification(original, Category.VIOLENCE))
            await publish(app, classification(repeat, Category.VIOLENCE, grid_id="G0002"))
        found = pairs(await links(app))
        assert found == ([(repeat, original)] if linked else []), found
        view = (await client.get(f"/api/v1/incidents/{repeat}")).json()
        assert view["duplicate_of"] == (original if linked else None)


@pytest.mark.parametrize("stage", ["report", "classification"])
async def test_configured_window_links_the_same_grid_whatever_the_distance(tmp_path, stage):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock, **POLICY)
    hint = "violence" if stage == "report" else None
    async with running(app) as client:
        original = await post(client, category_hint=hint, description="小区门口有人吵架", location=ORIGIN)
        clock.advance(timedelta(minutes=9))
        far = {"latitude": 28.2, "longitude": 112.9}  # 11 km away, same grid G0001
        repeat = await post(client, category_hint=hint, description="门口两个男的动手了", location=far)
        if stage == "classification":
            await publish(app, classification(original, Category.VIOLENCE))
            await publish(app, classification(repeat, Category.VIOLENCE))
        (link,) = await links(app)
        assert (link.incident_id, link.original_incident_id) == (repeat, original)
        assert link.reason.startswith("same grid G0001") and "9 min earlier" in link.reason
