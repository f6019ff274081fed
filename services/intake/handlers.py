"""Subscribers that build the grid worker's view, and the JSON API: envelope in -> domain -> state out.

The projection is fed by four topics whose relative order is not guaranteed, so every handler
upserts and keeps the further-along fact: a handoff state never moves back, a newer classification
or closure fact wins by event time, and status is computed from the facts at read time.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from prometheus_client import Histogram

from contracts.envelope import Envelope
from contracts.events import (
    DeadlineArmed,
    DeadlineBreached,
    DeadlineBreachWithdrawn,
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
    IncidentReclassified,
    IncidentEscalatedToCommandCentre,
    IncidentReopened,
    IncidentResolved,
    IncidentVerified,
    ResponderOnScene,
    VerificationRejected,
)
from contracts.topics import CLASSIFICATION_DECISIONS, CLOSURE_OUTCOMES, ROUTING_HANDOFFS, SLA_DEADLINES, TopicSpec
from contracts.vocabulary import DeadlineKind, HandoffRole, HandoffState
from services.intake import repository as repo
from services.intake.domain import (
    CLOSURE_STATUS_BY_EVENT,
    advance_handoff_state,
    canonical_body_hash,
    should_replace,
    timeline_summary,
)
from services.intake.duplicates import DuplicateLinker
from services.intake.reporting import (
    IdempotencyConflict,
    IncidentReader,
    ReportDesk,
    ReportIncident,
    ReportRejected,
    key_scope_of_user,
)
from services.runtime.access import STAFF, Action, acting_as, can_see, forbidden, require, sees_handoff
from services.runtime.auth import Principal
from services.runtime.consumer import Handler
from services.runtime.host import ServiceRuntime
from services.runtime.outbox import UnitOfWork

REPLAY_HEADER = "Idempotent-Replayed"
# Deeper pages are no one's own reports any more; the bound also keeps the offset a database integer.
MAX_LIST_OFFSET = 10_000


async def _append_timeline(uow: UnitOfWork, envelope: Envelope) -> None:
    await repo.append_timeline(
        uow.conn,
        event_id=str(envelope.id),
        incident_id=envelope.data.incident_id,  # type: ignore[attr-defined]
        at=envelope.occurred_at,
        type=envelope.type,
        summary=timeline_summary(envelope.data),
    )


# --- classification -------------------------------------------------------------------------


async def on_classification(uow: UnitOfWork, envelope: Envelope) -> None:
    """IncidentClassified / IncidentReclassified: the newest decision by event time wins."""
    decision: IncidentClassified | IncidentReclassified = envelope.data  # type: ignore[assignment]
    row = await repo.lock_progress(uow.conn, decision.incident_id)
    values: dict[str, Any] = {}
    if should_replace(row.classified_at, envelope.occurred_at):
        values.update(category=decision.category.value, urgency=decision.urgency.value, classified_at=envelope.occurred_at)
    if isinstance(decision, IncidentClassified) and (row.priority is None or "category" in values):
        values["priority"] = decision.priority
    if values:
        await repo.update_progress(uow.conn, decision.incident_id, **values)
    await _append_timeline(uow, envelope)


def linking_duplicates(project_decision: Handler, linker: DuplicateLinker) -> Handler:
    """Wrap the classification projection so a decided category also links probable duplicates."""

    async def handle(uow: UnitOfWork, envelope: Envelope) -> None:
        await project_decision(uow, envelope)
        await linker.after_classification(uow, envelope)

    handle.__doc__ = project_decision.__doc__
    return handle


# --- handoffs -------------------------------------------------------------------------------


async def _move_handoff(uow: UnitOfWork, handoff_id: str, incident_id: str, observed: HandoffState, **values: Any) -> Any:
    row = await repo.lock_handoff(uow.conn, handoff_id, incident_id, observed.value)
    state = advance_handoff_state(HandoffState(row.state), observed)
    await repo.update_handoff(uow.conn, handoff_id, state=state.value, **values)
    return row


async def on_handoff_dispatched(uow: UnitOfWork, envelope: Envelope) -> None:
    """A unit was summoned: its details and report deadline (the dispatch is authoritative for them)."""
    event: HandoffDispatched = envelope.data  # type: ignore[assignment]
    await _move_handoff(
        uow,
        event.handoff_id,
        event.incident_id,
        HandoffState.DISPATCHED,
        unit_id=event.unit_id,
        department=event.department,
        role=event.role.value,
        dispatched_at=event.dispatched_at,
        report_due_at=event.report_due_at,
        escalation_level=event.escalation_level,
    )
    await _append_timeline(uow, envelope)


def observing_report_to_dispatch(project_dispatch: Handler, histogram: Histogram) -> Handler:
    """Wrap the dispatch projection so the whistle's first lead dispatch observes report -> dispatch time."""

    async def handle(uow: UnitOfWork, envelope: Envelope) -> None:
        await project_dispatch(uow, envelope)
        event: HandoffDispatched = envelope.data  # type: ignore[assignment]
        first_dispatch = (
            event.role is HandoffRole.LEAD
            and event.escalation_level == 0
            and event.bounce_count == 0
            and event.replaces_handoff_id is None
        )
        if not first_dispatch:
            return
        incident = await repo.get_incident(uow.conn, event.incident_id)
        if incident is not None:
            seconds = max((event.dispatched_at - incident.reported_at).total_seconds(), 0.0)
            uow.after_commit(lambda: histogram.observe(seconds))

    return handle


async def on_handoff_acknowledged(uow: UnitOfWork, envelope: Envelope) -> None:
    """The unit reported for duty (报到)."""
    event: HandoffAcknowledged = envelope.data  # type: ignore[assignment]
    row = await repo.lock_handoff(uow.conn, event.handoff_id, event.incident_id, HandoffState.ACKNOWLEDGED.value)
    state = advance_handoff_state(HandoffState(row.state), HandoffState.ACKNOWLEDGED)
    await repo.update_handoff(
        uow.conn,
        event.handoff_id,
        state=state.value,
        unit_id=row.unit_id or event.unit_id,
        acknowledged_at=row.acknowledged_at or event.acknowledged_at,
        late=bool(row.late) or event.late,
    )
    await _append_timeline(uow, envelope)


def _simple_handoff_fact(observed: HandoffState) -> Handler:
    async def handle(uow: UnitOfWork, envelope: Envelope) -> None:
        event = envelope.data
        row = await repo.lock_handoff(uow.conn, event.handoff_id, event.incident_id, observed.value)  # type: ignore[attr-defined]
        state = advance_handoff_state(HandoffState(row.state), observed)
        unit_id = getattr(event, "unit_id", None) or getattr(event, "from_unit_id", None)
        await repo.update_handoff(uow.conn, row.handoff_id, state=state.value, unit_id=row.unit_id or unit_id)
        await _append_timeline(uow, envelope)

    handle.__doc__ = f"Move the handoff to {observed.value} (never backwards)."
    return handle


async def on_incident_escalated(uow: UnitOfWork, envelope: Envelope) -> None:
    """The incident climbed the escalation ladder."""
    event: IncidentEscalated = envelope.data  # type: ignore[assignment]
    await repo.record_escalation(
        uow.conn,
        incident_id=event.incident_id,
        level=event.level,
        unit_id=event.unit_id,
        reason=event.reason,
        trigger_handoff_id=event.trigger_handoff_id,
        escalated_at=envelope.occurred_at,
    )
    await _append_timeline(uow, envelope)


# --- deadlines ------------------------------------------------------------------------------


async def on_deadline_armed(uow: UnitOfWork, envelope: Envelope) -> None:
    """A report deadline fills in the handoff's due time if the dispatch has not arrived yet."""
    event: DeadlineArmed = envelope.data  # type: ignore[assignment]
    if event.handoff_id is not None and event.kind is DeadlineKind.REPORT:
        row = await repo.lock_handoff(uow.conn, event.handoff_id, event.incident_id, HandoffState.DISPATCHED.value)
        await repo.update_handoff(
            uow.conn,
            event.handoff_id,
            report_due_at=row.report_due_at or event.due_at,
            unit_id=row.unit_id or event.unit_id,
        )
    await _append_timeline(uow, envelope)


async def on_deadline_breached(uow: UnitOfWork, envelope: Envelope) -> None:
    """A deadline passed: the handoff is marked breached (and late when it was the report deadline)."""
    event: DeadlineBreached = envelope.data  # type: ignore[assignment]
    if event.handoff_id is not None:
        row = await repo.lock_handoff(uow.conn, event.handoff_id, event.incident_id, HandoffState.DISPATCHED.value)
        await repo.update_handoff(
            uow.conn,
            event.handoff_id,
            breached=True,
            late=bool(row.late) or event.kind is DeadlineKind.REPORT,
            unit_id=row.unit_id or event.unit_id,
        )
    await _append_timeline(uow, envelope)


async def on_breach_withdrawn(uow: UnitOfWork, envelope: Envelope) -> None:
    """A report breach was withdrawn (the unit reported in time): the handoff is neither breached nor late."""
    event: DeadlineBreachWithdrawn = envelope.data  # type: ignore[assignment]
    if event.handoff_id is not None and event.kind is DeadlineKind.REPORT:
        await repo.lock_handoff(uow.conn, event.handoff_id, event.incident_id, HandoffState.DISPATCHED.value)
        await repo.update_handoff(uow.conn, event.handoff_id, breached=False, late=False)
    await _append_timeline(uow, envelope)


# --- closure --------------------------------------------------------------------------------


async def on_closure_step(uow: UnitOfWork, envelope: Envelope) -> None:
    """Resolved, verified, rejected or reopened: the newest such fact by event time sets the status."""
    incident_id: str = envelope.data.incident_id  # type: ignore[attr-defined]
    row = await repo.lock_progress(uow.conn, incident_id)
    if should_replace(row.closure_status_at, envelope.occurred_at):
        await repo.update_progress(
            uow.conn,
            incident_id,
            closure_status=CLOSURE_STATUS_BY_EVENT[envelope.type],
            closure_status_at=envelope.occurred_at,
        )
    await _append_timeline(uow, envelope)


async def on_feedback_given(uow: UnitOfWork, envelope: Envelope) -> None:
    """The reporter's satisfaction (回访); the newest feedback wins."""
    event: FeedbackGiven = envelope.data  # type: ignore[assignment]
    row = await repo.lock_progress(uow.conn, event.incident_id)
    if should_replace(row.satisfaction_at, envelope.occurred_at):
        await repo.update_progress(
            uow.conn, event.incident_id, satisfaction=event.satisfaction.value, satisfaction_at=envelope.occurred_at
        )
    await _append_timeline(uow, envelope)


async def on_incident_closed(uow: UnitOfWork, envelope: Envelope) -> None:
    """The loop is closed; closed is final for the status whatever arrives after it."""
    event: IncidentClosed = envelope.data  # type: ignore[assignment]
    row = await repo.lock_progress(uow.conn, event.incident_id)
    values: dict[str, Any] = {"outcome": event.outcome.value, "closed_at": event.closed_at}
    if event.satisfaction is not None and row.satisfaction is None:
        values["satisfaction"] = event.satisfaction.value
    await repo.update_progress(uow.conn, event.incident_id, **values)
    await _append_timeline(uow, envelope)


def projection_handlers() -> list[tuple[TopicSpec, str, dict[str, Handler]]]:
    """Per consumed topic: the topic, the subscription purpose, and the handlers keyed by event type."""
    return [
        (
            CLASSIFICATION_DECISIONS,
            "classification",
            {
                IncidentClassified.event_type: on_classification,
                IncidentReclassified.event_type: on_classification,
            },
        ),
        (
            ROUTING_HANDOFFS,
            "handoffs",
            {
                HandoffDispatched.event_type: on_handoff_dispatched,
                HandoffAcknowledged.event_type: on_handoff_acknowledged,
                HandoffDeclined.event_type: _simple_handoff_fact(HandoffState.DECLINED),
                HandoffReassigned.event_type: _simple_handoff_fact(HandoffState.REASSIGNED),
                ResponderOnScene.event_type: _simple_handoff_fact(HandoffState.ON_SCENE),
                HandoffResolved.event_type: _simple_handoff_fact(HandoffState.RESOLVED),
                HandoffReleased.event_type: _simple_handoff_fact(HandoffState.RELEASED),
                IncidentEscalated.event_type: on_incident_escalated,
            },
        ),
        (
            SLA_DEADLINES,
            "deadlines",
            {
                DeadlineArmed.event_type: on_deadline_armed,
                DeadlineBreached.event_type: on_deadline_breached,
                DeadlineBreachWithdrawn.event_type: on_breach_withdrawn,
            },
        ),
        (
            CLOSURE_OUTCOMES,
            "closure",
            {
                IncidentResolved.event_type: on_closure_step,
                IncidentVerified.event_type: on_closure_step,
                VerificationRejected.event_type: on_closure_step,
                IncidentReopened.event_type: on_closure_step,
                IncidentEscalatedToCommandCentre.event_type: on_closure_step,
                FeedbackGiven.event_type: on_feedback_given,
                IncidentClosed.event_type: on_incident_closed,
            },
        ),
    ]


# --- HTTP -----------------------------------------------------------------------------------


def links_for(incident_id: str) -> dict[str, str]:
    """Where to follow an incident."""
    return {
        "self": f"/api/v1/incidents/{incident_id}",
        "open311": f"/open311/v2/requests/{incident_id}.json",
    }


def api_router(runtime: ServiceRuntime, desk: ReportDesk, reader: IncidentReader) -> APIRouter:
    """The grid worker's API: report an incident, follow it, list own reports (a bearer token on every route)."""
    router = APIRouter(prefix="/api/v1", tags=["intake"])
    caller = Depends(runtime.auth.principal)
    areas = runtime.areas

    @router.post(
        "/incidents",
        status_code=202,
        summary="Report an incident (上报) as the grid worker of the grid; answered once it is durably stored",
        responses={
            403: {"description": "not the grid worker of this grid, or reporter_id names someone else"},
            409: {"description": "Idempotency-Key reused with a different body"},
        },
    )
    async def report_incident(
        request: Request,
        report: ReportIncident,
        idempotency_key: str | None = Header(default=None, alias="Idempotency-Key", min_length=1, max_length=128),
        principal: Principal = caller,
    ) -> JSONResponse:
        reporter = acting_as(principal, report.reporter_id, "reporter_id")
        if areas.city.grid(report.grid_id) is not None:  # an unknown grid is the desk's 422, not a 403
            require(principal, Action.REPORT, areas.of_grid(report.grid_id))
        report = report.model_copy(update={"reporter_id": reporter})
        # The reporter is part of what the key stands for: another user's retry never replays this one.
        body_hash = canonical_body_hash({**(await request.json()), "reporter_id": reporter})
        try:
            submission = await desk.submit(
                report, body_hash=body_hash, idempotency_key=idempotency_key,
                key_scope=key_scope_of_user(principal.user_id), channel="api",
            )
        except ReportRejected as rejected:
            return JSONResponse({"detail": rejected.errors}, status_code=422)
        except IdempotencyConflict as conflict:
            return JSONResponse({"detail": str(conflict)}, status_code=409)
        content = {
            "incident_id": submission.incident_id,
            "status": "reported",
            "links": links_for(submission.incident_id),
        }
        headers = {REPLAY_HEADER: "true"} if submission.replayed else {}
        return JSONResponse(content, status_code=202, headers=headers)

    @router.get(
        "/incidents/{incident_id}",
        summary="Follow one incident: classification, handoffs, closure (its reporter, grid worker, units, dispatchers, staff)",
    )
    async def get_incident(incident_id: str, principal: Principal = caller) -> Any:
        view = await reader.detail(incident_id)
        if view is None:
            return JSONResponse({"detail": f"incident {incident_id!r} not found"}, status_code=404)
        return visible_view(principal, view)

    @router.get("/incidents", summary="A reporter's own reports, newest first (another reporter's: supervisors and admins)")
    async def list_incidents(
        reporter_id: str | None = Query(default=None, min_length=1, max_length=64, description="default: the signed-in user"),
        limit: int = Query(default=20, ge=1, le=100),
        offset: int = Query(default=0, ge=0, le=MAX_LIST_OFFSET),
        principal: Principal = caller,
    ) -> dict[str, Any]:
        reporter = reporter_id or principal.user_id
        if reporter != principal.user_id and principal.role not in STAFF:
            raise forbidden(f"{principal.user_id} may list only their own reports")
        items = await reader.summaries(reporter_id=reporter, limit=limit, offset=offset)
        return {"items": items, "limit": limit, "offset": offset}

    def visible_view(principal: Principal, view: dict[str, Any]) -> dict[str, Any]:
        """The view if the caller may see it (a responder sees only their unit's handoffs); else 403."""
        scope = areas.of_grid(view["grid_id"], [h["unit_id"] for h in view["handoffs"]])
        if view["reporter_id"] != principal.user_id and not can_see(principal, scope):
            raise forbidden(f"{principal.user_id} may not see incident {view['incident_id']}")
        view["handoffs"] = [h for h in view["handoffs"] if sees_handoff(principal, scope, h["unit_id"] or "")]
        return view

    return router
