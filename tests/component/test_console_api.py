"""The console through its real wiring: in-memory broker in, read model, signed-in API, live stream.

The owning services' HTTP APIs are replaced by a recording fake (closure's KPI API answers with no
figures); what is checked is what the console decides (who may see and do what) and what it
forwards (the signed-in actor, never the body's). The supervisor's figures against a real
closure are in test_console_supervisor_kpis.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from faststream.kafka import TestKafkaBroker

from contracts.envelope import Event, correlation_for, make_envelope
from contracts.events import (
    DeadlineBreachWithdrawn,
    DeadlineBreached,
    HandoffAcknowledged,
    HandoffDispatched,
    IncidentClassified,
    IncidentEscalated,
    IncidentReported,
    Location,
)
from contracts.topics import topic_for_event
from contracts.vocabulary import Category, DeadlineKind, HandoffRole, Urgency
from infra.local import free_port
from services.console.app import create_app
from services.console.settings import ConsoleSettings
from services.runtime.clock import FakeClock

# G0001: district D01, station S0101, officer unit U-POL-P0001. G0002 is in the same station;
# G0300 is in district D02.
HOME_GRID = "G0001"
OTHER_DISTRICT_GRID = "G0300"


@dataclass
class Harness:
    """The running console, its clock, an HTTP client and what it forwarded upstream."""

    app: object
    clock: FakeClock
    http: httpx.AsyncClient
    forwarded: list[tuple[str, dict, dict]] = field(default_factory=list)

    @property
    def runtime(self):  # noqa: ANN201 - the ServiceRuntime
        return self.app.state.runtime

    async def publish(self, event: Event, incident_id: str) -> None:
        envelope = make_envelope(
            event, source="test", subject=incident_id, occurred_at=self.clock.now(),
            correlation_id=correlation_for(incident_id),
        )
        spec = topic_for_event(envelope.type)
        await self.runtime.broker.publish(
            envelope.encode(), self.runtime.topic(spec), key=envelope.key(), headers=envelope.headers()
        )

    async def token(self, user_id: str) -> str:
        answer = await self.http.post("/api/v1/login", json={"user_id": user_id, "password": "gridwhistle"})
        assert answer.status_code == 200, answer.text
        return answer.json()["token"]

    async def as_user(self, user_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(user_id)}"}

    async def whistle(
        self, grid_id: str, *, urgency: Urgency = Urgency.URGENT, category: Category = Category.VIOLENCE,
        units: tuple[tuple[str, str, HandoffRole], ...] = (("U-POL-P0001", "police", HandoffRole.LEAD),),
        report_in: timedelta = timedelta(minutes=15),
    ) -> tuple[str, list[str]]:
        """Report, classify and dispatch one incident; returns its id and its handoff ids."""
        incident_id = str(uuid.uuid4())
        now = self.clock.now()
        await self.publish(
            IncidentReported(
                incident_id=incident_id, grid_id=grid_id, reporter_id="W0001", description="楼下有人打架",
                location=Location(address="幸福路8号"), reported_at=now,
            ),
            incident_id,
        )
        await self.publish(
            IncidentClassified(
                incident_id=incident_id, grid_id=grid_id, category=category, urgency=urgency, priority=2,
                confidence=0.9, classifier_version="test",
            ),
            incident_id,
        )
        handoff_ids = []
        for unit_id, department, role in units:
            handoff_id = str(uuid.uuid4())
            handoff_ids.append(handoff_id)
            await self.publish(
                HandoffDispatched(
                    incident_id=incident_id, handoff_id=handoff_id, unit_id=unit_id, department=department,
                    role=role, category=category, urgency=urgency, grid_id=grid_id, dispatched_at=now,
                    report_due_at=now + report_in,
                ),
                incident_id,
            )
        return incident_id, handoff_ids


def _settings(tmp_path: Path, **overrides) -> ConsoleSettings:
    return ConsoleSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'console.db'}", topic_prefix=f"t{uuid.uuid4().hex[:6]}.",
        log_json=False, metrics_enabled=False, stream_poll_seconds=0.05, **overrides,
    )


def no_figures(request: httpx.Request) -> httpx.Response:
    """Closure's KPI API with nothing counted yet."""
    if request.url.path == "/api/v1/kpis/time-to-report":
        return httpx.Response(200, json={"buckets": []})
    return httpx.Response(200, json={"rows": [], "as_of": None})


@asynccontextmanager
async def running_console(
    tmp_path: Path,
    clock: FakeClock | None = None,
    reads: Callable[[httpx.Request], httpx.Response] = no_figures,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[Harness]:
    """The console with the in-memory broker; commands (POSTs) are recorded, reads answered by `reads`."""
    clock = clock or FakeClock()
    forwarded: list[tuple[str, dict, dict]] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return reads(request)
        forwarded.append((str(request.url), json.loads(request.content or b"{}"), dict(request.headers)))
        return httpx.Response(200, json={"ok": True})

    transport = upstream_transport or httpx.MockTransport(upstream)
    app = create_app(_settings(tmp_path), clock=clock, upstream_transport=transport)
    async with TestKafkaBroker(app.state.runtime.broker), app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console") as http:
            yield Harness(app, clock, http, forwarded)


@pytest.fixture
async def console(tmp_path) -> AsyncIterator[Harness]:
    async with running_console(tmp_path) as harness:
        yield harness


async def test_requests_without_a_valid_token_are_refused(console: Harness):
    assert (await console.http.get("/api/v1/queue")).status_code == 401
    token = await console.token("desk-S0101-1")
    tampered = ("f" if token[0] != "f" else "e") + token[1:]
    assert (await console.http.get("/api/v1/queue", headers={"Authorization": f"Bearer {tampered}"})).status_code == 401
    wrong = await console.http.post("/api/v1/login", json={"user_id": "desk-S0101-1", "password": "guess"})
    assert wrong.status_code == 401
    unknown = await console.http.post("/api/v1/login", json={"user_id": "nobody", "password": "gridwhistle"})
    assert unknown.status_code == 401


async def test_sign_in_sets_an_http_only_cookie_that_the_api_accepts(console: Harness):
    answer = await console.http.post("/api/v1/login", json={"user_id": "P0001", "password": "gridwhistle"})
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    me = await console.http.get("/api/v1/me")  # the client kept the cookie
    assert me.status_code == 200
    assert me.json()["role"] == "responder" and me.json()["unit_id"] == "U-POL-P0001"


async def test_dispatcher_queue_is_ordered_by_time_left_to_breach(console: Harness):
    general, _ = await console.whistle(HOME_GRID, urgency=Urgency.GENERAL, report_in=timedelta(hours=2))
    urgent, _ = await console.whistle(HOME_GRID, urgency=Urgency.URGENT, report_in=timedelta(minutes=15))
    queue = (await console.http.get("/api/v1/queue", headers=await console.as_user("desk-S0101-1"))).json()
    ids = [item["incident_id"] for item in queue["items"]]
    assert ids == [urgent, general]
    first = queue["items"][0]
    assert first["status"] == "dispatched" and first["district_id"] == "D01" and first["station_id"] == "S0101"
    assert first["handoffs"][0]["state"] == "dispatched" and first["handoffs"][0]["unit_name"]


async def test_dispatcher_of_another_station_can_neither_see_nor_act(console: Harness):
    incident_id, (handoff_id,) = await console.whistle(HOME_GRID)
    stranger = await console.as_user("desk-S0102-1")
    queue = (await console.http.get("/api/v1/queue", headers=stranger)).json()
    assert incident_id not in [item["incident_id"] for item in queue["items"]]
    assert (await console.http.get(f"/api/v1/incidents/{incident_id}", headers=stranger)).status_code == 404
    reassign = await console.http.post(
        f"/api/v1/handoffs/{handoff_id}/reassign", json={"to_unit_id": "U-DESK-S0102"}, headers=stranger
    )
    assert reassign.status_code == 404
    reclassify = await console.http.post(
        f"/api/v1/incidents/{incident_id}/reclassify",
        json={"category": "theft", "urgency": "general", "reason": "x"}, headers=stranger,
    )
    assert reclassify.status_code == 404
    assert console.forwarded == []
    # The district's command centre covers every station of D01, but not another district.
    district = await console.as_user("cmd-D01-1")
    assert (await console.http.get(f"/api/v1/incidents/{incident_id}", headers=district)).status_code == 200
    elsewhere = await console.as_user("cmd-D02-1")
    assert (await console.http.get(f"/api/v1/incidents/{incident_id}", headers=elsewhere)).status_code == 404


async def test_responder_sees_only_their_units_handoffs_and_cannot_act_on_another_units(console: Harness):
    units = (("U-POL-P0001", "police", HandoffRole.LEAD), ("U-HEALTH-D01", "health", HandoffRole.CO_OPERATING))
    incident_id, (police_handoff, health_handoff) = await console.whistle(HOME_GRID, units=units)
    health = await console.as_user("health-D01-1")
    queue = (await console.http.get("/api/v1/queue", headers=health)).json()
    (item,) = [i for i in queue["items"] if i["incident_id"] == incident_id]
    assert [h["handoff_id"] for h in item["handoffs"]] == [health_handoff]
    refused = await console.http.post(f"/api/v1/handoffs/{police_handoff}/acknowledge", headers=health)
    assert refused.status_code == 404
    # Another unit's member of the same district sees nothing at all.
    fire = await console.as_user("fire_rescue-D01-1")
    assert incident_id not in [i["incident_id"] for i in (await console.http.get("/api/v1/queue", headers=fire)).json()["items"]]
    assert console.forwarded == []


async def test_acknowledge_is_forwarded_to_routing_with_the_signed_in_actor(console: Harness):
    _, (handoff_id,) = await console.whistle(HOME_GRID)
    answer = await console.http.post(f"/api/v1/handoffs/{handoff_id}/acknowledge", headers=await console.as_user("A00011"))
    assert answer.status_code == 200
    (url, body, _), = console.forwarded
    assert url == f"http://127.0.0.1:8002/api/v1/handoffs/{handoff_id}/acknowledge"
    assert body == {"actor_id": "A00011"}


async def test_dispatcher_escalation_reassigns_to_the_district_command_centre(console: Harness):
    _, (handoff_id,) = await console.whistle(HOME_GRID)
    answer = await console.http.post(
        f"/api/v1/handoffs/{handoff_id}/escalate", json={"reason": "无人报到"}, headers=await console.as_user("desk-S0101-1")
    )
    assert answer.status_code == 200
    (url, body, _), = console.forwarded
    assert url.endswith(f"/api/v1/handoffs/{handoff_id}/reassign")
    assert body["to_unit_id"] == "U-CMD-D01" and body["actor_id"] == "desk-S0101-1"
    # A responder may not escalate, even on their own unit's handoff.
    refused = await console.http.post(
        f"/api/v1/handoffs/{handoff_id}/escalate", json={"reason": "x"}, headers=await console.as_user("P0001")
    )
    assert refused.status_code == 403


async def test_grid_worker_reports_only_for_their_own_grid_with_a_per_user_idempotency_key(console: Harness):
    worker = await console.as_user("W0001")
    body = {"grid_id": HOME_GRID, "description": "楼道堆放杂物", "address": "幸福路8号"}
    ok = await console.http.post("/api/v1/incidents", json=body, headers={**worker, "Idempotency-Key": "k1"})
    assert ok.status_code == 200
    (url, forwarded, headers), = console.forwarded
    assert url.endswith("/api/v1/incidents") and forwarded["reporter_id"] == "W0001"
    assert headers["idempotency-key"] != "k1"  # namespaced by user
    other = await console.http.post(
        "/api/v1/incidents", json={**body, "grid_id": "G0002"}, headers={**worker, "Idempotency-Key": "k2"}
    )
    assert other.status_code == 403
    dispatcher = await console.as_user("desk-S0101-1")
    assert (
        await console.http.post("/api/v1/incidents", json=body, headers={**dispatcher, "Idempotency-Key": "k3"})
    ).status_code == 403
    assert len(console.forwarded) == 1


async def test_grid_worker_sees_their_grids_incidents_only(console: Harness):
    mine, _ = await console.whistle(HOME_GRID)
    theirs, _ = await console.whistle("G0002")
    queue = (await console.http.get("/api/v1/queue", headers=await console.as_user("W0001"))).json()
    ids = [i["incident_id"] for i in queue["items"]]
    assert mine in ids and theirs not in ids


async def test_breach_and_escalation_show_on_the_item_and_its_timeline(console: Harness):
    incident_id, (handoff_id,) = await console.whistle(HOME_GRID)
    console.clock.advance(timedelta(minutes=16))
    await console.publish(
        DeadlineBreached(
            incident_id=incident_id, deadline_id="d1", handoff_id=handoff_id, kind=DeadlineKind.REPORT,
            due_at=console.clock.now() - timedelta(minutes=1), urgency=Urgency.URGENT, unit_id="U-POL-P0001",
            fired_at=console.clock.now(),
        ),
        incident_id,
    )
    await console.publish(
        IncidentEscalated(incident_id=incident_id, level=1, unit_id="U-DESK-S0101", reason="report deadline breached",
                          trigger_handoff_id=handoff_id),
        incident_id,
    )
    detail = (await console.http.get(f"/api/v1/incidents/{incident_id}", headers=await console.as_user("desk-S0101-1"))).json()
    assert detail["breached"] is True and detail["escalation_level"] == 1
    assert [e["event_type"] for e in detail["timeline"]][-2:] == ["DeadlineBreached", "IncidentEscalated"]


async def test_a_withdrawn_breach_is_no_longer_red(console: Harness):
    incident_id, (handoff_id,) = await console.whistle(HOME_GRID)
    due = console.clock.now() + timedelta(minutes=15)
    console.clock.advance(timedelta(minutes=15, seconds=1))
    common = {"incident_id": incident_id, "deadline_id": "d1", "handoff_id": handoff_id, "kind": DeadlineKind.REPORT, "due_at": due}
    await console.publish(DeadlineBreached(**common, urgency=Urgency.URGENT, unit_id="U-POL-P0001", fired_at=console.clock.now()), incident_id)
    await console.publish(
        DeadlineBreachWithdrawn(**common, fact_at=due - timedelta(seconds=2), withdrawn_at=console.clock.now(), reason="awaited_fact_in_time"),
        incident_id,
    )
    detail = (await console.http.get(f"/api/v1/incidents/{incident_id}", headers=await console.as_user("desk-S0101-1"))).json()
    assert detail["breached"] is False and detail["handoffs"][0]["breached"] is False
    assert [e["event_type"] for e in detail["timeline"]][-2:] == ["DeadlineBreached", "DeadlineBreachWithdrawn"]


async def test_a_breach_consumed_before_its_dispatch_is_still_projected(console: Harness):
    incident_id, handoff_id = str(uuid.uuid4()), str(uuid.uuid4())
    now = console.clock.now()
    await console.publish(
        DeadlineBreached(
            incident_id=incident_id, deadline_id="d1", handoff_id=handoff_id, kind=DeadlineKind.REPORT, due_at=now,
            urgency=Urgency.GENERAL, unit_id="U-POL-P0001", fired_at=now,
        ),
        incident_id,
    )
    await console.publish(
        HandoffDispatched(
            incident_id=incident_id, handoff_id=handoff_id, unit_id="U-POL-P0001", department="police",
            role=HandoffRole.LEAD, category=Category.NOISE, urgency=Urgency.GENERAL, grid_id=HOME_GRID,
            dispatched_at=now - timedelta(hours=2), report_due_at=now,
        ),
        incident_id,
    )
    detail = (await console.http.get(f"/api/v1/incidents/{incident_id}", headers=await console.as_user("P0001"))).json()
    (handoff,) = detail["handoffs"]
    assert handoff["breached"] is True and handoff["state"] == "dispatched" and detail["breached"] is True


async def test_supervisor_sees_todays_breaches_and_closures_figures_and_others_do_not(console: Harness):
    incident_id, (late, on_time) = await console.whistle(
        HOME_GRID, units=(("U-POL-P0001", "police", HandoffRole.LEAD), ("U-HEALTH-D01", "health", HandoffRole.CO_OPERATING))
    )
    console.clock.advance(timedelta(minutes=5))
    await console.publish(
        HandoffAcknowledged(incident_id=incident_id, handoff_id=on_time, unit_id="U-HEALTH-D01", actor_id="health-D01-1",
                            acknowledged_at=console.clock.now()),
        incident_id,
    )
    console.clock.advance(timedelta(minutes=11))
    await console.publish(
        DeadlineBreached(incident_id=incident_id, deadline_id="d", handoff_id=late, kind=DeadlineKind.REPORT,
                         due_at=console.clock.now(), urgency=Urgency.URGENT, unit_id="U-POL-P0001", fired_at=console.clock.now()),
        incident_id,
    )
    assert (await console.http.get("/api/v1/supervisor", headers=await console.as_user("cmd-D01-1"))).status_code == 403
    body = (await console.http.get("/api/v1/supervisor", headers=await console.as_user("sup-1"))).json()
    assert [b["handoff_id"] for b in body["breaches_today"]] == [late]
    assert body["breaches_today"][0]["unit_name"]
    # Closure has counted nothing (the fake answers so): no figure of the console's own.
    assert body["response_rate"] is None and body["rates"]["response"]["denominator"] == 0
    assert body["units"] == [] and body["time_to_report"] == []


async def test_supervisor_is_told_when_closures_figures_are_unavailable(tmp_path):
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("closure is down", request=request)

    async with running_console(tmp_path, reads=down) as console:
        answer = await console.http.get("/api/v1/supervisor", headers=await console.as_user("sup-1"))
        assert answer.status_code == 502 and "8004" in answer.json()["detail"]


# --- the live stream, over a real HTTP server ---------------------------------------------


@asynccontextmanager
async def served(app) -> AsyncIterator[str]:  # noqa: ANN001 - the FastAPI app
    """Serve an app (lifespan already running) on a free loopback port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def read_events(response: httpx.Response, count: int) -> list[tuple[int, dict]]:
    """The next `count` SSE messages (id, data) of an open stream."""
    events: list[tuple[int, dict]] = []
    current: dict[str, str] = {}
    async with asyncio.timeout(10):
        async for line in response.aiter_lines():
            if line == "":
                if "id" in current:
                    events.append((int(current["id"]), json.loads(current["data"])))
                    if len(events) == count:
                        return events
                current = {}
            elif not line.startswith(":") and ":" in line:
                name, _, value = line.partition(":")
                current[name] = value.strip()
    return events


async def test_stream_resumes_after_last_event_id_without_missing_or_repeating_a_change(console: Harness):
    async with served(console.app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        auth = await console.as_user("desk-S0101-1")
        first, _ = await console.whistle(HOME_GRID)  # 3 changes: reported, classified, dispatched
        await console.whistle(OTHER_DISTRICT_GRID, units=(("U-POL-P0200", "police", HandoffRole.LEAD),))  # not visible
        async with client.stream("GET", "/api/v1/stream", params={"after": 0}, headers=auth) as stream:
            seen = await read_events(stream, 3)
        assert [data["incident_id"] for _, data in seen] == [first] * 3
        # While the browser is away, more happens, visible and not.
        await console.whistle(OTHER_DISTRICT_GRID, units=(("U-POL-P0200", "police", HandoffRole.LEAD),))
        second, _ = await console.whistle(HOME_GRID)
        resume = {**auth, "Last-Event-ID": str(seen[-1][0])}
        async with client.stream("GET", "/api/v1/stream", params={"after": 0}, headers=resume) as stream:
            resumed = await read_events(stream, 3)
        ids = [seq for seq, _ in seen + resumed]
        assert ids == sorted(set(ids)), "ids must strictly increase across the reconnect"
        assert [data["incident_id"] for _, data in resumed] == [second] * 3
        assert [data["event_type"] for _, data in resumed] == ["IncidentReported", "IncidentClassified", "HandoffDispatched"]


async def test_stream_sends_a_change_that_commits_while_the_browser_is_listening(console: Harness):
    async with served(console.app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        auth = await console.as_user("P0001")
        async with client.stream("GET", "/api/v1/stream", headers=auth) as stream:
            pending = asyncio.create_task(read_events(stream, 1))
            await asyncio.sleep(0.1)  # let the stream reach its wait; not a deadline, just a yield
            await console.whistle(OTHER_DISTRICT_GRID, units=(("U-POL-P0200", "police", HandoffRole.LEAD),))
            incident_id, _ = await console.whistle(HOME_GRID)
            ((_, data),) = await pending
        # Visibility is judged when the change is sent: the other district's incident never shows.
        assert data["incident_id"] == incident_id


async def test_a_session_ends_when_its_token_expires(tmp_path):
    clock = FakeClock()
    async with running_console(tmp_path, clock=clock) as console:
        desk = await console.as_user("desk-S0101-1")
        ttl = console.app.state.runtime.settings.auth_token_ttl_seconds
        clock.advance(ttl - 1)
        assert (await console.http.get("/api/v1/me", headers=desk)).status_code == 200
        assert (await console.http.get("/api/v1/me")).status_code == 200  # the cookie: the same token
        clock.advance(1)
        for answer in (await console.http.get("/api/v1/me", headers=desk), await console.http.get("/api/v1/me")):
            assert answer.status_code == 401 and answer.json()["code"] == "token_expired"
