"""Realistic example instances of every catalogue model, for EVENTS.md and the AsyncAPI document.

Values come from the demo city (grid G0001, its officer P0001, the health department of D01) and
are chosen by field name, so a new event gets an example for free; a new field name without a
value here fails generation instead of producing a meaningless example.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from contracts.deadline_policy import DEFAULT_POLICY
from contracts.envelope import Envelope, Event, correlation_for, make_envelope
from contracts.events import Location
from contracts.topics import topic_for_event

INCIDENT_ID = "3f1c9a52-7d4e-4b8a-9c61-2e5f0b7d8a14"
WHISTLE_AT = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)

_AT = WHISTLE_AT + timedelta(seconds=2)
_FIELD_VALUES: dict[str, Any] = {
    "incident_id": INCIDENT_ID,
    "original_incident_id": "9b2e4d10-5a3c-4f7e-8d21-6c0a1b3e5f72",
    "grid_id": "G0001",
    "reporter_id": "W0001",
    "description": "楼下有人打架，有人流血",
    "location": Location(latitude=28.10795, longitude=112.932143, address="幸福路8号"),
    "category_hint": "violence",
    "media": ["https://media.gridwhistle.example/3f1c9a52/1.jpg"],
    "occurred_at": WHISTLE_AT - timedelta(minutes=3),
    "reported_at": WHISTLE_AT,
    "reason": "同一地点十分钟内的相同报告",
    "category": "violence",
    "urgency": "urgent",
    "previous_category": "neighbour_dispute",
    "previous_urgency": "general",
    "priority": 1,
    "confidence": 0.92,
    "rules_fired": ["violence.keywords.v3"],
    "needs_review": False,
    "classifier_version": "rules-2025.03",
    "actor_id": "P0001",
    "handoff_id": "hf-3f1c9a52-U-POL-P0001",
    "new_handoff_id": "hf-3f1c9a52-U-POL-P0002",
    "replaces_handoff_id": None,
    "reference_version": "demo-city-2026-860g-320p",
    "roster_version": "demo-roster-2026.2",
    "trigger_handoff_id": "hf-3f1c9a52-U-POL-P0001",
    "unit_id": "U-POL-P0001",
    "from_unit_id": "U-POL-P0001",
    "to_unit_id": "U-POL-P0002",
    "department": "police",
    "role": "lead",
    "dispatched_at": _AT,
    "report_due_at": _AT + timedelta(minutes=15),
    "escalation_level": 0,
    "bounce_count": 0,
    "acknowledged_at": _AT + timedelta(minutes=6),
    "late": False,
    "reason_code": "not_our_area",
    "reason_text": "该地址属于相邻网格",
    "declined_at": _AT + timedelta(minutes=4),
    "arrived_at": _AT + timedelta(minutes=12),
    "disposition": "resolved",
    "note": "双方已调解，伤者送医",
    "resolved_at": _AT + timedelta(hours=1),
    "level": 1,
    "deadline_id": "dl-hf-3f1c9a52-U-POL-P0001-report",
    "kind": "report",
    "due_at": _AT + timedelta(minutes=15),
    "fraction": 0.8,
    "fired_at": _AT + timedelta(minutes=12),
    "cancelled_at": _AT + timedelta(minutes=6),
    "paused_at": _AT + timedelta(minutes=5),
    "resumed_at": _AT + timedelta(minutes=25),
    "verified_at": _AT + timedelta(hours=2),
    "rejected_at": _AT + timedelta(hours=2),
    "satisfaction": "satisfied",
    "comment": "民警来得很快",
    "given_at": _AT + timedelta(hours=3),
    "reopen_count": 1,
    "reopened_at": _AT + timedelta(hours=2),
    "escalated_at": _AT + timedelta(hours=6),
    "fact_at": _AT + timedelta(minutes=14, seconds=59),
    "withdrawn_at": _AT + timedelta(minutes=15, seconds=2),
    "outcome": "resolved",
    "closed_at": _AT + timedelta(hours=3),
    "confirmed": True,
}


def example_event(model: type[Event]) -> Event:
    """A realistic instance of one catalogue model."""
    missing = [name for name in model.model_fields if name not in _FIELD_VALUES]
    if missing:
        raise KeyError(f"{model.event_type}: add example values for {', '.join(missing)} in contracts/examples.py")
    return model.model_validate({name: _FIELD_VALUES[name] for name in model.model_fields})


# Facts that start a chain (nobody's event caused them) and those that carry a deadline.
_UNCAUSED = {"IncidentReported"}
_POLICY_STAMPED_PREFIXES = ("Deadline", "HandoffDispatched")


def example_envelope(model: type[Event]) -> Envelope:
    """The example instance in the envelope its owner would publish."""
    emitter = _emitter(model.event_type)
    caused = model.event_type not in _UNCAUSED and emitter != "console"
    return make_envelope(
        example_event(model),
        source=emitter,
        subject=INCIDENT_ID,
        occurred_at=_AT,
        correlation_id=correlation_for(INCIDENT_ID),
        causation_id=uuid.uuid5(uuid.NAMESPACE_URL, f"gridwhistle:example:cause:{model.event_type}") if caused else None,
        policy_version=DEFAULT_POLICY.version if model.event_type.startswith(_POLICY_STAMPED_PREFIXES) else None,
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"gridwhistle:example:{model.event_type}:v{model.version}"),
    )


def _emitter(event_type: str) -> str:
    try:
        return topic_for_event(event_type).owner
    except KeyError:  # commands arrive over HTTP from a console or a responder's phone
        return "console"
