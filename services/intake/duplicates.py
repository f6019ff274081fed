"""Probable duplicates: linked when a report arrives (by its hint or text) and again once classification knows the category.

A duplicate stays its own incident: linking sets `duplicate_of` in the grid worker's view and
emits DuplicateLinked through the outbox so consoles show it. Nothing is dropped or merged, and a
link is never taken back.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.envelope import Envelope, correlation_for, make_envelope
from contracts.events import DuplicateLinked
from contracts.vocabulary import Category
from services.intake import repository as repo
from services.intake.domain import (
    DuplicateMatch,
    DuplicatePolicy,
    ReportSketch,
    bounding_box,
    find_duplicate,
    links_on_classification,
)
from services.intake.settings import IntakeSettings
from services.runtime.host import ServiceRuntime
from services.runtime.logs import get_logger
from services.runtime.outbox import UnitOfWork

SOURCE = "intake"
log = get_logger(__name__)


def _sketch(row: Any, *, category: str | None, closed_at: datetime | None) -> ReportSketch:
    return ReportSketch(
        incident_id=row.incident_id,
        grid_id=row.grid_id,
        description=row.description,
        category_hint=Category(row.category_hint) if row.category_hint else None,
        latitude=row.latitude,
        longitude=row.longitude,
        reported_at=row.reported_at,
        is_open=closed_at is None,
        category=Category(category) if category else None,
        duplicate_of=row.duplicate_of,
    )


class DuplicateLinker:
    """Finds an incident's probable original with the configured radius and window, and records the link."""

    def __init__(self, runtime: ServiceRuntime, settings: IntakeSettings) -> None:
        self._runtime = runtime
        self.policy = DuplicatePolicy(
            radius_m=settings.duplicate_radius_m,
            window=timedelta(minutes=settings.duplicate_window_minutes),
            text_similarity=settings.duplicate_text_similarity,
        )
        self.linked = Counter(
            "gridwhistle_intake_duplicates_linked_total",
            "Incidents linked to an earlier open incident as probable duplicates, by when the link was found "
            "(report: on arrival; classification: once the category was known).",
            ["stage"],
            registry=runtime.metrics.registry,
        )

    async def _neighbours(
        self, conn: AsyncConnection, sketch: ReportSketch, since: datetime, until: datetime | None
    ) -> list[ReportSketch]:
        has_point = sketch.latitude is not None and sketch.longitude is not None
        box = bounding_box(sketch.latitude, sketch.longitude, self.policy.radius_m) if has_point else None  # type: ignore[arg-type]
        rows = await repo.recent_reports_near(conn, grid_id=sketch.grid_id, box=box, since=since, until=until)
        return [
            _sketch(row, category=row.category, closed_at=row.closed_at)
            for row in rows
            if row.incident_id != sketch.incident_id
        ]

    async def at_report(self, conn: AsyncConnection, new: ReportSketch) -> DuplicateMatch | None:
        """The probable original of a report being stored (its category is only its hint yet)."""
        earlier = await self._neighbours(conn, new, new.reported_at - self.policy.window, None)
        return find_duplicate(new, earlier, self.policy)

    async def after_classification(self, uow: UnitOfWork, cause: Envelope) -> None:
        """Link by the category just decided: the incident to an earlier one, later ones to it."""
        incident_id: str = cause.data.incident_id  # type: ignore[attr-defined]
        conn = uow.conn
        incident = await repo.get_incident(conn, incident_id)
        if incident is None:  # a decision about a report this intake never took
            return
        progress = (await repo.get_progress(conn, [incident_id])).get(incident_id)
        subject = _sketch(
            incident,
            category=progress.category if progress is not None else None,
            closed_at=progress.closed_at if progress is not None else None,
        )
        window = self.policy.window
        neighbours = await self._neighbours(conn, subject, subject.reported_at - window, subject.reported_at + window)
        now = self._runtime.clock.now()
        for link in links_on_classification(subject, neighbours, self.policy):
            if not await repo.link_duplicate(
                conn, incident_id=link.incident_id, original_incident_id=link.original_incident_id, reason=link.reason
            ):
                continue
            event = DuplicateLinked(
                incident_id=link.incident_id, original_incident_id=link.original_incident_id, reason=link.reason[:300]
            )
            envelope = make_envelope(
                event,
                source=SOURCE,
                subject=link.incident_id,
                occurred_at=now,
                correlation_id=correlation_for(link.incident_id),
                causation_id=cause.id,
            )
            await repo.append_timeline(
                conn,
                event_id=str(envelope.id),
                incident_id=link.incident_id,
                at=now,
                type=DuplicateLinked.event_type,
                summary=link_summary(link.original_incident_id, link.reason),
            )
            await uow.emit(envelope)
            log.info("duplicate linked", incident_id=link.incident_id, original_incident_id=link.original_incident_id)
            uow.after_commit(self.linked.labels("classification").inc)


def link_summary(original_incident_id: str, reason: str) -> str:
    """The timeline line of a duplicate link."""
    return f"probable duplicate of {original_incident_id} ({reason})"

