"""End to end: all five services as processes, real Kafka, real PostgreSQL.

(a) report → classified → dispatched → acknowledged (deadline cancelled) → resolved → verified →
feedback → closed, with services SIGKILLed mid-flow; (b) no acknowledgement → DeadlineBreached
exactly once per handoff → an escalation handoff appears.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from contracts.reference import demo_city
from contracts.topics import ROUTING_HANDOFFS, SLA_DEADLINES
from tests.e2e.stack import Stack, eventually, read_topic
from tests.support import mint_token

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CITY = demo_city()
GRID = CITY.grid("G0001")
GRID_WORKER = GRID.grid_worker_ids[0]


def report_body(description: str) -> dict:
    return {
        "grid_id": GRID.id,
        "reporter_id": GRID_WORKER,
        "description": description,
        "location": {"latitude": GRID.latitude, "longitude": GRID.longitude, "address": "东城区幸福路8号"},
    }


async def report(client: httpx.AsyncClient, stack: Stack, description: str) -> str:
    response = await client.post(
        f"{stack.url('intake')}/api/v1/incidents",
        json=report_body(description),
        headers={"Idempotency-Key": str(uuid.uuid4()), **stack.as_user(GRID_WORKER)},
    )
    assert response.status_code == 202, response.text
    return response.json()["incident_id"]


async def intake_view(client: httpx.AsyncClient, stack: Stack, incident_id: str) -> dict:
    response = await client.get(f"{stack.url('intake')}/api/v1/incidents/{incident_id}", headers=stack.as_user(GRID_WORKER))
    return response.json() if response.status_code == 200 else {}


async def member_of(client: httpx.AsyncClient, stack: Stack, unit_id: str) -> str:
    unit = (await client.get(f"{stack.url('routing')}/api/v1/units/{unit_id}", headers=stack.as_user(GRID_WORKER))).json()
    return unit["members"][0]


async def test_reported_incident_travels_to_closure_despite_killed_services(stack: Stack):
    async with httpx.AsyncClient(timeout=10) as client:
        incident_id = await report(client, stack, "楼下有人打架，有人流血，请民警快来")
        # routing dies before (or while) it dispatches; the classified event waits in Kafka for it.
        stack.kill("routing")
        stack.restart("routing")

        view = await eventually(
            lambda: intake_view(client, stack, incident_id),
            lambda v: v.get("urgency") == "urgent" and len(v.get("handoffs", [])) >= 2,
            what="urgent incident dispatched to the officer and co-operating departments",
        )
        handoffs = view["handoffs"]
        assert {h["role"] for h in handoffs} >= {"lead", "co_operating"}

        for handoff in handoffs:
            actor = await member_of(client, stack, handoff["unit_id"])
            acked = await client.post(
                f"{stack.url('routing')}/api/v1/handoffs/{handoff['handoff_id']}/acknowledge",
                json={"actor_id": actor}, headers=stack.as_user(actor),
            )
            assert acked.status_code in (200, 202), acked.text

        await eventually(
            lambda: intake_view(client, stack, incident_id),
            lambda v: v.get("all_reported") is True,
            what="every summoned unit reported (报到)",
        )
        deadlines = await eventually(
            lambda: _deadlines(client, stack, incident_id),
            lambda ds: ds and all(d["state"] == "cancelled" for d in ds if d["kind"] == "report"),
            what="report deadlines cancelled by the acknowledgements",
        )
        assert {d["handoff_id"] for d in deadlines if d["kind"] == "report"} == {h["handoff_id"] for h in handoffs}

        # closure dies just before the resolutions arrive; they must still be counted.
        stack.kill("closure")
        for handoff in handoffs:
            actor = await member_of(client, stack, handoff["unit_id"])
            resolved = await client.post(
                f"{stack.url('routing')}/api/v1/handoffs/{handoff['handoff_id']}/resolve",
                json={"actor_id": actor, "disposition": "resolved", "note": "双方已分开，伤者送医"},
                headers=stack.as_user(actor),
            )
            assert resolved.status_code in (200, 202), resolved.text
        stack.restart("closure")

        await eventually(
            lambda: _closure_view(client, stack, incident_id),
            lambda v: v.get("status") == "awaiting_verification",
            what="incident resolved and awaiting verification",
        )
        verified = await client.post(
            f"{stack.url('closure')}/api/v1/incidents/{incident_id}/verification",
            json={"actor_id": GRID_WORKER, "confirmed": True}, headers=stack.as_user(GRID_WORKER),
        )
        assert verified.status_code in (200, 202), verified.text
        await eventually(
            lambda: _closure_view(client, stack, incident_id),
            lambda v: v.get("status") == "awaiting_feedback",
            what="verification recorded",
        )
        feedback = await client.post(
            f"{stack.url('closure')}/api/v1/incidents/{incident_id}/feedback",
            json={"actor_id": GRID_WORKER, "satisfaction": "satisfied", "comment": "处理及时"},
            headers=stack.as_user(GRID_WORKER),
        )
        assert feedback.status_code in (200, 202), feedback.text

        final = await eventually(
            lambda: intake_view(client, stack, incident_id),
            lambda v: v.get("status") == "closed",
            what="incident closed as seen by the grid worker",
        )
        assert final["outcome"] == "resolved"
        assert final["satisfaction"] == "satisfied"

    deadline_events = await read_topic(stack.bootstrap, stack.prefix + SLA_DEADLINES.name, subject=incident_id)
    assert not [e for e in deadline_events if e.type == "DeadlineBreached"], "an acknowledged handoff breached"
    cancelled = [e for e in deadline_events if e.type == "DeadlineCancelled" and e.data.kind.value == "report"]
    assert len(cancelled) == len(handoffs)


async def test_unacknowledged_general_incident_breaches_once_and_escalates(stack: Stack):
    async with httpx.AsyncClient(timeout=10) as client:
        incident_id = await report(client, stack, "楼上邻居装修噪音太大，影响休息")
        view = await eventually(
            lambda: intake_view(client, stack, incident_id),
            lambda v: v.get("urgency") == "general" and v.get("handoffs"),
            what="general incident dispatched",
        )
        summoned = {h["handoff_id"] for h in view["handoffs"] if h["role"] != "escalation"}
        await eventually(
            lambda: intake_view(client, stack, incident_id),
            lambda v: any(h["role"] == "escalation" for h in v.get("handoffs", [])),
            timeout=45,
            what="an escalation handoff after the report deadline passed",
        )
    # give a duplicate firing, if there were one, time to show up
    await asyncio.sleep(2)
    deadline_events = await read_topic(stack.bootstrap, stack.prefix + SLA_DEADLINES.name, subject=incident_id)
    breaches = [e for e in deadline_events if e.type == "DeadlineBreached"]
    breached_handoffs = [e.data.handoff_id for e in breaches if e.data.handoff_id in summoned]
    assert sorted(breached_handoffs) == sorted(summoned), "each summoned unit breaches exactly once"
    for breach in breaches:
        assert breach.data.fired_at >= breach.data.due_at, "a deadline fired early"
        assert breach.policy_version == "e2e-short-general"
    handoff_events = await read_topic(stack.bootstrap, stack.prefix + ROUTING_HANDOFFS.name, subject=incident_id)
    escalations = [e for e in handoff_events if e.type == "IncidentEscalated"]
    assert escalations and escalations[0].data.level == 1


async def _deadlines(client: httpx.AsyncClient, stack: Stack, incident_id: str) -> list[dict]:
    response = await client.get(
        f"{stack.url('sla_timer')}/api/v1/deadlines", params={"incident_id": incident_id}, headers=stack.as_user("sup-1")
    )
    if response.status_code != 200:
        return []
    body = response.json()
    return body["deadlines"] if isinstance(body, dict) else body


async def _closure_view(client: httpx.AsyncClient, stack: Stack, incident_id: str) -> dict:
    response = await client.get(f"{stack.url('closure')}/api/v1/incidents/{incident_id}", headers=stack.as_user(GRID_WORKER))
    return response.json() if response.status_code == 200 else {}


async def test_the_services_accept_the_consoles_tokens_and_refuse_development_ones(stack: Stack):
    async with httpx.AsyncClient(timeout=10) as client:
        signed_in = await client.post(
            f"{stack.url('console')}/api/v1/login", json={"user_id": "cmd-D01-1", "password": "gridwhistle"}
        )
        assert signed_in.status_code == 200, signed_in.text
        console_token = {"Authorization": f"Bearer {signed_in.json()['token']}"}
        queue = await client.get(f"{stack.url('routing')}/api/v1/command-centres/D01/queue", headers=console_token)
        assert queue.status_code == 200, queue.text
        # Signed with the development secret: worthless outside dev mode, and the attempt is on record.
        dev = {"Authorization": f"Bearer {mint_token(GRID_WORKER)}"}
        attempt = await client.post(
            f"{stack.url('intake')}/api/v1/incidents", json=report_body("开发环境的令牌"), headers=dev
        )
        assert attempt.status_code == 401 and attempt.json()["code"] == "token_invalid"
        for name in ("intake", "classification", "routing", "sla_timer", "closure"):
            assert (await client.get(f"{stack.url(name)}/health")).status_code == 200  # probes stay open
            assert (await client.get(f"{stack.url(name)}/metrics")).status_code == 200
        open311 = await client.post(
            f"{stack.url('intake')}/open311/v2/requests.json",
            data={"service_code": "noise", "lat": "28.12", "long": "112.92", "description": "广场舞噪音",
                  "attribute[reporter_id]": GRID_WORKER, "api_key": stack.open311_api_key},
        )
        assert open311.status_code == 201, open311.text
        demo_key = await client.get(f"{stack.url('intake')}/open311/v2/requests.json", params={"api_key": "demo-open311-key"})
        assert demo_key.status_code == 403  # the demo key exists in dev mode only
