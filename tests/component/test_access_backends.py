"""Each forbidden action tried against each backend's API directly, as the console never would.

No token, an expired one, one signed with another secret, one whose claims were edited, the wrong
role, someone else's grid, unit or area, a body naming another actor: every attempt is refused
with 401/403 and a JSON error, changes nothing in the service's database, and leaves exactly one
`access_audit` row saying who tried what and that it was refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from contracts.vocabulary import Category, Urgency
from services.classification.app import create_app as create_classification
from services.classification.settings import ClassificationSettings
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.runtime.auth import DEV_OPEN311_API_KEY
from services.runtime.clock import FakeClock
from tests.component.test_closure_service import Incident
from tests.component.test_closure_service import make_app as closure_app
from tests.component.test_routing_service import new_incident, running_routing
from tests.component.test_sla_timer_harness import dispatched, new_ids, settings_for
from tests.component.test_sla_timer_harness import running as running_sla
from tests.support import as_user, audit_rows, bearer, mint_token, outbox_envelopes, publish, reported, running, token_for, wait_for

OTHER_SECRET = "the-secret-of-another-deployment-0123456789"
REPORT = {
    "grid_id": "G0001",
    "description": "楼下有人打架，有人流血",
    "location": {"latitude": 28.10795, "longitude": 112.932143, "address": "幸福路8号"},
}


def forged(token: str, **claims: Any) -> str:
    """The token with its claims rewritten (e.g. role admin) and its old signature kept."""
    signature = token.rsplit(".", 1)[1]
    payload = base64.urlsafe_b64encode(json.dumps({"v": 1, **claims}).encode()).rstrip(b"=").decode()
    return f"{payload}.{signature}"


def bad_credentials(app: Any, user: str) -> dict[str, tuple[dict[str, str], str, str]]:
    """Ways to be refused before any rule is looked at: headers, expected code, audited actor."""
    now = app.state.runtime.clock.now()
    genuine = token_for(app, user)
    return {
        "no token": ({}, "token_missing", ""),
        "expired token": (bearer(token_for(app, user, ttl_seconds=600, issued_at=now - timedelta(minutes=11))), "token_expired", user),
        "other secret": (bearer(mint_token(user, secret=OTHER_SECRET, clock=app.state.runtime.clock)), "token_invalid", ""),
        "claims edited": (bearer(forged(genuine, sub=user, role="admin", iat=0, exp=2**40)), "token_invalid", ""),
        "not a token": ({"Authorization": "Bearer not-a-token"}, "token_invalid", ""),
    }


async def state_of(app: Any) -> dict[str, list[str]]:
    """Every row of every table but the audit trails (and the relay's published_at, which moves by itself)."""
    runtime = app.state.runtime
    out: dict[str, list[str]] = {}
    async with runtime.engine.connect() as conn:
        for name, table in sorted(runtime.metadata.tables.items()):
            if "audit" in name:
                continue
            columns = [c for c in table.c if not (name == "outbox" and c.name == "published_at")]
            out[name] = sorted(repr(tuple(row)) for row in (await conn.execute(select(*columns))).all())
    return out


async def settled(app: Any, quiet_for: float = 0.3, timeout: float = 20.0) -> None:
    """Wait until the service's consumers are done with what the setup published (the state holds still)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = await state_of(app)
    while loop.time() < deadline:
        await asyncio.sleep(quiet_for)
        now = await state_of(app)
        if now == last:
            return
        last = now
    raise AssertionError("the service kept changing its state")


async def refused(
    app: Any,
    client: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    headers: dict[str, str],
    status: int,
    code: str | None,
    actor: str,
    **request: Any,
) -> httpx.Response:
    """Try one request; it must be refused, change nothing and leave one refused audit row naming `actor`."""
    before, audited = await state_of(app), len(await audit_rows(app))
    response = await client.request(method, path, headers=headers, **request)
    assert response.status_code == status, (path, headers, response.text)
    if code is not None:
        assert response.json()["code"] == code, response.text
    assert await state_of(app) == before, f"{method} {path} changed state"
    rows = await audit_rows(app)
    assert len(rows) == audited + 1, rows[audited:]
    row = rows[-1]
    assert (row["outcome"], row["status"], row["actor"], row["request"]) == ("refused", status, actor, f"{method} {path}")
    assert row["reason"], row
    return response


async def refused_for_everyone_but(
    app: Any, client: httpx.AsyncClient, method: str, path: str, *, rightful: str, others: dict[str, str], **request: Any
) -> None:
    """Bad credentials of the rightful user (401), then every other user (403 with the given code)."""
    for headers, code, actor in bad_credentials(app, rightful).values():
        await refused(app, client, method, path, headers=headers, status=401, code=code, actor=actor, **request)
    for user, code in others.items():
        await refused(app, client, method, path, headers=as_user(app, user), status=403, code=code, actor=user, **request)


def accepted_row(rows: list[dict[str, Any]], actor: str, role: str, action: str) -> dict[str, Any]:
    """The one accepted audit row of `actor` doing `action`."""
    [row] = [r for r in rows if r["outcome"] == "accepted" and r["actor"] == actor and r["action"] == action]
    assert row["role"] == role
    return row


# --- intake ---------------------------------------------------------------------------------------


async def test_intake_takes_reports_only_from_the_grids_worker_and_shows_them_only_to_who_may_see(tmp_path):
    app = create_intake(IntakeSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/intake.db"), clock=FakeClock())
    async with running(app, signed=False) as client:
        others = {
            "W0002": "forbidden",  # another grid's worker
            "P0001": "forbidden",  # a responder
            "desk-S0101-1": "forbidden",  # a dispatcher
            "admin": "forbidden",  # admins see everything but report nothing
        }
        await settled(app)
        await refused_for_everyone_but(app, client, "POST", "/api/v1/incidents", rightful="W0001", others=others, json=REPORT)
        await refused(
            app, client, "POST", "/api/v1/incidents", json={**REPORT, "reporter_id": "W0002"},
            headers=as_user(app, "W0001"), status=403, code="actor_mismatch", actor="W0001",
        )
        assert await outbox_envelopes(app) == []

        answer = await client.post("/api/v1/incidents", json=REPORT, headers=as_user(app, "W0001"))
        assert answer.status_code == 202, answer.text
        incident = answer.json()["incident_id"]
        row = accepted_row(await audit_rows(app, f"incident:{incident}"), "W0001", "grid_worker", "report_incident")
        assert row["status"] == 202

        path = f"/api/v1/incidents/{incident}"
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, headers=as_user(app, "W0002"))).status_code == 403
        assert (await client.get(path, headers=as_user(app, "desk-S0102-1"))).status_code == 403
        assert (await client.get(path, headers=as_user(app, "desk-S0101-1"))).status_code == 200
        mine = await client.get("/api/v1/incidents", params={"reporter_id": "W0001"}, headers=as_user(app, "W0002"))
        assert mine.status_code == 403


async def test_open311_needs_a_configured_api_key_to_file_and_a_key_or_staff_token_to_read(tmp_path):
    settings = IntakeSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/intake.db", open311_api_keys={"k-city": "city-app"})
    app = create_intake(settings, clock=FakeClock())
    form = {"service_code": "noise", "lat": "28.12", "long": "112.92", "description": "广场舞噪音", "attribute[reporter_id]": "W0001"}
    async with running(app, signed=False) as client:
        path = "/open311/v2/requests.json"
        await settled(app)
        without = await refused(app, client, "POST", path, headers={}, status=401, code=None, actor="", data=form)
        assert without.json()[0]["code"] == 401  # the GeoReport error shape
        await refused(app, client, "POST", path, headers={}, status=403, code=None, actor="", data={**form, "api_key": "guess"})
        # A bearer token is no api_key: a grid worker files through the JSON API.
        await refused(app, client, "POST", path, headers=as_user(app, "W0001"), status=401, code=None, actor="", data=form)

        created = await client.post(path, data={**form, "api_key": "k-city"})
        assert created.status_code == 201, created.text
        request_id = created.json()[0]["service_request_id"]
        accepted_row(await audit_rows(app), "city-app", "integration", "create_request")
        # The demo key is for dev mode only; this app has it (tests run in dev mode), a configured one too.
        assert (await client.get(path, params={"api_key": DEV_OPEN311_API_KEY})).status_code == 200

        one = f"/open311/v2/requests/{request_id}.json"
        assert (await client.get(one)).status_code == 401
        assert (await client.get(one, params={"api_key": "guess"})).status_code == 403
        assert (await client.get(one, headers=as_user(app, "W0001"))).status_code == 403
        assert (await client.get(one, headers=as_user(app, "sup-1"))).status_code == 200
        assert (await client.get("/open311/v2/services.json")).status_code == 200  # the public catalogue


# --- classification ------------------------------------------------------------------------------


async def test_classification_lets_only_a_dispatcher_of_the_area_reclassify(tmp_path):
    settings = ClassificationSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/classification.db")
    app = create_classification(settings, clock=FakeClock())
    async with running(app, signed=False) as client:
        report = reported("小区垃圾堆放很臭")  # grid G0001: district D01, station S0101
        await publish(app, report)
        await wait_for(lambda: outbox_envelopes(app))
        await settled(app)
        path = f"/api/v1/incidents/{report.subject}/reclassify"
        body = {"category": "fire", "urgency": "urgent", "reason": "有烟"}
        others = {
            "W0001": "forbidden",  # the grid's worker
            "P0001": "forbidden",  # a responder
            "sup-1": "forbidden",  # supervisors watch
            "desk-S0102-1": "forbidden",  # another station of the district
            "cmd-D02-1": "forbidden",  # another district
        }
        await refused_for_everyone_but(app, client, "POST", path, rightful="cmd-D01-1", others=others, json=body)
        await refused(
            app, client, "POST", path, json={**body, "actor_id": "cmd-D01-2"}, headers=as_user(app, "cmd-D01-1"),
            status=403, code="actor_mismatch", actor="cmd-D01-1",
        )
        decision = f"/api/v1/incidents/{report.subject}/classification"
        assert (await client.get(decision, headers=as_user(app, "W0002"))).status_code == 403
        assert (await client.get("/api/v1/review-queue", headers=as_user(app, "W0001"))).status_code == 403

        done = await client.post(path, json=body, headers=as_user(app, "desk-S0101-1"))
        assert done.status_code == 202, done.text
        accepted_row(await audit_rows(app, f"incident:{report.subject}"), "desk-S0101-1", "dispatcher", "reclassify")
        assert (await client.get(decision, headers=as_user(app, "W0001"))).json()["decided_by"] == "desk-S0101-1"


# --- routing -------------------------------------------------------------------------------------


async def test_routing_lets_only_the_summoned_unit_act_and_dispatchers_of_the_area_move_or_summon(tmp_path):
    async with running_routing(f"sqlite+aiosqlite:///{tmp_path / 'routing.db'}") as harness:
        app = harness.app
        incident = new_incident()
        await harness.classify(incident, Category.VIOLENCE, Urgency.URGENT)  # G0001: police lead, health co-op
        handoff = (await harness.handoff_of(incident, "U-POL-P0001"))["handoff_id"]
        await settled(app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://routing") as client:
            others = {
                "health-D01-1": "forbidden",  # summoned too, but another unit
                "W0001": "forbidden",  # the grid's worker
                "desk-S0101-1": "forbidden",  # a dispatcher of the area is no member of the unit
                "admin": "forbidden",
            }
            for action in ("acknowledge", "on-scene"):
                await refused_for_everyone_but(
                    app, client, "POST", f"/api/v1/handoffs/{handoff}/{action}", rightful="P0001", others=others
                )
            await refused(
                app, client, "POST", f"/api/v1/handoffs/{handoff}/decline", json={"reason_code": "no_capacity"},
                headers=as_user(app, "health-D01-1"), status=403, code=None, actor="health-D01-1",
            )
            await refused(
                app, client, "POST", f"/api/v1/handoffs/{handoff}/acknowledge", json={"actor_id": "A00011"},
                headers=as_user(app, "P0001"), status=403, code="actor_mismatch", actor="P0001",
            )
            move = {"to_unit_id": "U-HOUSING-D01", "reason": "a building"}
            await refused_for_everyone_but(
                app, client, "POST", f"/api/v1/handoffs/{handoff}/reassign", rightful="desk-S0101-1",
                others={"P0001": None, "desk-S0102-1": None, "cmd-D02-1": None, "sup-1": None}, json=move,
            )
            summon = {"department": "civil_affairs", "reason": "an old man lives alone"}
            await refused_for_everyone_but(
                app, client, "POST", f"/api/v1/incidents/{incident}/summon", rightful="cmd-D01-1",
                others={"W0001": None, "desk-S0102-1": None, "cmd-D02-1": None}, json=summon,
            )
            assert (await client.get(f"/api/v1/handoffs/{handoff}", headers=as_user(app, "health-D01-1"))).status_code == 403
            assert (await client.get("/api/v1/units/U-POL-P0001/queue", headers=as_user(app, "health-D01-1"))).status_code == 403
            assert (await client.get("/api/v1/units/U-POL-P0001/queue", headers=as_user(app, "desk-S0102-1"))).status_code == 403
            assert (await client.get("/api/v1/command-centres/D01/queue", headers=as_user(app, "cmd-D02-1"))).status_code == 403
            assert (await client.get("/api/v1/departments/health/queue", headers=as_user(app, "desk-S0101-1"))).status_code == 403

            done = await client.post(f"/api/v1/handoffs/{handoff}/acknowledge", headers=as_user(app, "A00011"))
            assert done.status_code == 200 and done.json()["acknowledged_by"] == "A00011", done.text
            accepted_row(await audit_rows(app, f"handoff:{handoff}"), "A00011", "responder", "acknowledge")
            # Admins dispatch anywhere, as the console lets them.
            summoned = await client.post(f"/api/v1/incidents/{incident}/summon", json=summon, headers=as_user(app, "admin"))
            assert summoned.status_code == 200 and summoned.json()["unit_id"] == "U-CIVIL_AFFAIRS-D01", summoned.text
            accepted_row(await audit_rows(app, f"incident:{incident}"), "admin", "admin", "summon")


# --- sla_timer -----------------------------------------------------------------------------------


async def test_sla_timer_lets_only_a_dispatcher_of_the_area_pause_or_resume(tmp_path):
    clock = FakeClock()
    async with running_sla(settings_for(tmp_path / "sla.db"), clock) as sla:
        app = sla.app
        incident, handoff = new_ids()
        await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)  # U-POL-P0001, S0101
        [row] = (await sla.http.get("/api/v1/deadlines", params={"incident_id": incident})).json()
        await settled(app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sla") as client:
            others = {
                "P0001": "forbidden",  # the summoned unit itself
                "W0001": "forbidden",
                "sup-1": "forbidden",
                "desk-S0102-1": "forbidden",  # another station
                "cmd-D02-1": "forbidden",  # another district
            }
            pause = f"/api/v1/deadlines/{row['id']}/pause"
            await refused_for_everyone_but(app, client, "POST", pause, rightful="desk-S0101-1", others=others, json={"reason": "flood"})
            await refused(
                app, client, "POST", pause, json={"reason": "flood", "actor_id": "desk-S0101-2"},
                headers=as_user(app, "desk-S0101-1"), status=403, code="actor_mismatch", actor="desk-S0101-1",
            )
            reads = f"/api/v1/deadlines/{row['id']}"
            assert (await client.get(reads, headers=as_user(app, "health-D01-1"))).status_code == 403
            assert (await client.get("/api/v1/deadlines", params={"incident_id": incident}, headers=as_user(app, "cmd-D02-1"))).status_code == 403

            paused = await client.post(pause, json={"reason": "flood"}, headers=as_user(app, "desk-S0101-1"))
            assert paused.status_code == 200 and paused.json()["paused_by"] == "desk-S0101-1", paused.text
            accepted_row(await audit_rows(app, f"deadline:{row['id']}"), "desk-S0101-1", "dispatcher", "pause")
            resume = f"/api/v1/deadlines/{row['id']}/resume"
            await refused_for_everyone_but(app, client, "POST", resume, rightful="cmd-D01-1", others=others)
            assert (await sla.emitted("DeadlineResumed")) == []


# --- closure -------------------------------------------------------------------------------------


async def test_closure_lets_only_the_reporter_the_grids_worker_or_a_supervisor_verify(tmp_path):
    app, clock = closure_app(tmp_path)
    async with running(app, signed=False) as client:
        incident = Incident(app, clock)
        await incident.resolved_by_the_lead()  # grid G0001, reported by W0002 through the city app
        await settled(app)
        verification = f"/api/v1/incidents/{incident.id}/verification"
        others = {
            "W0003": "forbidden",  # another grid's worker
            "cmd-D01-1": "forbidden",  # dispatchers do not verify
            "P0001": "forbidden",
            "admin": "forbidden",
        }
        await refused_for_everyone_but(
            app, client, "POST", verification, rightful="W0001", others=others, json={"confirmed": True}
        )
        await refused(
            app, client, "POST", verification, json={"confirmed": True, "actor_id": "sup-1"},
            headers=as_user(app, "W0001"), status=403, code="actor_mismatch", actor="W0001",
        )
        feedback = f"/api/v1/incidents/{incident.id}/feedback"
        await refused(
            app, client, "POST", feedback, json={"satisfaction": "satisfied"}, headers=as_user(app, "sup-1"),
            status=403, code="forbidden", actor="sup-1",
        )
        assert (await client.get(f"/api/v1/incidents/{incident.id}/timeline", headers=as_user(app, "W0003"))).status_code == 403
        assert (await client.get("/api/v1/kpis", headers=as_user(app, "cmd-D01-1"))).status_code == 403
        assert (await client.get("/api/v1/kpis", headers=as_user(app, "sup-1"))).status_code == 200

        done = await client.post(verification, json={"confirmed": True}, headers=as_user(app, "sup-1"))
        assert done.status_code == 200 and done.json()["verified_by"] == "sup-1", done.text
        accepted_row(await audit_rows(app, f"incident:{incident.id}"), "sup-1", "supervisor", "verify")
