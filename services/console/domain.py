"""Pure rules of the dispatch console: queue order, filters and groups; who may see and do what.

No I/O and no framework here. Who may see and do what is one set of rules for the console and
every backend (services/runtime/access.py, re-exported here); the backends check the same rules
again on the server. Roles come from the reference data (services/runtime/auth.py); supervisors
and admins are named in settings (GW_AUTH_SUPERVISORS, GW_AUTH_ADMINS), since the demo city has
none. The supervisor's rates are not computed here: they are closure's KPIs (one definition),
read from its API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from contracts.reference import ReferenceData
from services.runtime.access import (
    DISPATCH_ACTIONS,
    GRID_WORKER_ACTIONS,
    RESPONDER_ACTIONS,
    SUPERVISOR_ACTIONS,
    Action,
    Forbidden,
    Scope,
    authorize,
    can_see,
    in_area,
    sees_handoff,
)
from services.runtime.auth import Principal, Role, resolve_principal

__all__ = [
    "DISPATCH_ACTIONS", "GRID_WORKER_ACTIONS", "RESPONDER_ACTIONS", "SUPERVISOR_ACTIONS", "Action", "Forbidden",
    "Principal", "Role", "Scope", "authorize", "can_see", "in_area", "principal_for", "sees_handoff",
]


def principal_for(user_id: str, city: ReferenceData, *, supervisors: Iterable[str], admins: Iterable[str]) -> Principal | None:
    """The principal a demo user id stands for, or None for an unknown id."""
    return resolve_principal(user_id, city, supervisors=supervisors, admins=admins)


def grid_area(city: ReferenceData, grid_id: str | None) -> tuple[str | None, str | None]:
    """(district id, station id) of a grid; (None, None) for an unknown grid."""
    grid = city.grid(grid_id) if grid_id else None
    if grid is None:
        return None, None
    return city.district_of(grid).id, city.station_of(grid).id


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
