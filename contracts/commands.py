"""Commands that cross services: imperatives a console or responder sends to the owning service.

They travel as HTTP bodies today and in the same envelope on a command topic for consoles; the
actor always comes from the authenticated caller, never from the body alone.
"""

from __future__ import annotations

from pydantic import Field

from contracts.events import CATALOGUE
from contracts.envelope import Command
from contracts.vocabulary import Category, DeclineReason, Disposition, Satisfaction, Urgency

register = CATALOGUE.register


@register
class AcknowledgeHandoff(Command):
    """Report for duty (报到) on a handoff."""

    event_type = "AcknowledgeHandoff"
    actor_id: str = Field(min_length=1, max_length=64)


@register
class DeclineHandoff(Command):
    """Refuse a handoff; a reason code is mandatory."""

    event_type = "DeclineHandoff"
    actor_id: str = Field(min_length=1, max_length=64)
    reason_code: DeclineReason
    reason_text: str = Field(default="", max_length=500)


@register
class MarkOnScene(Command):
    """Record that a responder arrived."""

    event_type = "MarkOnScene"
    actor_id: str = Field(min_length=1, max_length=64)


@register
class ResolveHandoff(Command):
    """Finish a handoff's work with a disposition code and a note."""

    event_type = "ResolveHandoff"
    actor_id: str = Field(min_length=1, max_length=64)
    disposition: Disposition
    note: str = Field(default="", max_length=2000)


@register
class ReassignHandoff(Command):
    """Move a handoff to another unit; the deadline budget is kept."""

    event_type = "ReassignHandoff"
    actor_id: str = Field(min_length=1, max_length=64)
    to_unit_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="", max_length=500)


@register
class SummonDepartment(Command):
    """Add a department to the whistle (增派部门): its unit is summoned as co-operating."""

    event_type = "SummonDepartment"
    actor_id: str = Field(min_length=1, max_length=64)
    department: str = Field(min_length=1, max_length=40)
    reason: str = Field(default="", max_length=500)


@register
class ReclassifyIncident(Command):
    """Correct category and urgency, with a reason."""

    event_type = "ReclassifyIncident"
    actor_id: str = Field(min_length=1, max_length=64)
    category: Category
    urgency: Urgency
    reason: str = Field(min_length=1, max_length=500)


@register
class VerifyIncident(Command):
    """Confirm (or reject, with a reason) the outcome on site (核查)."""

    event_type = "VerifyIncident"
    actor_id: str = Field(min_length=1, max_length=64)
    confirmed: bool
    reason: str = Field(default="", max_length=500)


@register
class GiveFeedback(Command):
    """Say how satisfied the reporter is (回访)."""

    event_type = "GiveFeedback"
    actor_id: str = Field(min_length=1, max_length=64)
    satisfaction: Satisfaction
    comment: str = Field(default="", max_length=1000)
