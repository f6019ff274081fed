"""The grid worker's view, built from classification, routing, deadline and closure events.

Events are fed through FastStream's in-memory broker, on their real topics, in and out of order.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contracts.envelope import Envelope, Event
from contracts.events import (
    DeadlineArmed,
    DeadlineBreached,
    DeadlineBreachWithdrawn,
    FeedbackGiven,
    HandoffAcknowledged,
    HandoffDeclined,
    HandoffDispatched,
    HandoffResolved,
    IncidentClassified,
    IncidentClosed,
    IncidentEscalated,
    IncidentEscalatedToCommandCentre,
    IncidentReclassified,
    IncidentReopened,
    IncidentResolved,
    IncidentVerified,
)
from contracts.vocabulary import (
    Category,
    ClosureOutcome,
    DeadlineKind,
    DeclineReason,
    Disposition,
    HandoffRole,
    Satisfaction,
    Urgency,
)
from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from services.runtime.clock import FakeClock
from tests.support import envelope_for, publish, running

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def make_app(tmp_path):
    return create_app(IntakeSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/intake.db"), clock=FakeClock(START))


async def new_incident(client) -> str:
    body = {
        "grid_id": "G0001",
        "reporter_id": "W0001",
        "description": "楼下有人打架，有人流血",
        "location": {"latitude": 28.12, "longitude": 112.92},
    }
    response = await client.post("/api/v1/incidents", json=body)
    assert response.status_code == 202, response.text
    return response.json()["incident_id"]


def wrap(incident_id: str, event: Event, minutes: float) -> Envelope:
    return envelope_for(event, incident_id, at=at(minutes))


def classified(incident_id: str, minutes: float = 1) -> Envelope:
    return wrap(
        incident_id,
        IncidentClassified(
            incident_id=incident_id, grid_id="G0001", category=Category.VIOLENCE, urgency=Urgency.URGENT,
            priority=1, confidence=0.9, classifier_version="rules-test",
        ),
        minutes,
    )


def dispatched(incident_id: str, handoff_id: str, unit_id: str, role: HandoffRole, minutes: float = 2) -> Envelope:
    return wrap(
        incident_id,
        HandoffDispatched(
            incident_id=incident_id, handoff_id=handoff_id, unit_id=unit_id,
            department="police" if role is not HandoffRole.CO_OPERATING else "health", role=role,
            category=Category.VIOLENCE, urgency=Urgency.URGENT, grid_id="G0001",
            dispatched_at=at(minutes), report_due_at=at(minutes + 15),
        ),
        minutes,
    )


def acknowledged(incident_id: str, handoff_id: str, unit_id: str, minutes: float = 5, late: bool = False) -> Envelope:
    return wrap(
        incident_id,
        HandoffAcknowledged(
            incident_id=incident_id, handoff_id=handoff_id, unit_id=unit_id, actor_id="P0001",
            acknowledged_at=at(minutes), late=late,
        ),
        minutes,
    )


async def view(client, incident_id: str) -> dict:
    response = await client.get(f"/api/v1/incidents/{incident_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_full_lifecycle_is_visible_to_the_grid_worker(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        incident = await new_incident(client)
        await publish(app, classified(incident))
        v = await view(client, incident)
        assert (v["status"], v["category"], v["urgency"], v["priority"]) == ("classified", "violence", "urgent", 1)

        await publish(app, dispatched(incident, "h-lead", "U-POL-P0001", HandoffRole.LEAD))
        await publish(app, dispatched(incident, "h-co", "U-HEALTH-D01", HandoffRole.CO_OPERATING))
        v = await view(client, incident)
        assert v["status"] == "dispatched" and v["all_reported"] is False
        lead = next(h for h in v["handoffs"] if h["handoff_id"] == "h-lead")
        assert lead["state"] == "dispatched" and lead["report_due_at"] == "2026-03-01T09:17:00Z"
        assert v["agency_responsible"] == "公安"

        await publish(app, acknowledged(incident, "h-lead", "U-POL-P0001", 5))
        assert (await view(client, incident))["all_reported"] is False
        await publish(app, acknowledged(incident, "h-co", "U-HEALTH-D01", 20, late=True))
        v = await view(client, incident)
        assert v["all_reported"] is True
        by_id = {h["handoff_id"]: h for h in v["handoffs"]}
        assert by_id["h-lead"]["acknowledged_at"] == "2026-03-01T09:05:00Z" and not by_id["h-lead"]["late"]
        assert by_id["h-co"]["late"] is True

        for handoff_id, unit_id in (("h-lead", "U-POL-P0001"), ("h-co", "U-HEALTH-D01")):
            await publish(
                app,
                wrap(
                    incident,
                    HandoffResolved(
                        incident_id=incident, handoff_id=handoff_id, unit_id=unit_id, role=HandoffRole.LEAD,
                        actor_id="P0001", disposition=Disposition.RESOLVED, resolved_at=at(40),
                    ),
                    40,
                ),
            )
        await publish(app, wrap(incident, IncidentResolved(incident_id=incident, disposition=Disposition.RESOLVED, resolved_at=at(41)), 41))
        assert (await view(client, incident))["status"] == "resolved"
        await publish(app, wrap(incident, IncidentVerified(incident_id=incident, actor_id="W0001", verified_at=at(50)), 50))
        assert (await view(client, incident))["status"] == "verified"
        await publish(
            app,
            wrap(incident, FeedbackGiven(incident_id=incident, actor_id="W0001", satisfaction=Satisfaction.SATISFIED, given_at=at(55)), 55),
        )
        await publish(
            app,
            wrap(incident, IncidentClosed(incident_id=incident, outcome=ClosureOutcome.RESOLVED, satisfaction=Satisfaction.SATISFIED, closed_at=at(56)), 56),
        )
        v = await view(client, incident)
        assert (v["status"], v["outcome"], v["satisfaction"]) == ("closed", "resolved", "satisfied")
        assert v["closed_at"] == "2026-03-01T09:56:00Z"
        assert {h["state"] for h in v["handoffs"]} == {"resolved"}
        types = [t["type"] for t in v["timeline"]]
        assert types[0] == "IncidentReported" and types[-1] == "IncidentClosed"
        assert len(types) == 1 + 1 + 2 + 2 + 2 + 1 + 1 + 1 + 1
        assert all(t["summary"] for t in v["timeline"])


async def test_out_of_order_arrival_across_topics_gives_the_same_view(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        incident = await new_incident(client)
        # The acknowledgement and a deadline fact overtake the classification and the dispatch.
        await publish(app, acknowledged(incident, "h-lead", "U-POL-P0001", 5))
        await publish(
            app,
            wrap(
                incident,
                DeadlineArmed(
                    incident_id=incident, deadline_id="d-1", handoff_id="h-lead", kind=DeadlineKind.REPORT,
                    due_at=at(17), urgency=Urgency.URGENT, unit_id="U-POL-P0001",
                ),
                2,
            ),
        )
        v = await view(client, incident)
        assert v["handoffs"][0]["state"] == "acknowledged"
        assert v["handoffs"][0]["report_due_at"] == "2026-03-01T09:17:00Z"
        await publish(app, classified(incident))
        await publish(app, dispatched(incident, "h-lead", "U-POL-P0001", HandoffRole.LEAD))
        v = await view(client, incident)
        (handoff,) = v["handoffs"]
        assert handoff["state"] == "acknowledged", "a late dispatch must not move the handoff back"
        assert handoff["role"] == "lead" and handoff["department"] == "police"
        assert v["all_reported"] is True and v["category"] == "violence"
        assert [t["at"] for t in v["timeline"]] == sorted(t["at"] for t in v["timeline"])


async def test_closed_is_final_even_when_earlier_closure_facts_arrive_late(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        incident = await new_incident(client)
        await publish(app, wrap(incident, IncidentClosed(incident_id=incident, outcome=ClosureOutcome.CLOSED_UNRESOLVED, closed_at=at(60)), 60))
        await publish(app, wrap(incident, IncidentResolved(incident_id=incident, disposition=Disposition.RESOLVED, resolved_at=at(30)), 30))
        await publish(
            app, wrap(incident, IncidentReopened(incident_id=incident, reason="没修好", reopen_count=1, reopened_at=at(40)), 40)
        )
        await publish(app, classified(incident, 1))
        v = await view(client, incident)
        assert (v["status"], v["outcome"]) == ("closed", "closed_unresolved")


async def test_reopen_after_resolution_and_stale_classification_does_not_win(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        incident = await new_incident(client)
        reclassified = wrap(
            incident,
            IncidentReclassified(
                incident_id=incident, grid_id="G0001", category=Category.NEIGHBOUR_DISPUTE, urgency=Urgency.GENERAL,
                previous_category=Category.VIOLENCE, previous_urgency=Urgency.URGENT, reason="只是口角", actor_id="cmd-1",
            ),
            10,
        )
        await publish(app, reclassified)
        await publish(app, classified(incident, 1))  # older decision delivered after the correction
        v = await view(client, incident)
        assert (v["category"], v["urgency"], v["priority"]) == ("neighbour_dispute", "general", 1)

        await publish(app, wrap(incident, IncidentResolved(incident_id=incident, disposition=Disposition.RESOLVED, resolved_at=at(30)), 30))
        await publish(
            app, wrap(incident, IncidentReopened(incident_id=incident, reason="又吵起来了", reopen_count=1, reopened_at=at(45)), 45)
        )
        assert (await view(client, incident))["status"] == "reopened"

        takeover = IncidentEscalatedToCommandCentre(
            incident_id=incident, grid_id="G0001", reopen_count=1, reason="还是不满意", escalated_at=at(90)
        )
        await publish(app, wrap(incident, takeover, 90))
        v = await view(client, incident)
        assert v["status"] == "escalated"
        assert any("command centre" in entry["summary"] for entry in v["timeline"])


async def test_duplicate_delivery_has_one_effect(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        incident = await new_incident(client)
        events = [
            classified(incident),
            dispatched(incident, "h-lead", "U-POL-P0001", HandoffRole.LEAD),
            acknowledged(incident, "h-lead", "U-POL-P0001"),
            wrap(incident, IncidentEscalated(incident_id=incident, level=1, unit_id="U-DESK-S0101", reason="no report"), 20),
        ]
        for envelope in events:
            await publish(app, envelope)
        first = await view(client, incident)
        for envelope in events:
            await publish(app, envelope)
        second = await view(client, incident)
        assert second == first
        assert len(second["handoffs"]) == 1 and len(second["escalations"]) == 1
        assert len(second["timeline"]) == 1 + len(events)


async def test_breach_decline_and_escalation_show_on_the_handoffs(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        incident = await new_incident(client)
        await publish(app, dispatched(incident, "h-lead", "U-POL-P0001", HandoffRole.LEAD))
        await publish(app, dispatched(incident, "h-co", "U-HEALTH-D01", HandoffRole.CO_OPERATING))
        await publish(
            app,
            wrap(
                incident,
                DeadlineBreached(
                    incident_id=incident, deadline_id="d-1", handoff_id="h-lead", kind=DeadlineKind.REPORT,
                    due_at=at(17), urgency=Urgency.URGENT, unit_id="U-POL-P0001", fired_at=at(17),
                ),
                17,
            ),
        )
        await publish(
            app,
            wrap(
                incident,
                HandoffDeclined(
                    incident_id=incident, handoff_id="h-co", unit_id="U-HEALTH-D01", actor_id="health-D01-1",
                    reason_code=DeclineReason.NOT_OUR_JURISDICTION, declined_at=at(6),
                ),
                6,
            ),
        )
        await publish(
            app,
            wrap(
                incident,
                IncidentEscalated(incident_id=incident, level=1, unit_id="U-DESK-S0101", reason="report deadline missed", trigger_handoff_id="h-lead"),
                17.5,
            ),
        )
        v = await view(client, incident)
        by_id = {h["handoff_id"]: h for h in v["handoffs"]}
        assert by_id["h-lead"]["breached"] is True and by_id["h-lead"]["late"] is True
        assert by_id["h-lead"]["state"] == "dispatched"
        assert by_id["h-co"]["state"] == "declined"
        assert v["escalations"] == [
            {
                "level": 1, "unit_id": "U-DESK-S0101", "reason": "report deadline missed",
                "trigger_handoff_id": "h-lead", "escalated_at": "2026-03-01T09:17:30Z",
            }
        ]
        assert v["all_reported"] is False


async def test_a_withdrawn_breach_clears_the_red_mark_and_says_so_in_the_timeline(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        incident = await new_incident(client)
        await publish(app, dispatched(incident, "h-lead", "U-POL-P0001", HandoffRole.LEAD))
        common = {"incident_id": incident, "deadline_id": "d-1", "handoff_id": "h-lead", "kind": DeadlineKind.REPORT, "due_at": at(15)}
        await publish(app, wrap(incident, DeadlineBreached(**common, urgency=Urgency.URGENT, fired_at=at(15)), 15))
        assert (await view(client, incident))["handoffs"][0]["breached"] is True
        await publish(
            app,
            wrap(incident, DeadlineBreachWithdrawn(**common, fact_at=at(14.9), withdrawn_at=at(15.2), reason="awaited_fact_in_time"), 15.2),
        )

        v = await view(client, incident)
        assert v["handoffs"][0]["breached"] is False and v["handoffs"][0]["late"] is False
        assert any("breach withdrawn" in entry["summary"] for entry in v["timeline"])


async def test_events_for_an_incident_intake_never_took_do_not_break_the_consumer(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        await publish(app, classified("someone-elses-incident"))
        assert (await client.get("/api/v1/incidents/someone-elses-incident")).status_code == 404
        incident = await new_incident(client)
        await publish(app, classified(incident))
        assert (await view(client, incident))["status"] == "classified"
