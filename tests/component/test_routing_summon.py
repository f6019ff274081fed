"""Routing over HTTP: a dispatcher adds a department to the whistle (增派部门)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from contracts.events import IncidentClosed
from contracts.topics import CLOSURE_OUTCOMES
from contracts.vocabulary import Category, ClosureOutcome, Urgency
from services.routing.repository import audit_log
from tests.component.test_routing_service import Harness, new_incident, running_routing


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_routing(f"sqlite+aiosqlite:///{tmp_path / 'routing.db'}") as running:
        yield running


async def summon(harness: Harness, incident: str, department: str, actor: str = "desk-S0101-1"):  # noqa: ANN201
    body = {"actor_id": actor, "department": department, "reason": "smoke from a drain"}
    return await harness.http.post(f"/api/v1/incidents/{incident}/summon", json=body)


async def summon_audit(harness: Harness) -> list[tuple[str, bool, str]]:
    async with harness.runtime.engine.connect() as conn:
        rows = (await conn.execute(select(audit_log).where(audit_log.c.action == "summon").order_by(audit_log.c.id))).all()
    return [(r.actor, r.allowed, r.reason) for r in rows]


async def test_a_dispatcher_summons_a_department_once_with_a_report_deadline_from_dispatch(harness: Harness) -> None:
    incident = new_incident()
    await harness.classify(incident, Category.ENVIRONMENT, Urgency.URGENT)
    harness.clock.advance(timedelta(minutes=5))

    first = await summon(harness, incident, "health")
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["unit_id"], body["role"], body["state"]) == ("U-HEALTH-D01", "co_operating", "dispatched")
    assert body["dispatched_at"] == harness.clock.now().isoformat()
    assert body["report_due_at"] == (harness.clock.now() + timedelta(minutes=15)).isoformat()

    again = await summon(harness, incident, "health", actor="cmd-D01-1")
    assert again.status_code == 200 and again.json()["handoff_id"] == body["handoff_id"]
    dispatched = [e for e in await harness.outbox("HandoffDispatched") if e.data.unit_id == "U-HEALTH-D01"]
    assert [e.data.handoff_id for e in dispatched] == [body["handoff_id"]]
    assert dispatched[0].policy_version is not None
    assert [h["unit_id"] for h in await harness.handoffs(incident)].count("U-HEALTH-D01") == 1
    assert [allowed for _, allowed, _ in await summon_audit(harness)] == [True, True]


async def test_a_non_dispatcher_is_refused_and_the_attempt_audited(harness: Harness) -> None:
    incident = new_incident()
    await harness.classify(incident, Category.ENVIRONMENT, Urgency.GENERAL)
    refused = await summon(harness, incident, "health", actor="P0001")
    assert refused.status_code == 403
    assert [e for e in await harness.outbox("HandoffDispatched") if e.data.unit_id == "U-HEALTH-D01"] == []
    [(actor, allowed, reason)] = await summon_audit(harness)
    assert (actor, allowed) == ("P0001", False) and "not a dispatcher" in reason


async def test_unknown_incident_unknown_department_and_closed_incident_are_rejected(harness: Harness) -> None:
    assert (await summon(harness, new_incident(), "health")).status_code == 404
    incident = new_incident()
    await harness.classify(incident, Category.ENVIRONMENT, Urgency.GENERAL)
    assert (await summon(harness, incident, "astrology")).status_code == 422
    await harness.publish(
        CLOSURE_OUTCOMES,
        IncidentClosed(incident_id=incident, outcome=ClosureOutcome.RESOLVED, closed_at=harness.clock.now()),
        incident,
    )
    closed = await summon(harness, incident, "health")
    assert closed.status_code == 409 and "closed" in closed.json()["detail"]
