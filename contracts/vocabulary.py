"""Shared vocabulary of the event catalogue: the closed sets every service agrees on."""

from __future__ import annotations

from enum import StrEnum


class Urgency(StrEnum):
    """How fast summoned units must report (报到): urgent 15 min, general 2 h by default."""

    URGENT = "urgent"
    GENERAL = "general"


class Category(StrEnum):
    """The grid event taxonomy (上报事件的分类标准)."""

    NEIGHBOUR_DISPUTE = "neighbour_dispute"
    THEFT = "theft"
    TELECOM_FRAUD = "telecom_fraud"
    VIOLENCE = "violence"
    FIRE = "fire"
    MEDICAL_EMERGENCY = "medical_emergency"
    TRAFFIC_ACCIDENT = "traffic_accident"
    MISSING_PERSON = "missing_person"
    SAFETY_HAZARD = "safety_hazard"
    CONSULTATION = "consultation"
    MEDIATION_REQUEST = "mediation_request"
    ENVIRONMENT = "environment"
    CIVIL_AFFAIRS = "civil_affairs"
    MARKET_SAFETY = "market_safety"
    NOISE = "noise"
    OTHER = "other"


class HandoffRole(StrEnum):
    """Why a unit was summoned: to lead, to co-operate, or as an escalation level."""

    LEAD = "lead"
    CO_OPERATING = "co_operating"
    ESCALATION = "escalation"


class HandoffState(StrEnum):
    """Life of one handoff; the clock starts at DISPATCHED, never at acceptance."""

    DISPATCHED = "dispatched"
    ACKNOWLEDGED = "acknowledged"
    ON_SCENE = "on_scene"
    RESOLVED = "resolved"
    DECLINED = "declined"
    REASSIGNED = "reassigned"
    RELEASED = "released"


class DeclineReason(StrEnum):
    """Why a unit refused a handoff; free text alone is never enough."""

    NOT_OUR_JURISDICTION = "not_our_jurisdiction"
    NOT_OUR_AREA = "not_our_area"
    NO_CAPACITY = "no_capacity"
    DUPLICATE = "duplicate"
    INSUFFICIENT_INFORMATION = "insufficient_information"


class Disposition(StrEnum):
    """How a handoff ended; only RESOLVED counts towards the resolution rate."""

    RESOLVED = "resolved"
    REFERRED = "referred"
    UNFOUNDED = "unfounded"
    NOT_RESOLVABLE = "not_resolvable"
    DUPLICATE = "duplicate"


class Satisfaction(StrEnum):
    """The reporter's verdict at callback (回访)."""

    SATISFIED = "satisfied"
    BASICALLY_SATISFIED = "basically_satisfied"
    NOT_SATISFIED = "not_satisfied"


class DeadlineKind(StrEnum):
    """The clocks of the deadline chain."""

    REPORT = "report"
    ON_SCENE = "on_scene"
    RESOLUTION = "resolution"
    VERIFICATION = "verification"


class ClosureOutcome(StrEnum):
    """How an incident was closed; CLOSED_UNRESOLVED is never shown as resolved."""

    RESOLVED = "resolved"
    CLOSED_UNRESOLVED = "closed_unresolved"
    DUPLICATE = "duplicate"
