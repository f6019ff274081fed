"""Pure rules of the dispatch console: who may see and do what, queue order, filters and groups.

No I/O and no framework here. Roles come from the reference data: a grid worker answers for the
grids that name them, a unit member for their unit's handoffs, a duty-desk member dispatches for
their station, a command-centre member for their district. Supervisors and admins are named in
settings, since the demo city has none. The supervisor's rates are not computed here: they are
closure's KPIs (one definition), read from its API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from contracts.reference import ReferenceData


class Role(StrEnum):
    """What a signed-in user is to the console."""

    GRID_WORKER = "grid_worker"
    RESPONDER = "responder"
    DISPATCHER = "dispatcher"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class Action(StrEnum):
    """Everything a user can ask the console to do on their behalf."""

    REPORT = "report"
    VERIFY = "verify"
    FEEDBACK = "feedback"
    ACKNOWLEDGE = "acknowledge"
    DECLINE = "decline"
    ON_SCENE = "on_scene"
    RESOLVE = "resolve"
    RECLASSIFY = "reclassify"
    REASSIGN = "reassign"
    ESCALATE = "escalate"
    SUMMON = "summon"


RESPONDER_ACTIONS = frozenset({Action.ACKNOWLEDGE, Action.DECLINE, Action.ON_SCENE, Action.RESOLVE})
DISPATCH_ACTIONS = frozenset({Action.RECLASSIFY, Action.REASSIGN, Action.ESCALATE, Action.SUMMON})
GRID_WORKER_ACTIONS = frozenset({Action.REPORT, Action.VERIFY, Action.FEEDBACK})
# Verification (核查) may also be done by a supervisor; closure checks the same list of supervisors.
SUPERVISOR_ACTIONS = frozenset({Action.VERIFY})


@dataclass(frozen=True)
class Principal:
    """A signed-in user and the area they answer for."""

    user_id: str
    role: Role
    name: str = ""
    grid_ids: frozenset[str] = frozenset()
    unit_id: str | None = None
    district_id: str | None = None
    station_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the web app."""
        return {
            "user_id": self.user_id,
            "role": self.role.value,
            "name": self.name,
            "grid_ids": sorted(self.grid_ids),
            "unit_id": self.unit_id,
            "district_id": self.district_id,
            "station_id": self.station_id,
        }


@dataclass(frozen=True)
class Scope:
    """Where an incident sits and which units were summoned on it, for access checks."""

    grid_id: str | None
    district_id: str | None
    station_id: str | None
    unit_ids: frozenset[str] = field(default_factory=frozenset)


class Forbidden(Exception):
    """The user may not see or do this."""


def principal_for(user_id: str, city: ReferenceData, *, supervisors: Iterable[str], admins: Iterable[str]) -> Principal | None:
    """The principal a demo user id stands for, or None for an unknown id."""
    if user_id in set(admins):
        return Principal(user_id, Role.ADMIN, name="管理员")
    if user_id in set(supervisors):
        return Principal(user_id, Role.SUPERVISOR, name="督查")
    grids = frozenset(g.id for g in city.grids if user_id in g.grid_worker_ids)
    if grids:
        return Principal(user_id, Role.GRID_WORKER, name=f"网格员 {user_id}", grid_ids=grids)
    for unit in city.units:
        if user_id not in unit.members:
            continue
        if unit.kind == "duty_desk":
            return Principal(
                user_id, Role.DISPATCHER, name=unit.name, unit_id=unit.id,
                district_id=unit.district_id, station_id=unit.station_id,
            )
        if unit.kind == "command_centre":
            return Principal(user_id, Role.DISPATCHER, name=unit.name, unit_id=unit.id, district_id=unit.district_id)
        return Principal(user_id, Role.RESPONDER, name=unit.name, unit_id=unit.id, district_id=unit.district_id)
    return None


def grid_area(city: ReferenceData, grid_id: str | None) -> tuple[str | None, str | None]:
    """(district id, station id) of a grid; (None, None) for an unknown grid."""
    grid = city.grid(grid_id) if grid_id else None
    if grid is None:
        return None, None
    return city.district_of(grid).id, city.station_of(grid).id


def can_see(principal: Principal, scope: Scope) -> bool:
    """Whether the user may see an incident at all."""
    match principal.role:
        case Role.ADMIN | Role.SUPERVISOR:
            return True
        case Role.DISPATCHER:
            return in_area(principal, scope) or (principal.unit_id in scope.unit_ids)
        case Role.RESPONDER:
            return principal.unit_id in scope.unit_ids
        case Role.GRID_WORKER:
            return scope.grid_id in principal.grid_ids
    return False


def in_area(principal: Principal, scope: Scope) -> bool:
    """True if the incident lies in the dispatcher's district (and station, for a duty desk)."""
    if principal.district_id is None or scope.district_id != principal.district_id:
        return False
    return principal.station_id is None or scope.station_id == principal.station_id


def sees_handoff(principal: Principal, scope: Scope, unit_id: str) -> bool:
    """Whether one handoff of a visible incident is shown: responders see only their unit's."""
    if principal.role is Role.RESPONDER:
        return unit_id == principal.unit_id
    return can_see(principal, scope)


def authorize(principal: Principal, action: Action, scope: Scope, *, handoff_unit_id: str | None = None) -> None:
    """Raise Forbidden unless the user may take `action` on this incident (or handoff)."""
    if action in RESPONDER_ACTIONS:
        # Only members of the summoned unit act on its handoff (dispatchers too, for their desk's own).
        if handoff_unit_id is None or principal.unit_id != handoff_unit_id:
            raise Forbidden(f"{principal.user_id} is not a member of unit {handoff_unit_id}")
        return
    if action in DISPATCH_ACTIONS:
        if principal.role is Role.ADMIN:
            return
        if principal.role is not Role.DISPATCHER or not in_area(principal, scope):
            raise Forbidden(f"{principal.user_id} does not dispatch for grid {scope.grid_id}")
        return
    if action in SUPERVISOR_ACTIONS and principal.role is Role.SUPERVISOR:
        return
    if action in GRID_WORKER_ACTIONS:
        if principal.role is not Role.GRID_WORKER or scope.grid_id not in principal.grid_ids:
            raise Forbidden(f"{principal.user_id} is not the grid worker of {scope.grid_id}")
        return
    raise Forbidden(f"unknown action {action}")


# --- incident status and queue order --------------------------------------------------------

AWAITING_REPORT = "dispatched"
OPEN_HANDOFF_STATES = frozenset({"dispatched", "acknowledged", "on_scene"})


class GroupBy(StrEnum):
    """How a dispatcher's queue is grouped."""

    STATION = "station"
    DISTRICT = "district"
    DEPARTMENT = "department"


@dataclass(frozen=True)
class QueueFilter:
    """A dispatcher's queue filters; None means any."""

    district_id: str | None = None
    station_id: str | None = None
    department: str | None = None
    urgency: str | None = None
    status: str | None = None


def group_keys(item: Mapping[str, Any]) -> dict[str, list[str]]:
    """The groups a queue item falls in, per grouping: its station, its district, every summoned department."""
    departments = sorted({h["department"] for h in item.get("handoffs", ()) if h.get("department")})
    return {
        GroupBy.STATION.value: [item.get("station_id") or ""],
        GroupBy.DISTRICT.value: [item.get("district_id") or ""],
        GroupBy.DEPARTMENT.value: departments,
    }


def matches(item: Mapping[str, Any], wanted: QueueFilter) -> bool:
    """Whether a queue item (with its shown handoffs and status) passes the filters."""
    if wanted.district_id and item.get("district_id") != wanted.district_id:
        return False
    if wanted.station_id and item.get("station_id") != wanted.station_id:
        return False
    if wanted.department and wanted.department not in group_keys(item)[GroupBy.DEPARTMENT.value]:
        return False
    if wanted.urgency and item.get("urgency") != wanted.urgency:
        return False
    return not (wanted.status and item.get("status") != wanted.status)


def group_queue(items: Sequence[Mapping[str, Any]], by: GroupBy) -> list[tuple[str, list[str]]]:
    """Incident ids per group, groups in order of their most pressing item (items already in queue order)."""
    groups: dict[str, list[str]] = {}
    for item in items:
        for key in group_keys(item)[by.value]:
            groups.setdefault(key, []).append(item["incident_id"])
    return list(groups.items())


def incident_status(incident: Mapping[str, Any], handoff_states: Sequence[str]) -> str:
    """One word for where the incident is in 上报 → 分流 → 报到 → 处置 → 反馈 → closed."""
    if incident.get("closed_at"):
        return "closed"
    if incident.get("verified_at"):
        return "verified"
    if incident.get("resolved_at"):
        return "resolved"
    if any(s == "on_scene" for s in handoff_states):
        return "on_scene"
    if any(s == "acknowledged" for s in handoff_states):
        return "acknowledged"
    if any(s == AWAITING_REPORT for s in handoff_states):
        return "dispatched"
    if incident.get("category"):
        return "classified"
    return "reported"


def next_report_due(handoffs: Iterable[Mapping[str, Any]]) -> datetime | None:
    """The soonest report deadline among handoffs still waiting for their unit to report."""
    dues = [h["report_due_at"] for h in handoffs if h.get("state") == AWAITING_REPORT and h.get("report_due_at")]
    return min(dues) if dues else None


def queue_key(item: Mapping[str, Any]) -> tuple[int, float, str]:
    """Sort key: items awaiting a report first, soonest (or most overdue) deadline first."""
    due = item.get("next_report_due_at")
    if due is None:
        return (1, -item["reported_at"].timestamp() if item.get("reported_at") else 0.0, item["incident_id"])
    return (0, due.timestamp(), item["incident_id"])


def order_queue(items: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Queue items ordered by time left to breach."""
    return sorted(items, key=queue_key)
