"""Subscribers and HTTP commands of classification: envelope in -> domain call -> events out."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

from contracts.commands import ReclassifyIncident
from contracts.envelope import Envelope, correlation_for, follow_up, make_envelope
from contracts.events import IncidentClassified, IncidentReclassified, IncidentReported
from contracts.vocabulary import Category, Urgency
from services.classification import repository as repo
from services.classification.domain import Classifier
from services.runtime.access import STAFF, Action, acting_as, forbidden, in_area, require, require_visible
from services.runtime.auth import Principal, Role
from services.runtime.host import ServiceRuntime
from services.runtime.outbox import UnitOfWork

SOURCE = "classification"


def event_handlers(runtime: ServiceRuntime, classifier: Classifier) -> dict:
    """Handlers for the intake topic, keyed by event type."""

    classified = Counter(
        "gridwhistle_classification_incidents_classified_total",
        "Incidents classified by the rules, by category and urgency.",
        ["category", "urgency"],
        registry=runtime.metrics.registry,
    )

    async def on_incident_reported(uow: UnitOfWork, envelope: Envelope) -> None:
        report: IncidentReported = envelope.data  # type: ignore[assignment]
        decision = classifier.classify(report.description, report.category_hint)
        now = runtime.clock.now()
        stored = await repo.save_decision(
            uow.conn,
            incident_id=report.incident_id,
            grid_id=report.grid_id,
            category=decision.category.value,
            urgency=decision.urgency.value,
            priority=decision.priority,
            confidence=decision.confidence,
            needs_review=decision.needs_review,
            classifier_version=decision.version,
            decided_by="classifier",
            decided_at=now,
        )
        if not stored:
            return  # the same incident re-reported under a new event id: one decision only
        uow.after_commit(classified.labels(decision.category.value, decision.urgency.value).inc)
        await uow.emit(
            follow_up(
                envelope,
                IncidentClassified(
                    incident_id=report.incident_id,
                    grid_id=report.grid_id,
                    category=decision.category,
                    urgency=decision.urgency,
                    priority=decision.priority,
                    confidence=decision.confidence,
                    rules_fired=list(decision.rules_fired),
                    needs_review=decision.needs_review,
                    classifier_version=decision.version,
                ),
                source=SOURCE,
                occurred_at=now,
            )
        )

    return {IncidentReported.event_type: on_incident_reported}


class ReclassifyBody(BaseModel):
    """Correct category and urgency, with a reason; the actor is the signed-in dispatcher."""

    model_config = ConfigDict(extra="forbid")
    actor_id: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="Optional. The actor comes from the bearer token; a different id here is refused (403).",
    )
    category: Category
    urgency: Urgency
    reason: str = Field(min_length=1, max_length=500)


def command_router(runtime: ServiceRuntime) -> APIRouter:
    """HTTP commands: a dispatcher of the incident's area reclassifies it (a bearer token on every route)."""
    router = APIRouter(prefix="/api/v1", tags=["classification"])
    caller = Depends(runtime.auth.principal)

    @router.get("/incidents/{incident_id}/classification", summary="Current triage decision")
    async def get_classification(incident_id: str, principal: Principal = caller) -> dict:
        async with runtime.engine.connect() as conn:
            row = await repo.get_decision(conn, incident_id)
        if row is None:
            raise HTTPException(404, detail=f"incident {incident_id} has not been classified")
        require_visible(principal, runtime.areas.of_grid(row.grid_id), f"incident {incident_id}")
        return dict(row._mapping)

    @router.get("/review-queue", summary="Decisions awaiting a dispatcher's review (人工复核): those of the dispatcher's area")
    async def review_queue(limit: int = Query(100, ge=1, le=500), principal: Principal = caller) -> dict:
        if principal.role not in STAFF and principal.role is not Role.DISPATCHER:
            raise forbidden(f"the review queue is for dispatchers; {principal.user_id} is {principal.role.value}")
        async with runtime.engine.connect() as conn:
            rows = await repo.list_needing_review(conn, limit=limit)
        mine = [r for r in rows if principal.role in STAFF or in_area(principal, runtime.areas.of_grid(r.grid_id))]
        return {"incidents": [dict(row._mapping) for row in mine]}

    @router.post("/incidents/{incident_id}/reclassify", status_code=202, summary="Correct category/urgency (a dispatcher of the area)")
    async def reclassify(incident_id: str, body: ReclassifyBody, principal: Principal = caller) -> dict:
        command = ReclassifyIncident(actor_id=acting_as(principal, body.actor_id), **body.model_dump(exclude={"actor_id"}))
        async with runtime.unit_of_work() as uow:
            row = await repo.get_decision(uow.conn, incident_id)
            if row is None:
                raise HTTPException(404, detail=f"incident {incident_id} has not been classified")
            require(principal, Action.RECLASSIFY, runtime.areas.of_grid(row.grid_id))
            if row.category == command.category.value and row.urgency == command.urgency.value:
                if row.needs_review:
                    # The dispatcher confirmed the machine's decision: reviewed, nothing to re-route.
                    await repo.confirm_decision(uow.conn, incident_id, decided_by=command.actor_id)
                    await runtime.audit.accepted(uow, reason="confirmed the machine's decision")
                return {"incident_id": incident_id, "changed": False}
            now = runtime.clock.now()
            await repo.replace_decision(
                uow.conn,
                incident_id,
                category=command.category.value,
                urgency=command.urgency.value,
                needs_review=False,
                decided_by=command.actor_id,
                decided_at=now,
            )
            event = IncidentReclassified(
                incident_id=incident_id,
                grid_id=row.grid_id,
                category=command.category,
                urgency=command.urgency,
                previous_category=row.category,
                previous_urgency=row.urgency,
                reason=command.reason,
                actor_id=command.actor_id,
            )
            await uow.emit(
                make_envelope(
                    event,
                    source=SOURCE,
                    subject=incident_id,
                    occurred_at=now,
                    correlation_id=correlation_for(incident_id),
                )
            )
            await runtime.audit.accepted(uow, reason=command.reason)
        return {"incident_id": incident_id, "changed": True}

    return router

