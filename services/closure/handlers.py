"""Subscribers and HTTP routes of closure: envelope or command in -> domain call -> events out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from contracts.commands import GiveFeedback, VerifyIncident
from contracts.envelope import Envelope, Event, correlation_for, follow_up, make_envelope
from contracts.events import (
    HandoffAcknowledged,
    HandoffDeclined,
    HandoffDispatched,
    HandoffReassigned,
    HandoffReleased,
    HandoffResolved,
    IncidentClassified,
    IncidentEscalated,
    IncidentReclassified,
    IncidentReported,
    ResponderOnScene,
)
from contracts.reference import ReferenceData
from contracts.topics import CLASSIFICATION_DECISIONS, INTAKE_INCIDENTS, ROUTING_HANDOFFS, TopicSpec
from contracts.vocabulary import Satisfaction
from services.closure import repository as repo
from services.closure.domain import (
    ActorNotPermitted,
    BrokenLink,
    IncidentClosure,
    InvalidClosureCommand,
    WrongClosureState,
    first_broken_link,
)
from services.closure.metrics import ClosureMetrics
from services.closure.settings import ClosureSettings
from services.runtime.access import Action, Forbidden, acting_as, authorize, can_see, forbidden
from services.runtime.auth import Principal, Role
from services.runtime.consumer import Handler
from services.runtime.host import ServiceRuntime
from services.runtime.http import problem
from services.runtime.outbox import UnitOfWork

SOURCE = "closure"

# What closure listens to, per topic; every one of these lands in the incident's timeline.
CONSUMED: tuple[tuple[TopicSpec, str, tuple[type[Event], ...]], ...] = (
    (INTAKE_INCIDENTS, "intake", (IncidentReported,)),
    (CLASSIFICATION_DECISIONS, "classification", (IncidentClassified, IncidentReclassified)),
    (
        ROUTING_HANDOFFS,
        "routing",
        (
            HandoffDispatched,
            HandoffAcknowledged,
            ResponderOnScene,
            HandoffResolved,
            HandoffReleased,
            HandoffDeclined,
            HandoffReassigned,
            IncidentEscalated,
        ),
    ),
)


def fact_handler(runtime: ServiceRuntime) -> Handler:
    """The one handler for every consumed fact: record it, settle readiness, extend the timeline."""

    async def on_fact(uow: UnitOfWork, envelope: Envelope) -> None:
        fact = envelope.data
        closure = await repo.lock_closure(uow.conn, fact.incident_id)  # type: ignore[attr-defined]
        now = runtime.clock.now()
        caused = [follow_up(envelope, event, source=SOURCE, occurred_at=now) for event in closure.apply(fact)]
        await repo.save_closure(uow.conn, closure)
        await repo.append_to_timeline(uow.conn, closure.incident_id, [envelope, *caused])
        await uow.emit(*caused)

    return on_fact


def closure_view(closure: IncidentClosure) -> dict[str, Any]:
    """The public view of an incident's closure (the reporter's id stays private)."""
    return {
        "incident_id": closure.incident_id,
        "status": closure.status.value,
        "grid_id": closure.grid_id,
        "category": closure.category,
        "urgency": closure.urgency,
        "disposition": closure.disposition,
        "resolved_at": closure.resolved_at,
        "verified_by": closure.verified_by,
        "verified_at": closure.verified_at,
        "reopen_count": closure.reopen_count,
        "outcome": closure.outcome,
        "satisfaction": closure.satisfaction,
        "escalated_to_command_centre": closure.escalated,
        "closed_at": closure.closed_at,
        "ready_for_verification": closure.is_ready_for_verification(),
        "handoffs": [
            {
                "handoff_id": h.handoff_id,
                "role": h.role,
                "unit_id": h.unit_id,
                "department": h.department,
                "state": h.state,
                "counts": h.counts,
                "disposition": h.disposition,
                "resolved_at": h.resolved_at,
            }
            for h in sorted(closure.handoffs.values(), key=lambda h: h.seen_order)
        ],
    }


class VerifyBody(BaseModel):
    """Confirm or reject the outcome (核查); the actor is the signed-in user."""

    model_config = ConfigDict(extra="forbid")
    actor_id: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="Optional. The actor comes from the bearer token; a different id here is refused (403).",
    )
    confirmed: bool
    reason: str = Field(default="", max_length=500)


class FeedbackBody(BaseModel):
    """The reporter's satisfaction (回访); the actor is the signed-in user."""

    model_config = ConfigDict(extra="forbid")
    actor_id: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="Optional. The actor comes from the bearer token; a different id here is refused (403).",
    )
    satisfaction: Satisfaction
    comment: str = Field(default="", max_length=1000)


def command_router(
    runtime: ServiceRuntime, settings: ClosureSettings, reference: ReferenceData, metrics: ClosureMetrics
) -> APIRouter:
    """HTTP: verification and feedback commands, closure status and the timeline (a bearer token on every route)."""
    router = APIRouter(prefix="/api/v1", tags=["closure"])
    caller = Depends(runtime.auth.principal)

    def scope_of(closure: IncidentClosure):  # noqa: ANN202 - a runtime.access Scope
        return runtime.areas.of_grid(closure.grid_id, [h.unit_id or "" for h in closure.handoffs.values()])

    def allowed(principal: Principal, action: Action, closure: IncidentClosure) -> None:
        """The reporter, or whoever the access rules allow (the grid's worker; to verify, a supervisor)."""
        if principal.user_id == closure.reporter_id:
            return
        try:
            authorize(principal, action, scope_of(closure))
        except Forbidden as exc:
            raise forbidden(str(exc)) from None

    def visible(principal: Principal, closure: IncidentClosure) -> None:
        if principal.user_id != closure.reporter_id and not can_see(principal, scope_of(closure)):
            raise forbidden(f"{principal.user_id} may not see incident {closure.incident_id}")

    async def run_command(incident_id: str, principal: Principal, action: Action, decide: Callable[..., list[Event]]) -> Any:
        async with runtime.unit_of_work() as uow:
            closure = await repo.find_closure(uow.conn, incident_id, for_update=True)
            if closure is None:
                raise HTTPException(404, detail=f"closure has not heard of incident {incident_id}")
            allowed(principal, action, closure)
            grid = reference.grid(closure.grid_id) if closure.grid_id else None
            now = runtime.clock.now()
            try:
                events = decide(closure, grid_worker_ids=grid.grid_worker_ids if grid else (), now=now)
            except ActorNotPermitted as refused:
                raise HTTPException(403, detail=str(refused)) from None
            except WrongClosureState as refused:
                raise HTTPException(409, detail=str(refused)) from None
            except InvalidClosureCommand as refused:
                return JSONResponse(problem(["body", "reason"], str(refused), "missing_reason"), status_code=422)
            if events:
                envelopes = _chain(incident_id, events, now)
                await repo.save_closure(uow.conn, closure)
                await repo.append_to_timeline(uow.conn, incident_id, envelopes)
                await uow.emit(*envelopes)
                await runtime.audit.accepted(uow, reason=", ".join(e.event_type for e in events))
        metrics.count(events)
        return closure_view(closure)

    @router.post(
        "/incidents/{incident_id}/verification",
        summary="Confirm or reject the outcome (核查): the reporter, a grid worker of the grid, or a supervisor",
    )
    async def verify(incident_id: str, body: VerifyBody, principal: Principal = caller) -> Any:
        command = VerifyIncident(actor_id=acting_as(principal, body.actor_id), confirmed=body.confirmed, reason=body.reason)
        # A supervisor is one by their token's role (the issuer's GW_AUTH_SUPERVISORS).
        supervisors = (principal.user_id,) if principal.role is Role.SUPERVISOR else ()
        return await run_command(
            incident_id,
            principal,
            Action.VERIFY,
            lambda closure, **context: closure.verify(
                command, max_reopens=settings.max_reopens, supervisor_ids=supervisors, **context
            ),
        )

    @router.post("/incidents/{incident_id}/feedback", summary="The reporter's satisfaction (回访): the reporter or a grid worker of the grid")
    async def feedback(incident_id: str, body: FeedbackBody, principal: Principal = caller) -> Any:
        command = GiveFeedback(
            actor_id=acting_as(principal, body.actor_id), satisfaction=body.satisfaction, comment=body.comment
        )
        return await run_command(
            incident_id,
            principal,
            Action.FEEDBACK,
            lambda closure, **context: closure.give_feedback(command, max_reopens=settings.max_reopens, **context),
        )

    @router.get("/incidents/{incident_id}", summary="Closure status, handoffs, reopens and outcome (who may see the incident)")
    async def get_closure(incident_id: str, principal: Principal = caller) -> dict[str, Any]:
        async with runtime.engine.connect() as conn:
            closure = await repo.find_closure(conn, incident_id)
        if closure is None:
            raise HTTPException(404, detail=f"closure has not heard of incident {incident_id}")
        visible(principal, closure)
        return closure_view(closure)

    @router.get("/incidents/{incident_id}/timeline", summary="The append-only, hash-chained timeline (who may see the incident)")
    async def get_timeline(incident_id: str, principal: Principal = caller) -> dict[str, Any]:
        async with runtime.engine.connect() as conn:
            closure = await repo.find_closure(conn, incident_id)
            entries = await repo.timeline_of(conn, incident_id)
            head = await repo.head_of_timeline(conn, incident_id)
        if not entries and head is None:
            raise HTTPException(404, detail=f"no timeline for incident {incident_id}")
        if closure is None:
            # A chain without its closure row: only staff may look (it is what verify_chain inspects).
            if principal.role not in (Role.SUPERVISOR, Role.ADMIN):
                raise forbidden(f"{principal.user_id} may not see incident {incident_id}")
        else:
            visible(principal, closure)
        broken = (
            first_broken_link(entries, head)
            if head is not None
            else BrokenLink(incident_id, len(entries), "no anchored head for this chain")
        )
        return {
            "incident_id": incident_id,
            "chain": "intact" if broken is None else f"broken at seq {broken.seq}: {broken.reason}",
            "head": {"length": head.length, "hash": head.hash} if head else None,
            "entries": [
                {
                    "seq": e.seq,
                    "at": e.at,
                    "event_type": e.event_type,
                    "event_id": e.event_id,
                    "summary": e.summary,
                    "prev_hash": e.prev_hash,
                    "hash": e.hash,
                }
                for e in entries
            ],
        }

    return router


def _chain(incident_id: str, events: list[Event], now: datetime) -> list[Envelope]:
    """Envelopes for one command's events, each caused by the one before (rejection -> reopen)."""
    envelopes: list[Envelope] = []
    for event in events:
        if envelopes:
            envelopes.append(follow_up(envelopes[-1], event, source=SOURCE, occurred_at=now))
        else:
            envelopes.append(
                make_envelope(
                    event, source=SOURCE, subject=incident_id, occurred_at=now, correlation_id=correlation_for(incident_id)
                )
            )
    return envelopes
