"""Subscribers that keep the console's read model, and its HTTP API: sign-in, views, actions, live stream.

Reads come from the console's own database; actions are forwarded to the owning service's HTTP
API with the signed-in user as actor. Every read and every action is checked here first, so the
web app is never the only guard.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from contracts.envelope import Envelope
from contracts.events import (
    DeadlineArmed,
    DeadlineBreached,
    DeadlineBreachWithdrawn,
    DeadlinePaused,
    DeadlineResumed,
    DeadlineWarned,
    DuplicateLinked,
    FeedbackGiven,
    HandoffAcknowledged,
    HandoffDeclined,
    HandoffDispatched,
    HandoffReassigned,
    HandoffReleased,
    HandoffResolved,
    IncidentClassified,
    IncidentClosed,
    IncidentEscalated,
    IncidentEscalatedToCommandCentre,
    IncidentReclassified,
    IncidentReopened,
    IncidentReported,
    IncidentResolved,
    IncidentVerified,
    ResponderOnScene,
)
from contracts.reference import ReferenceData
from contracts.topics import TopicSpec
from contracts.vocabulary import Category, DeadlineKind, DeclineReason, Disposition, Satisfaction, Urgency
from services.console import domain
from services.console import repository as repo
from services.console.auth import COOKIE_NAME, password_ok
from services.console.domain import Action, Forbidden, GroupBy, Principal, QueueFilter, Role, Scope
from services.console.settings import ConsoleSettings
from services.runtime import audit
from services.runtime.host import ServiceRuntime
from services.runtime.outbox import UnitOfWork

# --- the read model -------------------------------------------------------------------------


class ChangeSignal:
    """Wakes the live streams of this process when a change-log row has committed."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """A change committed: wake every waiting stream."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Wait for the next change, at most `timeout` seconds."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass


class Projection:
    """Applies every catalogue fact to the console's read model, timeline and change log."""

    def __init__(self, runtime: ServiceRuntime, city: ReferenceData, signal: ChangeSignal) -> None:
        self.runtime = runtime
        self.city = city
        self.signal = signal

    def handlers_by_topic(self, topics: tuple[TopicSpec, ...]) -> list[tuple[TopicSpec, dict]]:
        """One handler map per topic; every event type of the catalogue lands in the read model."""
        return [(spec, {event_type: self.apply for event_type in spec.events}) for spec in topics]

    async def apply(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """Project one fact, add it to the timeline and the change log."""
        data = envelope.data
        incident_id = envelope.subject
        conn, now = uow.conn, self.runtime.clock.now()
        await self._project(conn, incident_id, data, envelope.occurred_at)
        await repo.touch_incident(conn, incident_id, now)
        detail = data.model_dump(mode="json", exclude={"incident_id"})
        await repo.add_timeline(
            conn, event_id=str(envelope.id), incident_id=incident_id, at=envelope.occurred_at,
            event_type=envelope.type, detail=detail,
        )
        await repo.append_change(conn, incident_id=incident_id, event_type=envelope.type, at=now)
        uow.after_commit(self.signal.notify)

    def _area(self, grid_id: str | None) -> dict[str, Any]:
        district_id, station_id = domain.grid_area(self.city, grid_id)
        return {"grid_id": grid_id, "district_id": district_id, "station_id": station_id}

    async def _project(self, conn: Any, incident_id: str, data: Any, at: datetime) -> None:  # noqa: C901 - one case per fact
        now = self.runtime.clock.now()
        touch = repo.touch_incident
        match data:
            case IncidentReported():
                await touch(
                    conn, incident_id, now, **self._area(data.grid_id), reporter_id=data.reporter_id,
                    description=data.description, address=data.location.address, reported_at=data.reported_at,
                )
            case DuplicateLinked():
                await touch(conn, incident_id, now, duplicate_of=data.original_incident_id)
            case IncidentClassified():
                await touch(
                    conn, incident_id, now, **self._area(data.grid_id), category=data.category.value,
                    urgency=data.urgency.value, needs_review=data.needs_review,
                )
            case IncidentReclassified():
                await touch(conn, incident_id, now, category=data.category.value, urgency=data.urgency.value, needs_review=False)
            case HandoffDispatched():
                await touch(conn, incident_id, now, **self._area(data.grid_id), category=data.category.value, urgency=data.urgency.value)
                await repo.touch_handoff(
                    conn, data.handoff_id, incident_id, unit_id=data.unit_id, department=data.department,
                    role=data.role.value, escalation_level=data.escalation_level, dispatched_at=data.dispatched_at,
                    report_due_at=data.report_due_at,
                )
                await repo.set_handoff_state(conn, data.handoff_id, "dispatched", unless=_LATER_THAN_DISPATCHED)
            case HandoffAcknowledged():
                await repo.touch_handoff(
                    conn, data.handoff_id, incident_id, unit_id=data.unit_id, acknowledged_at=data.acknowledged_at,
                    acknowledged_by=data.actor_id, late=data.late,
                )
                await repo.set_handoff_state(conn, data.handoff_id, "acknowledged", unless=_ENDED | {"on_scene"})
            case HandoffDeclined():
                await repo.touch_handoff(conn, data.handoff_id, incident_id, decline_reason=data.reason_code.value, state="declined")
            case HandoffReassigned():
                await repo.touch_handoff(
                    conn, data.handoff_id, incident_id, successor_handoff_id=data.new_handoff_id, state="reassigned"
                )
            case ResponderOnScene():
                await repo.touch_handoff(conn, data.handoff_id, incident_id, on_scene_at=data.arrived_at)
                await repo.set_handoff_state(conn, data.handoff_id, "on_scene", unless=_ENDED)
            case HandoffResolved():
                await repo.touch_handoff(
                    conn, data.handoff_id, incident_id, resolved_at=data.resolved_at,
                    disposition=data.disposition.value, state="resolved",
                )
            case HandoffReleased():
                await repo.touch_handoff(conn, data.handoff_id, incident_id, state="released")
            case IncidentEscalated():
                await touch(conn, incident_id, now, escalation_level=data.level)
            case DeadlineArmed() | DeadlineResumed() if data.kind is DeadlineKind.REPORT and data.handoff_id:
                await repo.touch_handoff(conn, data.handoff_id, incident_id, report_due_at=data.due_at, paused=False)
            case DeadlineWarned() if data.kind is DeadlineKind.REPORT and data.handoff_id:
                await repo.touch_handoff(conn, data.handoff_id, incident_id, warned=True)
            case DeadlineBreached() if data.kind is DeadlineKind.REPORT and data.handoff_id:
                await repo.touch_handoff(conn, data.handoff_id, incident_id, breached=True, breached_at=data.fired_at)
            case DeadlineBreachWithdrawn() if data.kind is DeadlineKind.REPORT and data.handoff_id:
                # The unit reported in time; its acknowledgement only reached the timer late.
                await repo.touch_handoff(conn, data.handoff_id, incident_id, breached=False, breached_at=None)
            case DeadlinePaused() if data.kind is DeadlineKind.REPORT and data.handoff_id:
                await repo.touch_handoff(conn, data.handoff_id, incident_id, paused=True)
            case IncidentResolved():
                await touch(conn, incident_id, now, resolved_at=data.resolved_at)
            case IncidentVerified():
                await touch(conn, incident_id, now, verified_at=data.verified_at)
            case FeedbackGiven():
                await touch(conn, incident_id, now, satisfaction=data.satisfaction.value)
            case IncidentReopened():
                await conn.execute(
                    repo.incidents.update()
                    .where(repo.incidents.c.incident_id == incident_id)
                    .values(resolved_at=None, verified_at=None, reopen_count=data.reopen_count)
                )
            case IncidentEscalatedToCommandCentre():
                # Like a reopen: the refused outcome no longer stands; the command centre's lead
                # handoff arrives from routing.
                await conn.execute(
                    repo.incidents.update()
                    .where(repo.incidents.c.incident_id == incident_id)
                    .values(resolved_at=None, verified_at=None, command_centre_at=data.escalated_at)
                )
            case IncidentClosed():
                await touch(
                    conn, incident_id, now, closed_at=data.closed_at, outcome=data.outcome.value,
                    satisfaction=data.satisfaction.value if data.satisfaction else None,
                )


_ENDED = frozenset({"resolved", "declined", "reassigned", "released"})
_LATER_THAN_DISPATCHED = _ENDED | {"acknowledged", "on_scene"}


# --- views ----------------------------------------------------------------------------------


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def scope_of(incident: dict[str, Any], handoffs: list[dict[str, Any]]) -> Scope:
    """The access scope of an incident row and its handoffs."""
    return Scope(
        grid_id=incident.get("grid_id"),
        district_id=incident.get("district_id"),
        station_id=incident.get("station_id"),
        unit_ids=frozenset(h["unit_id"] for h in handoffs if h.get("unit_id")),
    )


class Views:
    """Read-side queries, always narrowed to what the principal may see."""

    def __init__(self, runtime: ServiceRuntime, city: ReferenceData) -> None:
        self.runtime = runtime
        self.city = city

    def unit_name(self, unit_id: str | None) -> str | None:
        """A unit's display name."""
        unit = self.city.unit(unit_id) if unit_id else None
        return unit.name if unit else unit_id

    def item(self, principal: Principal, incident: dict[str, Any], handoffs: list[dict[str, Any]]) -> dict[str, Any]:
        """One queue item: the incident with the handoffs this user may see."""
        shown = self._shown(principal, incident, handoffs)
        item = {k: _iso(v) for k, v in incident.items()}
        item["status"] = domain.incident_status(incident, [h.get("state") or "" for h in handoffs])
        due = domain.next_report_due(shown)
        item["next_report_due_at"] = _iso(due)
        item["breached"] = any(h["breached"] and h.get("state") == domain.AWAITING_REPORT for h in shown)
        item["warned"] = any(h["warned"] and h.get("state") == domain.AWAITING_REPORT for h in shown)
        item["ever_breached"] = any(h["breached"] for h in shown)
        item["handoffs"] = [
            {**{k: _iso(v) for k, v in h.items()}, "unit_name": self.unit_name(h.get("unit_id"))} for h in shown
        ]
        grid = self.city.grid(incident.get("grid_id") or "")
        item["grid_name"] = grid.name if grid else None
        item["group_keys"] = domain.group_keys(item)
        return item

    def group_name(self, by: GroupBy, key: str) -> str:
        """A group's display name (Chinese; the web app names groups itself in English)."""
        if by is GroupBy.DEPARTMENT:
            department = next((d for d in self.city.departments if d.code == key), None)
            return department.name if department else key
        if by is GroupBy.DISTRICT:
            return next((d.name for d in self.city.districts if d.id == key), key)
        return next((s.name for s in self.city.stations if s.id == key), key)

    async def queue(
        self,
        principal: Principal,
        *,
        open_only: bool = True,
        wanted: QueueFilter | None = None,
        group_by: GroupBy | None = None,
    ) -> dict[str, Any]:
        """The incidents this user may see, ordered by time left to breach, filtered and grouped if asked."""
        async with self.runtime.engine.connect() as conn:
            seq = await repo.last_change_seq(conn)  # read first: a later change is re-sent, never lost
            match principal.role:
                case Role.DISPATCHER:
                    rows = await repo.find_incidents(
                        conn, district_id=principal.district_id, station_id=principal.station_id, open_only=open_only
                    )
                case Role.RESPONDER:
                    rows = await repo.find_incidents(conn, unit_id=principal.unit_id, open_only=open_only)
                case Role.GRID_WORKER:
                    rows = await repo.find_incidents(conn, grid_ids=principal.grid_ids, open_only=open_only)
                case _:
                    rows = await repo.find_incidents(conn, open_only=open_only)
            handoffs = await repo.incident_handoffs(conn, [r["incident_id"] for r in rows])
        visible = [
            (r, handoffs[r["incident_id"]]) for r in rows if domain.can_see(principal, scope_of(r, handoffs[r["incident_id"]]))
        ]
        ordered = domain.order_queue(
            {**r, "next_report_due_at": domain.next_report_due(self._shown(principal, r, h)), "_h": h} for r, h in visible
        )
        items = [self.item(principal, {k: v for k, v in o.items() if k not in ("_h", "next_report_due_at")}, o["_h"]) for o in ordered]
        if wanted is not None:
            items = [item for item in items if domain.matches(item, wanted)]
        body: dict[str, Any] = {"seq": seq, "server_now": self.runtime.clock.now().isoformat(), "items": items}
        if group_by is not None:
            body["groups"] = [
                {"key": key, "name": self.group_name(group_by, key), "incident_ids": ids}
                for key, ids in domain.group_queue(items, group_by)
            ]
        return body

    def _shown(self, principal: Principal, incident: dict, handoffs: list[dict]) -> list[dict]:
        scope = scope_of(incident, handoffs)
        return [h for h in handoffs if domain.sees_handoff(principal, scope, h.get("unit_id") or "")]

    async def load(self, incident_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """An incident and its handoffs, 404 when the console has not seen it."""
        async with self.runtime.engine.connect() as conn:
            incident = await repo.get_incident(conn, incident_id)
            if incident is None:
                raise HTTPException(404, detail=f"incident {incident_id} not found")
            handoffs = (await repo.incident_handoffs(conn, [incident_id]))[incident_id]
        return incident, handoffs

    async def visible(self, principal: Principal, incident_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Like load, but 404 (not 403: do not confirm it exists) when the user may not see it."""
        incident, handoffs = await self.load(incident_id)
        if not domain.can_see(principal, scope_of(incident, handoffs)):
            raise HTTPException(404, detail=f"incident {incident_id} not found")
        return incident, handoffs

    async def detail(self, principal: Principal, incident_id: str) -> dict[str, Any]:
        """One incident with its full timeline (responders: only their unit's handoff facts)."""
        incident, handoffs = await self.visible(principal, incident_id)
        async with self.runtime.engine.connect() as conn:
            entries = await repo.incident_timeline(conn, incident_id)
        item = self.item(principal, incident, handoffs)
        if principal.role is Role.RESPONDER:
            mine = {h["handoff_id"] for h in item["handoffs"]}
            entries = [e for e in entries if e["detail"].get("handoff_id") in (None, *mine)]
        item["timeline"] = [{**e, "at": _iso(e["at"])} for e in entries]
        return item


# --- requests -------------------------------------------------------------------------------


class SignIn(BaseModel):
    """User id and password."""

    user_id: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)


class LocationIn(BaseModel):
    """Where, as the grid worker's phone gives it."""

    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    address: str | None = Field(default=None, max_length=300)


class RaiseIncident(BaseModel):
    """A grid worker's report; the reporter is the signed-in user."""

    grid_id: str = Field(min_length=1, max_length=64)
    description: str = Field(min_length=1, max_length=2000)
    address: str | None = Field(default=None, max_length=300)
    category_hint: Category | None = None


class Reclassify(BaseModel):
    """A dispatcher's correction."""

    category: Category
    urgency: Urgency
    reason: str = Field(min_length=1, max_length=500)


class Reassign(BaseModel):
    """Move a handoff to another unit."""

    to_unit_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="", max_length=500)


class Summon(BaseModel):
    """Add a department to the whistle (增派部门)."""

    department: str = Field(min_length=1, max_length=40)
    reason: str = Field(min_length=1, max_length=500)


class Escalate(BaseModel):
    """Hand a handoff up to the district command centre."""

    reason: str = Field(min_length=1, max_length=500)


class Decline(BaseModel):
    """Refuse with a reason code."""

    reason_code: DeclineReason
    reason_text: str = Field(default="", max_length=500)


class Resolve(BaseModel):
    """Finish with a disposition."""

    disposition: Disposition
    note: str = Field(default="", max_length=2000)


class Verify(BaseModel):
    """Confirm or reject the outcome on site."""

    confirmed: bool
    reason: str = Field(default="", max_length=500)


class Feedback(BaseModel):
    """The reporter's satisfaction."""

    satisfaction: Satisfaction
    comment: str = Field(default="", max_length=1000)


# --- the API --------------------------------------------------------------------------------


class Upstream:
    """The owning services' HTTP APIs; the console only ever writes through them."""

    def __init__(self, settings: ConsoleSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.timeout = settings.upstream_timeout_seconds
        self.transport = transport

    async def get_json(self, base: str, path: str, params: dict[str, str] | None = None, *, token: str) -> Any:
        """Read from an owner's API as the signed-in user; 502 when it cannot answer."""
        try:
            async with httpx.AsyncClient(timeout=self.timeout, transport=self.transport) as client:
                answer = await client.get(base.rstrip("/") + path, params=params or {}, headers=_bearer(token))
            answer.raise_for_status()
            return answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise HTTPException(502, detail=f"{base} did not answer {path}: {type(exc).__name__}") from exc

    async def post(
        self, base: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None, *, token: str
    ) -> Response:
        """Forward a command with the user's token; pass the owner's answer (status and body) back to the browser."""
        try:
            async with httpx.AsyncClient(timeout=self.timeout, transport=self.transport) as client:
                answer = await client.post(base.rstrip("/") + path, json=body, headers={**(headers or {}), **_bearer(token)})
        except httpx.HTTPError as exc:
            return JSONResponse({"detail": f"{base} is unavailable: {type(exc).__name__}"}, status_code=502)
        return Response(answer.content, status_code=answer.status_code, media_type=answer.headers.get("content-type"))


def _bearer(token: str) -> dict[str, str]:
    # The owner checks the same token again: the console's own checks are for the screen only.
    return {"Authorization": f"Bearer {token}"}


HEADLINE_RATES = ("response", "resolution", "satisfaction", "on_time_report")


def supervisor_figures(
    overall_rows: list[dict[str, Any]], unit_rows: list[dict[str, Any]], unit_name: Callable[[str | None], str | None]
) -> dict[str, Any]:
    """The supervisor page's figures from closure's KPI rows (`dimension=all` and `dimension=unit`)."""
    overall = overall_rows[0] if overall_rows else {}
    rates = {
        name: overall.get(f"{name}_rate", {"numerator": 0, "denominator": 0, "rate": None}) for name in HEADLINE_RATES
    }
    units = [
        {
            "unit_id": row["group"],
            "unit_name": unit_name(row["group"]),
            "summoned": row["handoffs_dispatched"],
            "due": row["handoffs_due"],
            "reported": row["response_rate"]["numerator"],
            "on_time": row["on_time_report_rate"]["numerator"],
            "breached": row["report_breaches"],
            "on_time_report_rate": row["on_time_report_rate"]["rate"],
        }
        for row in unit_rows
    ]
    return {
        "rates": rates,
        **{f"{name}_rate": ratio["rate"] for name, ratio in rates.items()},
        "units": units,
    }


def sse_frame(seq: int, data: dict[str, Any]) -> str:
    """One Server-Sent Events message: its id is the change-log sequence number."""
    return f"id: {seq}\nevent: change\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def api_router(
    runtime: ServiceRuntime,
    settings: ConsoleSettings,
    city: ReferenceData,
    signal: ChangeSignal,
    current: Callable[..., Principal],
    upstream: Upstream,
) -> APIRouter:
    """Sign-in, the views of each role, the actions, and the live stream."""
    router = APIRouter(prefix="/api/v1", tags=["console"])
    views = Views(runtime, city)

    def token_of(request: Request, _user: Principal = Depends(current)) -> str:
        """The signed-in user's token, forwarded to the backends."""
        return request.state.token

    @router.post(
        "/login",
        summary="Sign in; the access token (accepted by every service) comes back as an HttpOnly cookie and in the body",
    )
    async def login(body: SignIn, response: Response) -> dict[str, Any]:
        audit.note(target=f"user:{body.user_id}"[:200])
        principal = domain.principal_for(
            body.user_id, city, supervisors=settings.auth_supervisors, admins=settings.auth_admins
        )
        if principal is None or not password_ok(body.password, settings.demo_password):
            raise HTTPException(401, detail="unknown user or wrong password")
        audit.note_principal(principal)
        token = runtime.auth.codec.issue(principal)
        ttl = settings.auth_token_ttl_seconds
        response.set_cookie(
            COOKIE_NAME, token, max_age=ttl, httponly=True, samesite="strict", secure=settings.cookie_secure, path="/",
        )
        return {"token": token, "user": principal.as_dict(), "expires_in": ttl}

    @router.post("/logout", summary="Forget the session cookie")
    async def logout(response: Response) -> dict[str, str]:
        response.delete_cookie(COOKIE_NAME, path="/")
        return {"status": "signed out"}

    @router.get("/me", summary="The signed-in user and their area")
    async def me(user: Principal = Depends(current)) -> dict[str, Any]:
        body = user.as_dict()
        if user.unit_id:
            unit = city.unit(user.unit_id)
            body["unit_name"] = unit.name if unit else None
        return body

    @router.get("/reference", summary="Districts, stations, departments and units for filters and forms")
    async def reference(user: Principal = Depends(current)) -> dict[str, Any]:
        return {
            "districts": [{"id": d.id, "name": d.name, "command_centre_unit_id": d.command_centre_unit_id} for d in city.districts],
            "stations": [{"id": s.id, "name": s.name, "district_id": s.district_id} for s in city.stations],
            "departments": [{"code": d.code, "name": d.name, "name_en": d.name_en} for d in city.departments],
            "units": [
                {"id": u.id, "name": u.name, "department": u.department, "district_id": u.district_id}
                for u in city.units
                if u.kind != "community_police" or user.role in (Role.DISPATCHER, Role.ADMIN)
            ],
            "grids": [{"id": g, "name": city.grid(g).name} for g in sorted(user.grid_ids)],
        }

    @router.get("/queue", summary="Incidents visible to the user, ordered by time left to breach; filters and groups")
    async def queue(
        user: Principal = Depends(current),
        include_closed: bool = False,
        district_id: str | None = Query(default=None, max_length=32),
        station_id: str | None = Query(default=None, max_length=32),
        department: str | None = Query(default=None, max_length=40),
        urgency: Urgency | None = None,
        status: str | None = Query(default=None, max_length=20),
        group_by: GroupBy | None = None,
    ) -> dict[str, Any]:
        wanted = QueueFilter(district_id, station_id, department, urgency.value if urgency else None, status)
        return await views.queue(user, open_only=not include_closed, wanted=wanted, group_by=group_by)

    @router.get("/incidents/{incident_id}", summary="One incident with its timeline")
    async def incident(incident_id: str, user: Principal = Depends(current)) -> dict[str, Any]:
        return await views.detail(user, incident_id)

    @router.get("/supervisor", summary="Closure's KPIs: the three rates, on-time report rate per unit, today's breaches, time to report")
    async def supervisor(
        user: Principal = Depends(current),
        tz: str = Query(default="Asia/Shanghai", max_length=64),
        token: str = Depends(token_of),
    ) -> dict[str, Any]:
        if user.role not in (Role.SUPERVISOR, Role.ADMIN):
            raise HTTPException(403, detail="supervisors only")
        try:
            zone = ZoneInfo(tz)
        except (KeyError, ValueError) as exc:
            raise HTTPException(422, detail=f"unknown time zone {tz}") from exc
        now = runtime.clock.now()
        midnight = datetime.combine(now.astimezone(zone).date(), time(0), tzinfo=zone)
        # The rates are closure's KPIs, read from its API: one definition for the page, the CSV
        # export and the gauges. Only the list of today's breaches comes from the read model.
        kpis = settings.closure_url
        overall = await upstream.get_json(kpis, "/api/v1/kpis", {"dimension": "all"}, token=token)
        per_unit = await upstream.get_json(kpis, "/api/v1/kpis", {"dimension": "unit"}, token=token)
        today = await upstream.get_json(
            kpis, "/api/v1/kpis", {"dimension": "kind", "from": midnight.isoformat()}, token=token
        )
        time_to_report = await upstream.get_json(kpis, "/api/v1/kpis/time-to-report", token=token)
        async with runtime.engine.connect() as conn:
            breaches = await repo.breaches_since(conn, midnight)
        return {
            **supervisor_figures(overall["rows"], per_unit["rows"], views.unit_name),
            "breaches_today_by_kind": {row["group"]: row["breaches"]["total"] for row in today["rows"]},
            "breaches_today": [
                {"handoff_id": b["handoff_id"], "incident_id": b["incident_id"], "unit_id": b["unit_id"],
                 "unit_name": views.unit_name(b["unit_id"]), "breached_at": _iso(b["breached_at"])}
                for b in breaches
            ],
            "time_to_report": time_to_report["buckets"],
            "day_starts_at": midnight.isoformat(),
            "as_of": overall.get("as_of"),
        }

    # --- actions ----------------------------------------------------------------------------

    async def check_incident(user: Principal, incident_id: str, action: Action) -> dict[str, Any]:
        incident, handoffs = await views.visible(user, incident_id)
        try:
            domain.authorize(user, action, scope_of(incident, handoffs))
        except Forbidden as exc:
            raise HTTPException(403, detail=str(exc)) from exc
        return incident

    async def check_handoff(user: Principal, handoff_id: str, action: Action) -> dict[str, Any]:
        async with runtime.engine.connect() as conn:
            handoff = await repo.get_handoff(conn, handoff_id)
        if handoff is None:
            raise HTTPException(404, detail=f"handoff {handoff_id} not found")
        incident, handoffs = await views.visible(user, handoff["incident_id"])
        scope = scope_of(incident, handoffs)
        if not domain.sees_handoff(user, scope, handoff.get("unit_id") or ""):
            raise HTTPException(404, detail=f"handoff {handoff_id} not found")
        try:
            domain.authorize(user, action, scope, handoff_unit_id=handoff.get("unit_id"))
        except Forbidden as exc:
            raise HTTPException(403, detail=str(exc)) from exc
        return handoff

    @router.post("/incidents", status_code=202, summary="Raise an incident (上报) as the signed-in grid worker")
    async def raise_incident(
        body: RaiseIncident,
        user: Principal = Depends(current), token: str = Depends(token_of),
        idempotency_key: str = Header(alias="Idempotency-Key", min_length=1, max_length=128),
    ) -> Response:
        try:
            domain.authorize(user, Action.REPORT, Scope(body.grid_id, None, None))
        except Forbidden as exc:
            raise HTTPException(403, detail=str(exc)) from exc
        grid = city.grid(body.grid_id)
        report = {
            "grid_id": body.grid_id,
            "reporter_id": user.user_id,
            "description": body.description,
            "location": {"latitude": grid.latitude, "longitude": grid.longitude, "address": body.address},
        }
        if body.category_hint:
            report["category_hint"] = body.category_hint.value
        # Scoped by user so one user's key can never replay another's report.
        key = str(uuid.uuid5(uuid.NAMESPACE_URL, f"console:{user.user_id}:{idempotency_key}"))
        return await upstream.post(settings.intake_url, "/api/v1/incidents", report, {"Idempotency-Key": key}, token=token)

    @router.post("/incidents/{incident_id}/reclassify", summary="Correct category and urgency (dispatchers)")
    async def reclassify(incident_id: str, body: Reclassify, user: Principal = Depends(current), token: str = Depends(token_of)) -> Response:
        await check_incident(user, incident_id, Action.RECLASSIFY)
        return await upstream.post(
            settings.classification_url, f"/api/v1/incidents/{incident_id}/reclassify",
            {"actor_id": user.user_id, **body.model_dump(mode="json")}, token=token,
        )

    @router.post("/incidents/{incident_id}/summon", summary="Add a department to the whistle (dispatchers)")
    async def summon(incident_id: str, body: Summon, user: Principal = Depends(current), token: str = Depends(token_of)) -> Response:
        await check_incident(user, incident_id, Action.SUMMON)
        return await upstream.post(
            settings.routing_url, f"/api/v1/incidents/{incident_id}/summon",
            {"actor_id": user.user_id, **body.model_dump(mode="json")}, token=token,
        )

    @router.post("/incidents/{incident_id}/verification", summary="Confirm or reject the outcome (grid worker)")
    async def verify(incident_id: str, body: Verify, user: Principal = Depends(current), token: str = Depends(token_of)) -> Response:
        await check_incident(user, incident_id, Action.VERIFY)
        return await upstream.post(
            settings.closure_url, f"/api/v1/incidents/{incident_id}/verification",
            {"actor_id": user.user_id, **body.model_dump(mode="json")}, token=token,
        )

    @router.post("/incidents/{incident_id}/feedback", summary="Satisfaction (grid worker)")
    async def feedback(incident_id: str, body: Feedback, user: Principal = Depends(current), token: str = Depends(token_of)) -> Response:
        await check_incident(user, incident_id, Action.FEEDBACK)
        return await upstream.post(
            settings.closure_url, f"/api/v1/incidents/{incident_id}/feedback",
            {"actor_id": user.user_id, **body.model_dump(mode="json")}, token=token,
        )

    async def handoff_command(user: Principal, token: str, handoff_id: str, action: Action, path: str, body: dict) -> Response:
        await check_handoff(user, handoff_id, action)
        return await upstream.post(
            settings.routing_url, f"/api/v1/handoffs/{handoff_id}/{path}", {"actor_id": user.user_id, **body}, token=token
        )

    @router.post("/handoffs/{handoff_id}/acknowledge", summary="Report for duty (报到)")
    async def acknowledge(handoff_id: str, user: Principal = Depends(current), token: str = Depends(token_of)) -> Response:
        return await handoff_command(user, token, handoff_id, Action.ACKNOWLEDGE, "acknowledge", {})

    @router.post("/handoffs/{handoff_id}/decline", summary="Refuse with a reason code")
    async def decline(handoff_id: str, body: Decline, user: Principal = Depends(current), token: str = Depends(token_of)) -> Response:
        return await handoff_command(user, token, handoff_id, Action.DECLINE, "decline", body.model_dump(mode="json"))

    @router.post("/handoffs/{handoff_id}/on-scene", summary="Arrived on scene")
    async def on_scene(handoff_id: str, user: Principal = Depends(current), token: str = Depends(token_of)) -> Response:
        return await handoff_command(user, token, handoff_id, Action.ON_SCENE, "on-scene", {})

    @router.post("/handoffs/{handoff_id}/resolve", summary="Finish with a disposition (处置)")
    async def resolve(handoff_id: str, body: Resolve, user: Principal = Depends(current), token: str = Depends(token_of)) -> Response:
        return await handoff_command(user, token, handoff_id, Action.RESOLVE, "resolve", body.model_dump(mode="json"))

    @router.post("/handoffs/{handoff_id}/reassign", summary="Move a handoff to another unit (dispatchers)")
    async def reassign(handoff_id: str, body: Reassign, user: Principal = Depends(current), token: str = Depends(token_of)) -> Response:
        return await handoff_command(user, token, handoff_id, Action.REASSIGN, "reassign", body.model_dump(mode="json"))

    @router.post("/handoffs/{handoff_id}/escalate", summary="Hand the handoff to the district command centre")
    async def escalate(handoff_id: str, body: Escalate, user: Principal = Depends(current), token: str = Depends(token_of)) -> Response:
        handoff = await check_handoff(user, handoff_id, Action.ESCALATE)
        incident, _ = await views.load(handoff["incident_id"])
        district = next((d for d in city.districts if d.id == incident.get("district_id")), None)
        if district is None:
            raise HTTPException(409, detail="the incident's district is not known yet")
        # An escalation by hand is a reassignment to the owner of last resort (兜底), keeping the deadline.
        return await upstream.post(
            settings.routing_url, f"/api/v1/handoffs/{handoff_id}/reassign",
            {"actor_id": user.user_id, "to_unit_id": district.command_centre_unit_id, "reason": f"escalated: {body.reason}"[:500]},
            token=token,
        )

    # --- live stream ------------------------------------------------------------------------

    @router.get("/stream", summary="Server-Sent Events: one message per change visible to the user, resumable")
    async def stream(
        request: Request,
        user: Principal = Depends(current),
        after: int | None = Query(default=None, ge=0, description="start after this seq (first connect)"),
        last_event_id: str | None = Header(default=None, alias="Last-Event-ID"),
    ) -> StreamingResponse:
        if last_event_id is not None and last_event_id.isdigit():
            start = int(last_event_id)  # a reconnect: resume exactly where the browser stopped
        elif after is not None:
            start = after
        else:
            async with runtime.engine.connect() as conn:
                start = await repo.last_change_seq(conn)
        return StreamingResponse(
            change_stream(runtime, views, signal, settings, user, start, request.is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router


async def visible_changes(
    runtime: ServiceRuntime, views: Views, user: Principal, after: int, limit: int = 500
) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """Changes after `after` that the user may see, and the last seq examined."""
    async with runtime.engine.connect() as conn:
        rows = await repo.changes_after(conn, after, limit)
        ids = {r["incident_id"] for r in rows}
        incidents = {i: await repo.get_incident(conn, i) for i in ids}
        handoffs = await repo.incident_handoffs(conn, ids)
    out = []
    for r in rows:
        incident = incidents.get(r["incident_id"])
        if incident and domain.can_see(user, scope_of(incident, handoffs[r["incident_id"]])):
            out.append((r["seq"], {"seq": r["seq"], "incident_id": r["incident_id"], "event_type": r["event_type"]}))
    return out, (rows[-1]["seq"] if rows else after)


async def change_stream(
    runtime: ServiceRuntime,
    views: Views,
    signal: ChangeSignal,
    settings: ConsoleSettings,
    user: Principal,
    after: int,
    disconnected: Callable[[], Any],
) -> AsyncIterator[str]:
    """SSE body: every visible change after `after`, in seq order, then waits for more."""
    yield "retry: 2000\n\n"
    cursor = after
    idle = 0.0
    while not await disconnected():
        batch, cursor = await visible_changes(runtime, views, user, cursor)
        for seq, data in batch:
            yield sse_frame(seq, data)
        if batch:
            idle = 0.0
            continue
        await signal.wait(settings.stream_poll_seconds)
        idle += settings.stream_poll_seconds
        if idle >= settings.stream_keepalive_seconds:
            idle = 0.0
            yield ": keep-alive\n\n"
