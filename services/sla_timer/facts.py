"""Deadline events built from deadline rows, in their envelopes (subject, correlation, policy)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from contracts.envelope import Envelope, correlation_for, make_envelope
from contracts.events import (
    DeadlineArmed,
    DeadlineBreached,
    DeadlineBreachWithdrawn,
    DeadlineCancelled,
    DeadlinePaused,
    DeadlineResumed,
    DeadlineWarned,
    Event,
)
from contracts.vocabulary import DeadlineKind, Urgency
from services.sla_timer.domain import signal_event_id

SOURCE = "sla_timer"


def _common(row: Any) -> dict[str, Any]:
    return {
        "incident_id": row.incident_id,
        "deadline_id": row.id,
        "handoff_id": row.handoff_id,
        "kind": DeadlineKind(row.kind),
        "due_at": row.due_at,
    }


def envelope_for(
    row: Any,
    event: Event,
    *,
    now: datetime,
    cause: Envelope | None = None,
    event_id: uuid.UUID | None = None,
    causation_id: uuid.UUID | None = None,
) -> Envelope:
    """Wrap a deadline event: keyed by incident, correlated to it, stamped with the row's policy."""
    return make_envelope(
        event,
        source=SOURCE,
        subject=row.incident_id,
        occurred_at=now,
        correlation_id=cause.correlation_id if cause else correlation_for(row.incident_id),
        causation_id=cause.id if cause else causation_id,
        policy_version=row.policy_version,
        event_id=event_id,
    )


def armed(row: Any, *, now: datetime, cause: Envelope) -> Envelope:
    """DeadlineArmed, with an id derived from the deadline (it happens once per deadline)."""
    event = DeadlineArmed(**_common(row), urgency=Urgency(row.urgency), unit_id=row.unit_id)
    return envelope_for(row, event, now=now, cause=cause, event_id=signal_event_id(row.id, "armed"))


def breached(row: Any, *, now: datetime, cause: Envelope | None = None) -> Envelope:
    """DeadlineBreached; its id is derived from the deadline so a second one cannot even be staged."""
    event = DeadlineBreached(**_common(row), urgency=Urgency(row.urgency), unit_id=row.unit_id, fired_at=now)
    return envelope_for(
        row,
        event,
        now=now,
        cause=cause,
        event_id=signal_event_id(row.id, "breached"),
        causation_id=signal_event_id(row.id, "armed"),
    )


def warned(row: Any, fraction: float, *, now: datetime) -> Envelope:
    """DeadlineWarned for one fraction of the window (once per fraction)."""
    event = DeadlineWarned(**_common(row), fraction=fraction, fired_at=now)
    return envelope_for(
        row,
        event,
        now=now,
        event_id=signal_event_id(row.id, f"warned:{fraction}"),
        causation_id=signal_event_id(row.id, "armed"),
    )


def cancelled(row: Any, reason: str, *, now: datetime, cause: Envelope) -> Envelope:
    """DeadlineCancelled because `cause` (an acknowledgement, a decline, a closure ...) arrived."""
    event = DeadlineCancelled(**_common(row), cancelled_at=now, reason=reason)
    return envelope_for(row, event, now=now, cause=cause)


def withdrawn(row: Any, fact_at: datetime, *, now: datetime, cause: Envelope) -> Envelope:
    """DeadlineBreachWithdrawn: `cause` was stamped before due but consumed after the breach (once per deadline)."""
    event = DeadlineBreachWithdrawn(**_common(row), fact_at=fact_at, withdrawn_at=now, reason="awaited_fact_in_time")
    return envelope_for(
        row,
        event,
        now=now,
        cause=cause,
        event_id=signal_event_id(row.id, "withdrawn"),
    )


def paused(row: Any, *, actor_id: str, reason: str, now: datetime) -> Envelope:
    """DeadlinePaused by a person who is not the assignee."""
    event = DeadlinePaused(**_common(row), actor_id=actor_id, reason=reason, paused_at=now)
    return envelope_for(row, event, now=now)


def resumed(row: Any, *, actor_id: str, due_at: datetime, now: datetime) -> Envelope:
    """DeadlineResumed; `due_at` is the new due instant."""
    event = DeadlineResumed(**{**_common(row), "due_at": due_at}, actor_id=actor_id, resumed_at=now)
    return envelope_for(row, event, now=now)
