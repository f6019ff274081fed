"""A withdrawn breach (the unit reported in time; its acknowledgement reached the timer late) is not a breach in the rates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contracts.events import DeadlineBreached, DeadlineBreachWithdrawn, HandoffDispatched, IncidentReported, Location
from contracts.vocabulary import Category, DeadlineKind, HandoffRole, Urgency
from services.closure.app import create_app
from services.closure.settings import ClosureSettings
from services.runtime.clock import FakeClock
from tests.support import envelope_for, publish, running

T0 = datetime(2026, 5, 4, 2, 0, tzinfo=UTC)
INCIDENT, HANDOFF, DEADLINE = "inc-wd-1", "h-wd-1", "d-wd-1"


async def report_breaches(client) -> int:
    [row] = (await client.get("/api/v1/kpis", params={"dimension": "all"})).json()["rows"]
    return row["report_breaches"]


async def test_a_withdrawn_breach_leaves_the_breach_count(tmp_path):
    app = create_app(
        ClosureSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/closure.db", log_json=False, log_level="WARNING"),
        clock=FakeClock(T0 + timedelta(hours=1)),
    )
    due = T0 + timedelta(minutes=15)
    common = {"incident_id": INCIDENT, "deadline_id": DEADLINE, "handoff_id": HANDOFF, "kind": DeadlineKind.REPORT, "due_at": due}
    async with running(app) as client:
        reported = IncidentReported(
            incident_id=INCIDENT, grid_id="G0001", reporter_id="W0001", description="有人打架",
            location=Location(address="幸福路8号"), reported_at=T0,
        )
        dispatched = HandoffDispatched(
            incident_id=INCIDENT, handoff_id=HANDOFF, unit_id="U-POL-P0001", department="police", role=HandoffRole.LEAD,
            category=Category.VIOLENCE, urgency=Urgency.URGENT, grid_id="G0001", dispatched_at=T0, report_due_at=due,
        )
        for event, at in ((reported, T0), (dispatched, T0)):
            await publish(app, envelope_for(event, INCIDENT, at=at))
        breach = envelope_for(DeadlineBreached(**common, urgency=Urgency.URGENT, unit_id="U-POL-P0001", fired_at=due), INCIDENT, at=due)
        await publish(app, breach)
        assert await report_breaches(client) == 1

        withdrawal = DeadlineBreachWithdrawn(
            **common, fact_at=due - timedelta(seconds=1), withdrawn_at=due + timedelta(seconds=3), reason="awaited_fact_in_time"
        )
        await publish(app, envelope_for(withdrawal, INCIDENT, at=due + timedelta(seconds=3)))
        await publish(app, breach)  # a redelivered breach does not come back
        assert await report_breaches(client) == 0
