"""The reopen cap's escalation reaches routing: the district command centre gets the incident as its lead."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

from contracts.events import IncidentEscalatedToCommandCentre
from contracts.topics import CLOSURE_OUTCOMES
from contracts.vocabulary import Category, Urgency
from tests.component.test_routing_service import GRID, running_routing


async def test_an_escalation_at_the_reopen_cap_dispatches_the_command_centre_as_lead_once(tmp_path: Path) -> None:
    async with running_routing(f"sqlite+aiosqlite:///{tmp_path / 'routing.db'}") as routing:
        incident = str(uuid.uuid4())
        await routing.classify(incident, Category.NOISE, Urgency.GENERAL)
        routing.clock.advance(timedelta(days=1))
        escalation = IncidentEscalatedToCommandCentre(
            incident_id=incident, grid_id=GRID, reopen_count=2, reason="reporter not satisfied",
            escalated_at=routing.clock.now(),
        )
        cause = await routing.publish(CLOSURE_OUTCOMES, escalation, incident)
        await routing.publish(CLOSURE_OUTCOMES, escalation, incident, envelope=cause)  # redelivered
        command_centre = [h for h in await routing.handoffs(incident) if h["unit_id"] == "U-CMD-D01"]
        assert len(command_centre) == 1
        (handoff,) = command_centre
        assert (handoff["role"], handoff["state"]) == ("lead", "dispatched")
        assert handoff["report_due_at"] == (routing.clock.now() + timedelta(hours=2)).isoformat()
        dispatched = [e for e in await routing.outbox("HandoffDispatched") if e.data.unit_id == "U-CMD-D01"]
        assert [e.causation_id for e in dispatched] == [cause.id]
        queue = (await routing.http.get("/api/v1/units/U-CMD-D01/queue")).json()
        assert incident in str(queue)
