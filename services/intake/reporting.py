"""Taking a report and reading one back: shared by the JSON API and the Open311 endpoint."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from prometheus_client import Counter
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.envelope import correlation_for, follow_up, make_envelope
from contracts.events import DuplicateLinked, IncidentReported, Location
from contracts.reference import ReferenceData
from contracts.vocabulary import Category, HandoffRole, HandoffState
from services.intake import repository as repo
from services.intake.domain import DuplicateMatch, HandoffView, ReportSketch, all_units_reported, incident_status
from services.intake.duplicates import DuplicateLinker, link_summary
from services.intake.settings import IntakeSettings
from services.runtime.host import ServiceRuntime
from services.runtime.logs import bind_event_context, get_logger

SOURCE = "intake"
log = get_logger(__name__)

MediaRef = Annotated[str, StringConstraints(min_length=1, max_length=1000, strip_whitespace=True)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]


def _iso_text(value: Any) -> Any:
    # Pydantic would read a bare number as Unix seconds; a phone that sends one has a bug worth seeing.
    if not isinstance(value, str | datetime):
        raise ValueError("occurred_at must be an ISO 8601 date-time string with a time zone, e.g. 2026-03-01T08:00:00+08:00")
    return value


OccurredAt = Annotated[AwareDatetime, BeforeValidator(_iso_text)]


class LocationIn(BaseModel):
    """Where it happened: a coordinates pair and/or a street address."""

    model_config = ConfigDict(extra="forbid")

    latitude: float | None = Field(default=None, ge=-90, le=90, allow_inf_nan=False)
    longitude: float | None = Field(default=None, ge=-180, le=180, allow_inf_nan=False)
    address: Annotated[str, StringConstraints(max_length=300, strip_whitespace=True)] | None = None

    @model_validator(mode="after")
    def _coordinates_pair_or_address(self) -> LocationIn:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("latitude and longitude must be given together")
        if self.latitude is None and not self.address:
            raise ValueError("give coordinates (latitude and longitude) and/or an address")
        return self


class ReportIncident(BaseModel):
    """A grid worker's report (上报) as posted to the API."""

    model_config = ConfigDict(extra="forbid")

    grid_id: Identifier
    # The reporter is the signed-in grid worker; a different id here is refused (403).
    reporter_id: Identifier | None = Field(
        default=None, description="Optional: the reporter comes from the bearer token; another id is refused (403)."
    )
    description: Annotated[str, StringConstraints(max_length=2000, strip_whitespace=True)] = ""
    location: LocationIn
    category_hint: Category | None = None
    media: list[MediaRef] = Field(default_factory=list, max_length=10)
    occurred_at: OccurredAt | None = None


class ReportRejected(Exception):
    """The report is well-formed but not acceptable; `errors` are FastAPI-style field errors."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(e["msg"] for e in errors))
        self.errors = errors


class IdempotencyConflict(Exception):
    """The idempotency key was already used for a different request body."""


def key_scope_of_user(user_id: str) -> str:
    """Whose Idempotency-Keys a signed-in reporter's are: their own."""
    return f"user:{user_id}"


def key_scope_of_client(client_id: str) -> str:
    """Whose Idempotency-Keys a city app's are: the app's (it is trusted to name many reporters)."""
    return f"open311:{client_id}"


@dataclass(frozen=True)
class Submission:
    """The outcome of a report: the incident it created, or the one a replayed key points to."""

    incident_id: str
    replayed: bool
    duplicate_of: str | None = None


class ReportDesk:
    """Validates a report against reference data, stores it and stages its events in one transaction."""

    def __init__(
        self, runtime: ServiceRuntime, settings: IntakeSettings, reference: ReferenceData, duplicates: DuplicateLinker
    ) -> None:
        self._runtime = runtime
        self._settings = settings
        self._reference = reference
        self._duplicates = duplicates
        self.reported = Counter(
            "gridwhistle_intake_incidents_reported_total",
            "Incidents reported, by category hint ('none' without one) and channel (api, open311).",
            ["category_hint", "channel"],
            registry=runtime.metrics.registry,
        )

    def problems(self, report: ReportIncident, now: datetime) -> list[dict[str, Any]]:
        """Field errors that need reference data or the clock; empty when the report is acceptable."""
        errors = []
        if self._reference.grid(report.grid_id) is None:
            errors.append(
                {"loc": ["body", "grid_id"], "msg": f"unknown grid {report.grid_id!r}", "type": "unknown_grid"}
            )
        if not report.description and report.category_hint is None:
            errors.append(
                {
                    "loc": ["body", "description"],
                    "msg": "description may be empty only when category_hint is given",
                    "type": "missing_description",
                }
            )
        skew = timedelta(seconds=self._settings.occurred_at_max_skew_seconds)
        if report.occurred_at is not None and report.occurred_at > now + skew:
            errors.append(
                {
                    "loc": ["body", "occurred_at"],
                    "msg": f"occurred_at is in the future (now is {now.isoformat()})",
                    "type": "future_datetime",
                }
            )
        return errors

    async def submit(
        self, report: ReportIncident, *, body_hash: str, idempotency_key: str | None, key_scope: str, channel: str
    ) -> Submission:
        """Store a report and stage IncidentReported (and DuplicateLinked); replay a known key of `key_scope`."""
        errors = self.problems(report, self._runtime.clock.now())
        if errors:
            raise ReportRejected(errors)
        key = (key_scope, idempotency_key) if idempotency_key is not None else None
        try:
            submission = await self._submit_once(report, body_hash, key, channel)
        except IntegrityError:
            if key is None:
                raise
            # A concurrent request with the same key committed first: answer with its incident.
            async with self._runtime.engine.connect() as conn:
                stored = await repo.get_idempotency_key(conn, *key)
            if stored is None:
                raise
            return _replay(stored, body_hash)
        if not submission.replayed:
            bind_event_context(incident_id=submission.incident_id)
            log.info("incident reported", grid_id=report.grid_id, channel=channel, duplicate_of=submission.duplicate_of)
            self.reported.labels(report.category_hint.value if report.category_hint else "none", channel).inc()
            if submission.duplicate_of:
                self._duplicates.linked.labels("report").inc()
        return submission

    async def _submit_once(
        self, report: ReportIncident, body_hash: str, key: tuple[str, str] | None, channel: str
    ) -> Submission:
        async with self._runtime.unit_of_work() as uow:
            if key is not None:
                stored = await repo.get_idempotency_key(uow.conn, *key)
                if stored is not None:
                    return _replay(stored, body_hash)
            now = self._runtime.clock.now()
            incident_id = str(uuid.uuid4())
            match = await self._find_duplicate(uow.conn, incident_id, report, now)
            reported = make_envelope(
                IncidentReported(
                    incident_id=incident_id,
                    grid_id=report.grid_id,
                    reporter_id=report.reporter_id,
                    description=report.description,
                    location=Location(
                        latitude=report.location.latitude,
                        longitude=report.location.longitude,
                        address=report.location.address or None,
                    ),
                    category_hint=report.category_hint,
                    media=list(report.media),
                    occurred_at=report.occurred_at,
                    reported_at=now,
                ),
                source=SOURCE,
                subject=incident_id,
                occurred_at=now,
                correlation_id=correlation_for(incident_id),
            )
            envelopes = [reported]
            if match is not None:
                envelopes.append(
                    follow_up(
                        reported,
                        DuplicateLinked(
                            incident_id=incident_id,
                            original_incident_id=match.original_incident_id,
                            reason=match.reason[:300],
                        ),
                        source=SOURCE,
                        occurred_at=now,
                    )
                )
            await repo.insert_incident(
                uow.conn,
                incident_id=incident_id,
                grid_id=report.grid_id,
                reporter_id=report.reporter_id,
                description=report.description,
                latitude=report.location.latitude,
                longitude=report.location.longitude,
                address=report.location.address or None,
                category_hint=report.category_hint.value if report.category_hint else None,
                media=list(report.media),
                occurred_at=report.occurred_at,
                reported_at=now,
                channel=channel,
                duplicate_of=match.original_incident_id if match else None,
                duplicate_reason=match.reason[:300] if match else None,
            )
            if key is not None:
                await repo.insert_idempotency_key(
                    uow.conn, scope=key[0], key=key[1], body_hash=body_hash, incident_id=incident_id, created_at=now
                )
            await repo.append_timeline(
                uow.conn,
                event_id=str(reported.id),
                incident_id=incident_id,
                at=now,
                type=reported.type,
                summary=f"reported in grid {report.grid_id} by {report.reporter_id}",
            )
            if match is not None:
                await repo.append_timeline(
                    uow.conn,
                    event_id=str(envelopes[1].id),
                    incident_id=incident_id,
                    at=now,
                    type=DuplicateLinked.event_type,
                    summary=link_summary(match.original_incident_id, match.reason),
                )
            await uow.emit(*envelopes)
            await self._runtime.audit.accepted(uow, target=f"incident:{incident_id}", reason=f"reported in grid {report.grid_id}")
        return Submission(incident_id, replayed=False, duplicate_of=match.original_incident_id if match else None)

    async def _find_duplicate(
        self, conn: AsyncConnection, incident_id: str, report: ReportIncident, now: datetime
    ) -> DuplicateMatch | None:
        new = ReportSketch(
            incident_id=incident_id,
            grid_id=report.grid_id,
            description=report.description,
            category_hint=report.category_hint,
            latitude=report.location.latitude,
            longitude=report.location.longitude,
            reported_at=now,
        )
        return await self._duplicates.at_report(conn, new)


def _replay(stored: Any, body_hash: str) -> Submission:
    if stored.body_hash != body_hash:
        raise IdempotencyConflict(
            "this Idempotency-Key was already used with a different request body; "
            "use a new key for a new report"
        )
    return Submission(stored.incident_id, replayed=True)


class IncidentReader:
    """Composes what the grid worker sees from the report and the projection tables."""

    def __init__(self, runtime: ServiceRuntime, reference: ReferenceData) -> None:
        self._runtime = runtime
        self._reference = reference

    async def detail(self, incident_id: str) -> dict[str, Any] | None:
        """The full view of one incident, or None when intake never took that report."""
        async with self._runtime.engine.connect() as conn:
            incident = await repo.get_incident(conn, incident_id)
            if incident is None:
                return None
            progress = (await repo.get_progress(conn, [incident_id])).get(incident_id)
            handoffs = (await repo.get_handoffs(conn, [incident_id]))[incident_id]
            escalations = await repo.get_escalations(conn, incident_id)
            timeline = await repo.get_timeline(conn, incident_id)
        view = _summary(incident, progress, handoffs)
        view["handoffs"] = [_handoff(h) for h in handoffs]
        view["escalations"] = [
            {
                "level": e.level,
                "unit_id": e.unit_id,
                "reason": e.reason,
                "trigger_handoff_id": e.trigger_handoff_id,
                "escalated_at": e.escalated_at,
            }
            for e in escalations
        ]
        view["timeline"] = [{"at": t.at, "type": t.type, "summary": t.summary} for t in timeline]
        view["updated_at"] = timeline[-1].at if timeline else incident.reported_at
        view["agency_responsible"] = self._agency(handoffs)
        return view

    async def summaries(self, **filters: Any) -> list[dict[str, Any]]:
        """Summaries of the incidents matching `filters` (see repository.list_incidents), newest first."""
        async with self._runtime.engine.connect() as conn:
            rows = await repo.list_incidents(conn, **filters)
            ids = [r.incident_id for r in rows]
            progress = await repo.get_progress(conn, ids)
            handoffs = await repo.get_handoffs(conn, ids)
            updated = await repo.last_update_times(conn, ids)
        result = []
        for row in rows:
            view = _summary(row, progress.get(row.incident_id), handoffs[row.incident_id])
            view["updated_at"] = updated.get(row.incident_id, row.reported_at)
            view["agency_responsible"] = self._agency(handoffs[row.incident_id])
            result.append(view)
        return result

    def _agency(self, handoffs: list[Any]) -> str:
        lead = next((h for h in handoffs if h.role == HandoffRole.LEAD.value and h.department), None)
        if lead is None:
            return ""
        department = next((d for d in self._reference.departments if d.code == lead.department), None)
        return department.name if department else lead.department


def _summary(incident: Any, progress: Any | None, handoffs: list[Any]) -> dict[str, Any]:
    closed = progress is not None and progress.closed_at is not None
    classified = progress is not None and progress.category is not None
    status = incident_status(
        closed=closed,
        closure_status=progress.closure_status if progress is not None else None,
        has_handoffs=bool(handoffs),
        classified=classified,
    )
    views = [HandoffView(HandoffRole(h.role) if h.role else None, HandoffState(h.state)) for h in handoffs]
    return {
        "incident_id": incident.incident_id,
        "status": status,
        "grid_id": incident.grid_id,
        "reporter_id": incident.reporter_id,
        "description": incident.description,
        "location": {"latitude": incident.latitude, "longitude": incident.longitude, "address": incident.address},
        "category_hint": incident.category_hint,
        "category": progress.category if classified else None,
        "urgency": progress.urgency if progress is not None else None,
        "priority": progress.priority if progress is not None else None,
        "media": list(incident.media or []),
        "occurred_at": incident.occurred_at,
        "reported_at": incident.reported_at,
        "duplicate_of": incident.duplicate_of,
        "duplicate_reason": incident.duplicate_reason,
        "all_reported": all_units_reported(views),
        "outcome": progress.outcome if progress is not None else None,
        "satisfaction": progress.satisfaction if progress is not None else None,
        "closed_at": progress.closed_at if progress is not None else None,
    }


def _handoff(row: Any) -> dict[str, Any]:
    return {
        "handoff_id": row.handoff_id,
        "unit_id": row.unit_id,
        "department": row.department,
        "role": row.role,
        "state": row.state,
        "dispatched_at": row.dispatched_at,
        "report_due_at": row.report_due_at,
        "acknowledged_at": row.acknowledged_at,
        "late": bool(row.late),
        "breached": bool(row.breached),
        "escalation_level": row.escalation_level,
    }
