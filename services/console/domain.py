"""Pure rules of the dispatch console: who may see and do what, queue order, and the supervisor's rates.

No I/O and no framework here. Roles come from the reference data: a grid worker answers for the
grids that name them, a unit member for their unit's handoffs, a duty-desk member dispatches for
their station, a command-centre member for their district. Supervisors and admins are named in
settings, since the demo city has none.
"""

from __future__ import annotations

from collections import Counter
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
    if action in GRID_WORKER_ACTIONS:
        if principal.role is not Role.GRID_WORKER or scope.grid_id not in principal.grid_ids:
            raise Forbidden(f"{principal.user_id} is not the grid worker of {scope.grid_id}")
        return
    raise Forbidden(f"unknown action {action}")


# --- incident status and queue order --------------------------------------------------------

AWAITING_REPORT = "dispatched"
OPEN_HANDOFF_STATES = frozenset({"dispatched", "acknowledged", "on_scene"})


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


# --- supervisor's rates ---------------------------------------------------------------------

TIME_TO_REPORT_BUCKETS = (60, 300, 900, 1800, 3600, 7200)  # seconds: 1, 5, 15, 30 min, 1 h, 2 h


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def rates(incidents: Sequence[Mapping[str, Any]], handoffs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Response, resolution and satisfaction rates, and the on-time report rate per unit.

    Response: summoned handoffs a unit reported on. Resolution: closed incidents closed as resolved
    (a closure is not a resolution). Satisfaction: satisfied or basically satisfied feedback.
    """
    summoned = [h for h in handoffs if h.get("dispatched_at")]
    reported = [h for h in summoned if h.get("acknowledged_at")]
    closed = [i for i in incidents if i.get("closed_at")]
    rated = [i for i in incidents if i.get("satisfaction")]
    per_unit: dict[str, Counter[str]] = {}
    for h in summoned:
        counts = per_unit.setdefault(h["unit_id"], Counter())
        counts["summoned"] += 1
        if h.get("acknowledged_at"):
            counts["reported"] += 1
            counts["on_time" if not h.get("late") and not h.get("breached") else "late"] += 1
        elif h.get("breached"):
            counts["breached"] += 1
    units = [
        {
            "unit_id": unit_id,
            "summoned": c["summoned"],
            "reported": c["reported"],
            "on_time": c["on_time"],
            "breached": c["breached"] + c["late"],
            "on_time_report_rate": _rate(c["on_time"], c["on_time"] + c["late"] + c["breached"]),
        }
        for unit_id, c in sorted(per_unit.items())
    ]
    return {
        "response_rate": _rate(len(reported), len(summoned)),
        "resolution_rate": _rate(sum(1 for i in closed if i.get("outcome") == "resolved"), len(closed)),
        "satisfaction_rate": _rate(
            sum(1 for i in rated if i["satisfaction"] in ("satisfied", "basically_satisfied")), len(rated)
        ),
        "summoned": len(summoned),
        "reported": len(reported),
        "closed": len(closed),
        "rated": len(rated),
        "units": units,
    }


def time_to_report_histogram(handoffs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Counts of seconds from dispatch to report (报到) per bucket, the last bucket open-ended."""
    counts = [0] * (len(TIME_TO_REPORT_BUCKETS) + 1)
    for h in handoffs:
        if not (h.get("acknowledged_at") and h.get("dispatched_at")):
            continue
        seconds = (h["acknowledged_at"] - h["dispatched_at"]).total_seconds()
        index = next((i for i, limit in enumerate(TIME_TO_REPORT_BUCKETS) if seconds <= limit), len(TIME_TO_REPORT_BUCKETS))
        counts[index] += 1
    bounds = [None, *TIME_TO_REPORT_BUCKETS]
    return [
        {"from_seconds": bounds[i] or 0, "to_seconds": TIME_TO_REPORT_BUCKETS[i] if i < len(TIME_TO_REPORT_BUCKETS) else None, "count": n}
        for i, n in enumerate(counts)
    ]
