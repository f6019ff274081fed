"""Who may see and do what: one set of rules for the console and every backend service.

Pure functions over a Principal (from the token) and a Scope (where an incident or handoff sits).
A grid worker answers for their grids, a responder for their unit's handoffs, a dispatcher for
their station (duty desk) or district (command centre); supervisors watch and verify, admins see
everything and dispatch. The owning service checks these on the server, whatever a caller checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from contracts.reference import ReferenceData
from services.runtime.auth import AccessError, Principal, Role, forbidden


class Action(StrEnum):
    """Everything a caller can ask a service to do."""

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
    PAUSE = "pause"
    RESUME = "resume"


RESPONDER_ACTIONS = frozenset({Action.ACKNOWLEDGE, Action.DECLINE, Action.ON_SCENE, Action.RESOLVE})
DISPATCH_ACTIONS = frozenset(
    {Action.RECLASSIFY, Action.REASSIGN, Action.ESCALATE, Action.SUMMON, Action.PAUSE, Action.RESUME}
)
GRID_WORKER_ACTIONS = frozenset({Action.REPORT, Action.VERIFY, Action.FEEDBACK})
# Verification (核查) may also be done by a supervisor.
SUPERVISOR_ACTIONS = frozenset({Action.VERIFY})
STAFF = frozenset({Role.SUPERVISOR, Role.ADMIN})


@dataclass(frozen=True)
class Scope:
    """Where an incident (or a handoff, or a deadline) sits and which units were summoned on it."""

    grid_id: str | None
    district_id: str | None
    station_id: str | None
    unit_ids: frozenset[str] = field(default_factory=frozenset)


class Forbidden(Exception):
    """The caller may not see or do this."""


def can_see(principal: Principal, scope: Scope) -> bool:
    """Whether the caller may see an incident at all."""
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
    """True if the scope lies in the dispatcher's district (and station, for a duty desk)."""
    if principal.district_id is None or scope.district_id != principal.district_id:
        return False
    return principal.station_id is None or scope.station_id == principal.station_id


def sees_handoff(principal: Principal, scope: Scope, unit_id: str) -> bool:
    """Whether one handoff of a visible incident is shown: responders see only their unit's."""
    if principal.role is Role.RESPONDER:
        return unit_id == principal.unit_id
    return can_see(principal, scope)


def authorize(principal: Principal, action: Action, scope: Scope, *, handoff_unit_id: str | None = None) -> None:
    """Raise Forbidden unless the caller may take `action` on this incident (or handoff)."""
    if action in RESPONDER_ACTIONS:
        # Only members of the summoned unit act on its handoff (dispatchers too, for their desk's own).
        if handoff_unit_id is None or principal.unit_id != handoff_unit_id:
            raise Forbidden(f"{principal.user_id} is not a member of unit {handoff_unit_id}")
        return
    if action in DISPATCH_ACTIONS:
        if principal.role is Role.ADMIN:
            return
        if principal.role is not Role.DISPATCHER or not in_area(principal, scope):
            raise Forbidden(f"{principal.user_id} is not a dispatcher for {_where(scope)}")
        return
    if action in SUPERVISOR_ACTIONS and principal.role is Role.SUPERVISOR:
        return
    if action is Action.REPORT and principal.role is Role.INTEGRATION:
        return  # a city app files for any grid; the report still names its reporter
    if action in GRID_WORKER_ACTIONS:
        if principal.role is not Role.GRID_WORKER or scope.grid_id not in principal.grid_ids:
            raise Forbidden(f"{principal.user_id} is not the grid worker of {scope.grid_id}")
        return
    raise Forbidden(f"unknown action {action}")


def _where(scope: Scope) -> str:
    if scope.grid_id:
        return f"grid {scope.grid_id}"
    if scope.station_id:
        return f"station {scope.station_id}"
    return f"district {scope.district_id}" if scope.district_id else "an area nobody dispatches for"


# --- for the services' HTTP layers: the same rules as 403s ---------------------------------------


def require(principal: Principal, action: Action, scope: Scope, *, handoff_unit_id: str | None = None) -> None:
    """AccessError 403 unless the caller may take `action` here."""
    try:
        authorize(principal, action, scope, handoff_unit_id=handoff_unit_id)
    except Forbidden as exc:
        raise forbidden(str(exc)) from None


def require_visible(principal: Principal, scope: Scope, what: str) -> None:
    """AccessError 403 unless the caller may see `what`."""
    if not can_see(principal, scope):
        raise forbidden(f"{principal.user_id} ({principal.role.value}) may not see {what}")


def require_role(principal: Principal, roles: Iterable[Role], what: str) -> None:
    """AccessError 403 unless the caller has one of `roles`."""
    allowed = frozenset(roles)
    if principal.role not in allowed:
        names = ", ".join(sorted(r.value for r in allowed))
        raise forbidden(f"{what} is for {names}; {principal.user_id} is {principal.role.value}")


def acting_as(principal: Principal, claimed: str | None, field_name: str = "actor_id") -> str:
    """The acting id: the token's user. A body that names someone else is refused (403)."""
    if claimed is not None and claimed != principal.user_id:
        raise AccessError(
            403, "actor_mismatch",
            f"{field_name} {claimed!r} is not the signed-in user {principal.user_id!r}; the actor comes from the token",
        )
    return principal.user_id


class Areas:
    """Where grids and units lie, from the reference data: the scope of an incident, handoff or deadline."""

    def __init__(self, city: ReferenceData) -> None:
        self.city = city
        self._grid_areas = {g.id: (city.district_of(g).id, city.station_of(g).id) for g in city.grids}

    def of_grid(self, grid_id: str | None, unit_ids: Iterable[str] = ()) -> Scope:
        """The scope of an incident in `grid_id` with these summoned units (unknown grid: no area)."""
        district, station = self._grid_areas.get(grid_id or "", (None, None))
        return Scope(grid_id, district, station, frozenset(u for u in unit_ids if u))

    def of_unit(self, unit_id: str | None) -> Scope:
        """The scope of something known only by its unit: the unit's district and station."""
        unit = self.city.unit(unit_id) if unit_id else None
        if unit is None:
            return Scope(None, None, None, frozenset({unit_id}) if unit_id else frozenset())
        return Scope(None, unit.district_id, unit.station_id, frozenset({unit.id}))

    def sees_unit(self, principal: Principal, unit_id: str) -> bool:
        """Whether the caller may see a unit's queue: its members, dispatchers of its area, staff."""
        if principal.role in STAFF or principal.unit_id == unit_id:
            return True
        return principal.role is Role.DISPATCHER and in_area(principal, self.of_unit(unit_id))
