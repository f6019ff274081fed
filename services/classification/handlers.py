"""Subscribers and HTTP commands of classification: envelope in -> domain call -> events out."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query
from prometheus_client import Counter

from contracts.commands import ReclassifyIncident
from contracts.envelope import Envelope, correlation_for, follow_up, make_envelope
from contracts.events import IncidentClassified, IncidentReclassified, IncidentReported
from services.classification import repository as repo
from services.classification.domain import Classifier
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


def command_router(runtime: ServiceRuntime) -> APIRouter:
    """HTTP commands: a dispatcher reclassifies an incident."""
    router = APIRouter(prefix="/api/v1", tags=["classification"])

    @router.get("/incidents/{incident_id}/classification", summary="Current triage decision")
    async def get_classification(incident_id: str) -> dict:
        async with runtime.engine.connect() as conn:
            row = await repo.get_decision(conn, incident_id)
        if row is None:
            raise HTTPException(404, detail=f"incident {incident_id} has not been classified")
        return dict(row._mapping)

    @router.get("/review-queue", summary="Decisions awaiting a dispatcher's review (人工复核)")
    async def review_queue(limit: int = Query(100, ge=1, le=500)) -> dict:
        async with runtime.engine.connect() as conn:
            rows = await repo.list_needing_review(conn, limit=limit)
        return {"incidents": [dict(row._mapping) for row in rows]}

    @router.post("/incidents/{incident_id}/reclassify", status_code=202, summary="Correct category/urgency")
    async def reclassify(incident_id: str, command: ReclassifyIncident) -> dict:
        async with runtime.unit_of_work() as uow:
            row = await repo.get_decision(uow.conn, incident_id)
            if row is None:
                raise HTTPException(404, detail=f"incident {incident_id} has not been classified")
            if row.category == command.category.value and row.urgency == command.urgency.value:
                if row.needs_review:
                    # The dispatcher confirmed the machine's decision: reviewed, nothing to re-route.
                    await repo.confirm_decision(uow.conn, incident_id, decided_by=command.actor_id)
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
        return {"incident_id": incident_id, "changed": True}

    return router

