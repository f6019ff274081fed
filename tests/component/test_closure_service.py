"""Closure as a service: facts over the in-memory broker, verification and feedback over HTTP."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from fastapi import FastAPI

from contracts.envelope import Envelope
from contracts.events import (
    FeedbackGiven,
    HandoffDispatched,
    HandoffReleased,
    HandoffResolved,
    IncidentClassified,
    IncidentClosed,
    IncidentEscalatedToCommandCentre,
    IncidentReopened,
    IncidentReported,
    IncidentResolved,
    IncidentVerified,
    Location,
    VerificationRejected,
)
from contracts.vocabulary import Category, Disposition, HandoffRole, Urgency
from services.closure.app import create_app
from services.closure.settings import ClosureSettings
from services.runtime.clock import FakeClock
from tests.support import envelope_for, outbox_envelopes, publish, running

# The reporter is a grid worker of another grid who filed it through the city app (Open311 names the
# reporter); as its reporter they may verify and give feedback, with their own token.
REPORTER = "W0002"
GRID_WORKER = "W0001"  # the demo city's grid worker of G0001


class Incident:
    """One incident's facts as the other services would publish them, timed by a FakeClock."""

    def __init__(self, app: FastAPI, clock: FakeClock) -> None:
        self.app = app
        self.clock = clock
        self.id = str(uuid.uuid4())

    def envelope(self, event) -> Envelope:
        return envelope_for(event, self.id, at=self.clock.now())

    async def send(self, event) -> Envelope:
        envelope = self.envelope(event)
        await publish(self.app, envelope)
        return envelope

    def reported(self) -> IncidentReported:
        return IncidentReported(
            incident_id=self.id,
            grid_id="G0001",
            reporter_id=REPORTER,
            description="楼道里堆满杂物，堵住了消防通道",
            location=Location(address="测试路1号"),
            reported_at=self.clock.now(),
        )

    async def report(self) -> None:
        await self.send(self.reported())
        await self.send(
            IncidentClassified(
                incident_id=self.id,
                grid_id="G0001",
                category=Category.SAFETY_HAZARD,
                urgency=Urgency.GENERAL,
                priority=3,
                confidence=0.9,
                classifier_version="test",
            )
        )

    async def dispatch(self, handoff_id: str, role: HandoffRole = HandoffRole.LEAD) -> None:
        now = self.clock.advance(30)
        await self.send(
            HandoffDispatched(
                incident_id=self.id,
                handoff_id=handoff_id,
                unit_id=f"U-{handoff_id}",
                department="housing",
                role=role,
                category=Category.SAFETY_HAZARD,
                urgency=Urgency.GENERAL,
                grid_id="G0001",
                dispatched_at=now,
                report_due_at=now + timedelta(hours=2),
            )
        )

    def resolution(self, handoff_id: str, role: HandoffRole = HandoffRole.LEAD, disposition=Disposition.RESOLVED):
        return HandoffResolved(
            incident_id=self.id,
            handoff_id=handoff_id,
            unit_id=f"U-{handoff_id}",
            role=role,
            actor_id="housing-D01-1",
            disposition=disposition,
            note="已清理",
            resolved_at=self.clock.advance(3600),
        )

    async def resolve(self, handoff_id: str, role: HandoffRole = HandoffRole.LEAD, disposition=Disposition.RESOLVED):
        await self.send(self.resolution(handoff_id, role, disposition))

    async def resolved_by_the_lead(self, disposition=Disposition.RESOLVED) -> None:
        """Reported, one lead dispatched and resolved: ready for verification."""
        await self.report()
        await self.dispatch("lead")
        await self.resolve("lead", disposition=disposition)

    async def emitted(self) -> list[type]:
        return [type(e.data) for e in await outbox_envelopes(self.app) if e.subject == self.id]


def make_app(tmp_path, max_reopens: int = 2) -> tuple[FastAPI, FakeClock]:
    clock = FakeClock()
    settings = ClosureSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/closure.db", max_reopens=max_reopens, log_json=False
    )
    return create_app(settings, clock=clock), clock


async def verify(client: httpx.AsyncClient, incident: Incident, actor=GRID_WORKER, confirmed=True, reason=""):
    return await client.post(
        f"/api/v1/incidents/{incident.id}/verification",
        json={"actor_id": actor, "confirmed": confirmed, "reason": reason},
    )


async def feedback(client: httpx.AsyncClient, incident: Incident, satisfaction: str, actor=REPORTER):
    return await client.post(
        f"/api/v1/incidents/{incident.id}/feedback", json={"actor_id": actor, "satisfaction": satisfaction}
    )


async def test_whole_loop_lead_and_released_co_op_then_verified_and_satisfied_closes_resolved(tmp_path):
    app, clock = make_app(tmp_path)
    async with running(app) as client:
        incident = Incident(app, clock)
        await incident.report()
        await incident.dispatch("lead")
        await incident.dispatch("co", HandoffRole.CO_OPERATING)
        await incident.dispatch("esc", HandoffRole.ESCALATION)
        await incident.resolve("lead")
        assert await incident.emitted() == []  # the co-operating handoff still blocks
        await incident.send(HandoffReleased(incident_id=incident.id, handoff_id="co", unit_id="U-co"))
        assert await incident.emitted() == [IncidentResolved]

        state = (await client.get(f"/api/v1/incidents/{incident.id}")).json()
        assert state["status"] == "awaiting_verification"
        assert state["disposition"] == "resolved"
        assert state["category"] == "safety_hazard"
        assert {h["handoff_id"]: h["state"] for h in state["handoffs"]} == {
            "lead": "resolved",
            "co": "released",
            "esc": "active",
        }
        assert "reporter_id" not in state

        verified = await verify(client, incident)
        assert verified.status_code == 200, verified.text
        assert verified.json()["status"] == "awaiting_feedback"
        closed = await feedback(client, incident, "satisfied")
        assert closed.status_code == 200, closed.text
        assert (closed.json()["status"], closed.json()["outcome"]) == ("closed", "resolved")

        assert await incident.emitted() == [IncidentResolved, IncidentVerified, FeedbackGiven, IncidentClosed]
        envelopes = [e for e in await outbox_envelopes(app) if e.subject == incident.id]
        assert envelopes[-1].causation_id == envelopes[-2].id  # the close was caused by the feedback

        timeline = (await client.get(f"/api/v1/incidents/{incident.id}/timeline")).json()
        assert timeline["chain"] == "intact"
        assert [e["event_type"] for e in timeline["entries"]] == [
            "IncidentReported",
            "IncidentClassified",
            "HandoffDispatched",
            "HandoffDispatched",
            "HandoffDispatched",
            "HandoffResolved",
            "HandoffReleased",
            "IncidentResolved",
            "IncidentVerified",
            "FeedbackGiven",
            "IncidentClosed",
        ]
        assert "description" not in timeline["entries"][0]["summary"]

        metrics = (await client.get("/metrics")).text
        assert 'gridwhistle_closure_incidents_closed_total{outcome="resolved"} 1.0' in metrics
        assert 'gridwhistle_closure_feedback_total{satisfaction="satisfied"} 1.0' in metrics


async def test_an_unfounded_lead_disposition_closes_unresolved_even_when_the_reporter_is_satisfied(tmp_path):
    app, clock = make_app(tmp_path)
    async with running(app) as client:
        incident = Incident(app, clock)
        await incident.resolved_by_the_lead(Disposition.UNFOUNDED)
        assert (await verify(client, incident)).status_code == 200
        closed = (await feedback(client, incident, "basically_satisfied")).json()
        assert closed["outcome"] == "closed_unresolved"
        last = (await outbox_envelopes(app))[-1].data
        assert isinstance(last, IncidentClosed) and last.outcome.value == "closed_unresolved"


async def test_facts_arriving_out_of_order_across_topics_still_reach_readiness(tmp_path):
    app, clock = make_app(tmp_path)
    async with running(app) as client:
        incident = Incident(app, clock)
        report = incident.reported()
        await incident.dispatch("lead")
        await incident.resolve("lead")
        assert await incident.emitted() == [IncidentResolved]
        # Until the report arrives closure cannot recognise the reporter, only the grid's worker.
        assert (await verify(client, incident, actor=REPORTER)).status_code == 403
        await incident.send(report)
        response = await verify(client, incident, actor=REPORTER)
        assert response.status_code == 200, response.text
        assert await incident.emitted() == [IncidentResolved, IncidentVerified]


async def test_a_duplicate_delivery_has_one_effect(tmp_path):
    app, clock = make_app(tmp_path)
    async with running(app) as client:
        incident = Incident(app, clock)
        await incident.report()
        await incident.dispatch("lead")
        resolution = incident.envelope(incident.resolution("lead"))
        await publish(app, resolution)
        await publish(app, resolution)
        assert await incident.emitted() == [IncidentResolved]
        timeline = (await client.get(f"/api/v1/incidents/{incident.id}/timeline")).json()["entries"]
        assert [e["event_id"] for e in timeline].count(str(resolution.id)) == 1


async def test_the_same_command_twice_returns_the_state_with_one_effect(tmp_path):
    app, clock = make_app(tmp_path)
    async with running(app) as client:
        incident = Incident(app, clock)
        await incident.resolved_by_the_lead()
        first, second = await verify(client, incident), await verify(client, incident)
        assert (first.status_code, second.status_code) == (200, 200)
        assert second.json() == first.json()
        first, second = await feedback(client, incident, "not_satisfied"), await feedback(client, incident, "not_satisfied")
        assert (first.status_code, second.status_code) == (200, 200)
        assert second.json()["reopen_count"] == 1
        assert await incident.emitted() == [IncidentResolved, IncidentVerified, FeedbackGiven, IncidentReopened]


async def test_strangers_get_403_and_wrong_states_409_and_unknown_incidents_404(tmp_path):
    app, clock = make_app(tmp_path)
    async with running(app) as client:
        incident = Incident(app, clock)
        await incident.report()
        await incident.dispatch("lead")
        too_early = await verify(client, incident)
        assert too_early.status_code == 409
        await incident.resolve("lead")
        assert (await verify(client, incident, actor="W0003")).status_code == 403  # another grid's worker
        assert (await feedback(client, incident, "satisfied", actor="P0001")).status_code == 403  # a responder
        unverified = await feedback(client, incident, "satisfied")
        assert unverified.status_code == 409
        assert "verified" in unverified.json()["detail"]
        no_reason = await verify(client, incident, confirmed=False)
        assert no_reason.status_code == 422
        assert no_reason.json()["detail"][0]["loc"] == ["body", "reason"]
        unknown = await client.post(
            f"/api/v1/incidents/{uuid.uuid4()}/verification", json={"actor_id": GRID_WORKER, "confirmed": True}
        )
        assert unknown.status_code == 404
        assert (await client.get(f"/api/v1/incidents/{uuid.uuid4()}")).status_code == 404
        assert await incident.emitted() == [IncidentResolved]


async def test_rejected_verification_reopens_until_routing_resolves_the_lead_again(tmp_path):
    app, clock = make_app(tmp_path)
    async with running(app) as client:
        incident = Incident(app, clock)
        await incident.resolved_by_the_lead()
        rejected = await verify(client, incident, confirmed=False, reason="杂物还在")
        assert rejected.status_code == 200, rejected.text
        assert (rejected.json()["status"], rejected.json()["reopen_count"]) == ("reopened", 1)
        assert (await verify(client, incident)).status_code == 409
        await incident.dispatch("lead-2")  # routing re-dispatches the lead
        await incident.resolve("lead-2")
        assert await incident.emitted() == [IncidentResolved, VerificationRejected, IncidentReopened, IncidentResolved]
        assert (await client.get(f"/api/v1/incidents/{incident.id}")).json()["status"] == "awaiting_verification"


async def test_the_reopen_loop_hits_the_cap_and_escalates_to_the_command_centre(tmp_path):
    app, clock = make_app(tmp_path, max_reopens=1)
    async with running(app) as client:
        incident = Incident(app, clock)
        await incident.resolved_by_the_lead()
        await verify(client, incident)
        reopened = (await feedback(client, incident, "not_satisfied")).json()
        assert (reopened["status"], reopened["reopen_count"]) == ("reopened", 1)
        await incident.dispatch("lead-2")
        await incident.resolve("lead-2")
        await verify(client, incident)
        escalated = (await feedback(client, incident, "not_satisfied")).json()
        assert (escalated["status"], escalated["outcome"]) == ("escalated", None)
        assert escalated["escalated_to_command_centre"] is True
        last = (await outbox_envelopes(app))[-1]
        assert isinstance(last.data, IncidentEscalatedToCommandCentre)
        assert (last.data.grid_id, last.data.reopen_count) == ("G0001", 1)
        assert last.causation_id == (await outbox_envelopes(app))[-2].id  # caused by the feedback

        # Routing hands it to the command centre as the lead; its round ends like any other.
        await incident.dispatch("command-centre")
        await incident.resolve("command-centre")
        assert (await verify(client, incident)).status_code == 200
        closed = (await feedback(client, incident, "not_satisfied")).json()
        assert (closed["status"], closed["outcome"]) == ("closed", "closed_unresolved")
        final = (await outbox_envelopes(app))[-1].data
        assert isinstance(final, IncidentClosed)
        assert (final.outcome.value, final.satisfaction.value) == ("closed_unresolved", "not_satisfied")
        timeline = (await client.get(f"/api/v1/incidents/{incident.id}/timeline")).json()
        assert "IncidentEscalatedToCommandCentre" in [e["event_type"] for e in timeline["entries"]]
        metrics = (await client.get("/metrics")).text
        assert 'gridwhistle_closure_reopens_total{trigger="not_satisfied"} 1.0' in metrics
        assert 'gridwhistle_closure_command_centre_escalations_total{trigger="not_satisfied"} 1.0' in metrics
        assert 'gridwhistle_closure_incidents_closed_total{outcome="closed_unresolved"} 1.0' in metrics


async def test_a_supervisor_verifies_any_grid_but_gives_no_feedback(tmp_path):
    app, clock = make_app(tmp_path)
    async with running(app) as client:
        incident = Incident(app, clock)
        await incident.resolved_by_the_lead()
        assert (await verify(client, incident, actor="cmd-D01-1")).status_code == 403  # a dispatcher is no supervisor
        verified = await verify(client, incident, actor="sup-1")
        assert verified.status_code == 200, verified.text
        assert verified.json()["verified_by"] == "sup-1"
        assert (await feedback(client, incident, "satisfied", actor="sup-1")).status_code == 403
        assert (await feedback(client, incident, "satisfied")).json()["outcome"] == "resolved"
