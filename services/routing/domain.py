"""Pure routing rules: who is summoned, who is next after a decline, who an escalation climbs to.

No I/O and no framework. Invariants kept here:
- a unit's report clock starts when it is dispatched, never when it acknowledges;
- a re-route (decline, reassignment) keeps the remaining budget: the same `report_due_at`;
- a deadline is never moved later by anything routing does;
- every incident has an owner of last resort (兜底): its district's command centre, a team queue;
- a rostered unit is summoned only while on duty; otherwise its roster fallback stands in;
- the escalation ladder only climbs: a warning may raise the first rung, a breach the next one;
- a deadline signal about a unit that reported (报到) at or before the due instant is stale: no escalation;
- first receiver leads (首接负责): one handoff holds the lead role from the whistle to closure, and it
  passes only by a named fact (see `LEAD_PASSES_BY`); an escalation never takes it;
- every handoff records the versions of the reference data and roster that chose its unit.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from contracts.reference import POLICE, ReferenceData, Responsibility, Unit
from contracts.vocabulary import Category, DeclineReason, Disposition, HandoffRole, HandoffState, Urgency

HANDOFF_NAMESPACE = uuid.UUID("6f1d7a52-3c1e-4c55-9a57-2a1c0e9b7d31")
COMMAND = "command"

# The ladder of team queues a breached report deadline climbs.
LEVEL_DUTY_DESK = 1
LEVEL_COMMAND_CENTRE = 2
TOP_LEVEL = LEVEL_COMMAND_CENTRE

OPEN_STATES = frozenset({HandoffState.DISPATCHED, HandoffState.ACKNOWLEDGED, HandoffState.ON_SCENE})
ACKNOWLEDGED_STATES = frozenset({HandoffState.ACKNOWLEDGED, HandoffState.ON_SCENE, HandoffState.RESOLVED})
# Handoffs whose unit is no longer the one responsible for their part of the work.
MOVED_ON_STATES = frozenset({HandoffState.DECLINED, HandoffState.REASSIGNED, HandoffState.RELEASED})
# Handoffs that handed their role to a named successor (`successor_handoff_id`).
PASSED_ON_STATES = frozenset({HandoffState.DECLINED, HandoffState.REASSIGNED})


def handoff_id_for(incident_id: str, unit_id: str, sequence: str) -> str:
    """A deterministic handoff id, so a redelivered cause cannot dispatch a second handoff."""
    return str(uuid.uuid5(HANDOFF_NAMESPACE, f"{incident_id}|{unit_id}|{sequence}"))


# --- where a grid sits ------------------------------------------------------------------------


@dataclass(frozen=True)
class GridRoute:
    """Everything routing needs to know about a grid, resolved once."""

    grid_id: str
    district_id: str | None
    officer_unit_id: str | None
    duty_desk_unit_id: str | None
    command_centre_unit_id: str


@dataclass(frozen=True)
class Summons:
    """One unit to dispatch, in a role, with why it was chosen."""

    unit_id: str
    department: str
    role: HandoffRole
    reason: str
    # The rostered unit this one replaces because that unit is off duty.
    stands_in_for: str | None = None


class RoutingIndex:
    """Reference data indexed for O(1) routing decisions (built once per process)."""

    def __init__(self, ref: ReferenceData, default_command_centre_unit_id: str | None = None) -> None:
        self.ref = ref
        self.default_command_centre = default_command_centre_unit_id or ref.districts[0].command_centre_unit_id
        if ref.unit(self.default_command_centre) is None:
            raise ValueError(f"default command centre unit {self.default_command_centre!r} is not in the reference data")
        self._responsibilities: dict[tuple[Category, str | None], Responsibility] = {}
        for row in ref.responsibilities:
            self._responsibilities.setdefault((row.category, row.district_id), row)
        self._command_centres = {d.id: d.command_centre_unit_id for d in ref.districts}
        self._neighbours = {d.id: d.neighbour_district_ids for d in ref.districts}
        self._dispatch_desks = {s.duty_desk_unit_id for s in ref.stations} | set(self._command_centres.values())
        self.department_codes = frozenset(d.code for d in ref.departments)
        self._routes: dict[str, GridRoute] = {}
        for grid in ref.grids:
            station = ref.station_of(grid)
            officer = ref.officer(grid.officer_id)
            self._routes[grid.id] = GridRoute(
                grid_id=grid.id,
                district_id=station.district_id,
                officer_unit_id=officer.unit_id if officer else None,
                duty_desk_unit_id=station.duty_desk_unit_id,
                command_centre_unit_id=self._command_centres[station.district_id],
            )

    @property
    def reference_version(self) -> str:
        """Version of the reference data every decision of this index is made with."""
        return self.ref.version

    @property
    def roster_version(self) -> str | None:
        """Version of the duty roster in the reference data (None: no roster, everyone on duty)."""
        return self.ref.roster.version if self.ref.roster is not None else None

    def stamp(self, handoff: Handoff) -> Handoff:
        """The handoff with the reference data and roster versions that chose its unit (kept if already set)."""
        if handoff.reference_version is not None:
            return handoff
        return replace(handoff, reference_version=self.reference_version, roster_version=self.roster_version)

    def route(self, grid_id: str) -> GridRoute:
        """The grid's route; an unknown grid belongs to the default command centre."""
        known = self._routes.get(grid_id)
        if known is not None:
            return known
        return GridRoute(grid_id, None, None, None, self.default_command_centre)

    def unit(self, unit_id: str) -> Unit | None:
        """A unit by id."""
        return self.ref.unit(unit_id)

    def responsibility(self, category: Category, district_id: str | None) -> Responsibility | None:
        """The responsibility-list row: the district's own row wins over the general one."""
        return self._responsibilities.get((category, district_id)) or self._responsibilities.get((category, None))

    def department_unit(self, department: str, route: GridRoute) -> Unit | None:
        """The unit answering for a department in the grid's district (police: the grid officer)."""
        if department == POLICE:
            return self.unit(route.officer_unit_id) if route.officer_unit_id else None
        if route.district_id is None:
            return None
        return self.ref.department_unit(department, route.district_id)

    def neighbour_units(self, department: str, district_id: str | None) -> list[Unit]:
        """The department's units in the declared neighbouring districts, in declared order."""
        if department in (POLICE, COMMAND) or district_id is None:
            return []
        units = (self.ref.department_unit(department, n) for n in self._neighbours.get(district_id, ()))
        return [u for u in units if u is not None]

    def staff(self, summons: Summons, route: GridRoute, at: datetime | None) -> Summons:
        """The summons as the roster has it at `at`: the unit if on duty, else who the roster says stands in.

        Off duty: the chain of fallback officers until one is on duty, then the fallback units met
        along that chain, then the grid's station duty desk, then the command centre (兜底).
        """
        roster = self.ref.roster
        entry = self.ref.roster_entry(summons.unit_id)
        if at is None or roster is None or entry is None:
            return summons
        local = roster.local(at)
        if entry.on_duty(local):
            return summons

        def on_duty(unit_id: str) -> bool:
            standby = self.ref.roster_entry(unit_id)
            return standby is None or standby.on_duty(local)

        def stand_in(unit_id: str, reason: str) -> Summons:
            unit = self.unit(unit_id)
            department = unit.department if unit else COMMAND
            return Summons(unit_id, department, summons.role, reason, stands_in_for=summons.unit_id)

        chain, seen = [entry], {summons.unit_id}
        while chain[-1].fallback_officer_id:
            officer = self.ref.officer(chain[-1].fallback_officer_id)
            if officer is None or officer.unit_id in seen:
                break  # a closed ring: everybody in it is off duty
            standby = self.ref.roster_entry(officer.unit_id)
            if standby is None or standby.on_duty(local):
                return stand_in(officer.unit_id, "roster_fallback:officer")
            seen.add(officer.unit_id)
            chain.append(standby)
        for link in chain:
            if link.fallback_unit_id and link.fallback_unit_id not in seen and self.unit(link.fallback_unit_id):
                if on_duty(link.fallback_unit_id):
                    return stand_in(link.fallback_unit_id, "roster_fallback:unit")
        if route.duty_desk_unit_id and route.duty_desk_unit_id not in seen and on_duty(route.duty_desk_unit_id):
            return stand_in(route.duty_desk_unit_id, "roster_fallback:duty_desk")
        return stand_in(route.command_centre_unit_id, "roster_fallback:command_centre")

    def units_of(self, department: str, district_id: str | None = None) -> list[Unit]:
        """Every unit of a department (in one district when given)."""
        return [u for u in self.ref.units if u.department == department and district_id in (None, u.district_id)]

    def command_centre_of(self, district_id: str) -> str | None:
        """The command centre unit of a district, or None for an unknown district."""
        return self._command_centres.get(district_id)

    def is_dispatcher_for(self, actor_id: str, route: GridRoute) -> bool:
        """True if the actor sits at the grid's station duty desk or its district command centre."""
        for unit_id in (route.duty_desk_unit_id, route.command_centre_unit_id):
            unit = self.unit(unit_id) if unit_id else None
            if unit is not None and actor_id in unit.members:
                return True
        return False


# --- the whistle: fan-out ---------------------------------------------------------------------


def plan_whistle(index: RoutingIndex, grid_id: str, category: Category, at: datetime | None = None) -> list[Summons]:
    """Every unit the whistle summons: lead first, the grid officer always, the command centre as fallback.

    With `at`, a rostered unit that is off duty then is replaced by its roster fallback.
    """
    route = index.route(grid_id)
    command = Summons(route.command_centre_unit_id, COMMAND, HandoffRole.LEAD, "fallback")
    if route.district_id is None:
        return [replace(command, reason="fallback:unknown_grid")]
    row = index.responsibility(category, route.district_id)
    summons: list[Summons] = []
    if row is None:
        summons.append(replace(command, reason="fallback:no_responsibility_row"))
    else:
        for department, role in [(row.lead_department, HandoffRole.LEAD)] + [
            (d, HandoffRole.CO_OPERATING) for d in row.co_departments
        ]:
            unit = index.department_unit(department, route)
            if unit is None:
                summons.append(replace(command, role=role, reason=f"fallback:no_unit_for_{department}"))
            else:
                summons.append(Summons(unit.id, department, role, "responsibility_list"))
    # "One grid, one officer": the grid's officer reports on every whistle of the grid.
    officer = index.unit(route.officer_unit_id) if route.officer_unit_id else None
    if officer is not None:
        summons.append(Summons(officer.id, POLICE, HandoffRole.CO_OPERATING, "grid_officer"))
    return _first_per_unit([index.staff(item, route, at) for item in summons])


def _first_per_unit(summons: list[Summons]) -> list[Summons]:
    seen: set[str] = set()
    unique = []
    for item in summons:
        if item.unit_id not in seen:
            seen.add(item.unit_id)
            unique.append(item)
    return unique


# --- one handoff ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Handoff:
    """One summoned unit's obligation on one incident, with its own state and report deadline."""

    handoff_id: str
    incident_id: str
    unit_id: str
    department: str
    role: HandoffRole
    state: HandoffState
    category: Category
    urgency: Urgency
    grid_id: str
    dispatched_at: datetime
    report_due_at: datetime
    escalation_level: int = 0
    escalation_repeat: int = 0
    bounce_count: int = 0
    replaces_handoff_id: str | None = None
    chain_root_id: str | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    late: bool = False
    on_scene_at: datetime | None = None
    on_scene_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    disposition: Disposition | None = None
    note: str = ""
    declined_reason: DeclineReason | None = None
    successor_handoff_id: str | None = None
    ended_at: datetime | None = None
    # The reference data and roster versions that chose this unit (None: dispatched before they were recorded).
    reference_version: str | None = None
    roster_version: str | None = None

    @property
    def is_open(self) -> bool:
        """True while the unit still has something to do."""
        return self.state in OPEN_STATES

    @property
    def root(self) -> str:
        """The first handoff of this chain of re-routes and escalations."""
        return self.chain_root_id or self.handoff_id


def dispatch(
    incident_id: str,
    summons: Summons,
    *,
    category: Category,
    urgency: Urgency,
    grid_id: str,
    dispatched_at: datetime,
    report_due_at: datetime,
    sequence: str,
    predecessor: Handoff | None = None,
    bounce_count: int = 0,
    escalation_level: int = 0,
    escalation_repeat: int = 0,
) -> Handoff:
    """A new handoff in DISPATCHED; its clock already runs."""
    return Handoff(
        handoff_id=handoff_id_for(incident_id, summons.unit_id, sequence),
        incident_id=incident_id,
        unit_id=summons.unit_id,
        department=summons.department,
        role=summons.role,
        state=HandoffState.DISPATCHED,
        category=category,
        urgency=urgency,
        grid_id=grid_id,
        dispatched_at=dispatched_at,
        report_due_at=report_due_at,
        escalation_level=escalation_level,
        escalation_repeat=escalation_repeat,
        bounce_count=bounce_count,
        replaces_handoff_id=predecessor.handoff_id if predecessor else None,
        chain_root_id=predecessor.root if predecessor else None,
    )


# --- commands by the summoned unit ------------------------------------------------------------


class Refused(Exception):
    """The actor may not do this (HTTP 403)."""


class Conflict(Exception):
    """The handoff is not in a state that allows this (HTTP 409)."""


@dataclass(frozen=True)
class Outcome:
    """The handoff after a command, and whether the command changed anything."""

    handoff: Handoff
    changed: bool
    successor: Handoff | None = None
    released: tuple[Handoff, ...] = field(default_factory=tuple)


def require_member(index: RoutingIndex, handoff: Handoff, actor_id: str) -> None:
    """Only a member of the summoned unit may act on its handoff."""
    unit = index.unit(handoff.unit_id)
    if unit is None or actor_id not in unit.members:
        raise Refused(f"actor {actor_id} is not a member of unit {handoff.unit_id}, which was summoned on this handoff")


def _require_open(handoff: Handoff, action: str) -> None:
    if not handoff.is_open:
        raise Conflict(f"cannot {action}: handoff is {handoff.state.value}")


def acknowledge(handoff: Handoff, actor_id: str, now: datetime) -> Outcome:
    """Report for duty (报到); late if after the due instant, but never refused for lateness."""
    if handoff.state in ACKNOWLEDGED_STATES:
        return Outcome(handoff, changed=False)
    _require_open(handoff, "acknowledge")
    late = now > handoff.report_due_at
    done = replace(handoff, state=HandoffState.ACKNOWLEDGED, acknowledged_at=now, acknowledged_by=actor_id, late=late)
    return Outcome(done, changed=True)


def mark_on_scene(handoff: Handoff, actor_id: str, now: datetime) -> Outcome:
    """A responder arrived; arriving also counts as reporting for duty if nobody acknowledged yet."""
    if handoff.on_scene_at is not None:
        return Outcome(handoff, changed=False)
    if handoff.state not in (HandoffState.DISPATCHED, HandoffState.ACKNOWLEDGED):
        raise Conflict(f"cannot mark on scene: handoff is {handoff.state.value}")
    acked = acknowledge(handoff, actor_id, now).handoff
    return Outcome(replace(acked, state=HandoffState.ON_SCENE, on_scene_at=now, on_scene_by=actor_id), changed=True)


def resolve(handoff: Handoff, actor_id: str, disposition: Disposition, note: str, now: datetime) -> Outcome:
    """Finish the unit's work; only a unit that reported for duty can resolve."""
    if handoff.state is HandoffState.RESOLVED:
        return Outcome(handoff, changed=False)
    if handoff.state is HandoffState.DISPATCHED:
        raise Conflict("cannot resolve: the handoff has not been acknowledged yet")
    _require_open(handoff, "resolve")
    done = replace(
        handoff, state=HandoffState.RESOLVED, resolved_at=now, resolved_by=actor_id,
        disposition=disposition, note=note, ended_at=now,
    )
    return Outcome(done, changed=True)


def decline(
    index: RoutingIndex,
    handoff: Handoff,
    reason: DeclineReason,
    now: datetime,
    *,
    tried_unit_ids: set[str],
    max_bounces: int,
    sequence: str,
) -> Outcome:
    """Refuse with a reason code; the incident goes to the next candidate with the SAME due instant."""
    if handoff.state is HandoffState.DECLINED:
        return Outcome(handoff, changed=False)
    if handoff.state is not HandoffState.DISPATCHED:
        raise Conflict(f"cannot decline: handoff is {handoff.state.value}")
    route = index.route(handoff.grid_id)
    if handoff.unit_id == route.command_centre_unit_id:
        raise Conflict("the command centre is the owner of last resort (兜底) and cannot decline; reassign instead")
    bounces = handoff.bounce_count + 1
    summons = next_candidate(index, handoff, route, tried_unit_ids | {handoff.unit_id}, bounces, max_bounces)
    successor = dispatch(
        handoff.incident_id, summons, category=handoff.category, urgency=handoff.urgency, grid_id=handoff.grid_id,
        dispatched_at=now, report_due_at=handoff.report_due_at, sequence=sequence, predecessor=handoff,
        bounce_count=bounces, escalation_level=handoff.escalation_level, escalation_repeat=handoff.escalation_repeat,
    )
    declined = replace(
        handoff, state=HandoffState.DECLINED, declined_reason=reason, successor_handoff_id=successor.handoff_id, ended_at=now
    )
    return Outcome(declined, changed=True, successor=successor)


def next_candidate(
    index: RoutingIndex, handoff: Handoff, route: GridRoute, tried: set[str], bounces: int, max_bounces: int
) -> Summons:
    """After a decline: a neighbouring district's unit of the department, the duty desk, then the command centre.

    Every candidate takes the declining handoff's role, so a declining lead hands the lead on (首接负责).
    """
    command = Summons(route.command_centre_unit_id, COMMAND, handoff.role, "fallback:bounce_cap")
    # Bouncing (踢皮球) is capped: past max_bounces the command centre owns the incident.
    if bounces >= max_bounces:
        return command
    for unit in index.neighbour_units(handoff.department, route.district_id):
        if unit.id not in tried:
            return Summons(unit.id, handoff.department, handoff.role, "neighbouring_district")
    if route.duty_desk_unit_id and route.duty_desk_unit_id not in tried:
        return Summons(route.duty_desk_unit_id, POLICE, handoff.role, "station_duty_desk")
    return replace(command, reason="fallback:no_candidate_left")


def reassign(
    index: RoutingIndex, handoff: Handoff, actor_id: str, to_unit_id: str, now: datetime, *, sequence: str,
    admin: bool = False,
) -> Outcome:
    """A dispatcher (or an admin) moves the handoff to another unit; the new handoff keeps the old due instant."""
    route = index.route(handoff.grid_id)
    if not admin and not index.is_dispatcher_for(actor_id, route):
        raise Refused(
            f"actor {actor_id} is not a dispatcher for grid {handoff.grid_id} "
            "(member of its station duty desk or district command centre)"
        )
    if handoff.state is HandoffState.REASSIGNED and handoff.successor_handoff_id == handoff_id_for(
        handoff.incident_id, to_unit_id, sequence
    ):
        return Outcome(handoff, changed=False)
    _require_open(handoff, "reassign")
    target = index.unit(to_unit_id)
    if target is None:
        raise Conflict(f"unknown unit {to_unit_id}")
    if target.id == handoff.unit_id:
        raise Conflict(f"handoff is already with unit {to_unit_id}")
    summons = Summons(target.id, target.department, handoff.role, "reassigned")  # the role moves with it
    successor = dispatch(
        handoff.incident_id, summons, category=handoff.category, urgency=handoff.urgency, grid_id=handoff.grid_id,
        dispatched_at=now, report_due_at=handoff.report_due_at, sequence=sequence, predecessor=handoff,
        bounce_count=handoff.bounce_count, escalation_level=handoff.escalation_level,
        escalation_repeat=handoff.escalation_repeat,
    )
    moved = replace(handoff, state=HandoffState.REASSIGNED, successor_handoff_id=successor.handoff_id, ended_at=now)
    return Outcome(moved, changed=True, successor=successor)


class Invalid(Exception):
    """The request names something that does not exist (HTTP 422)."""


def summon_handoff_id(incident_id: str, unit_id: str, department: str) -> str:
    """The id of the handoff a dispatcher's summons of a department creates (so a repeat finds it)."""
    return handoff_id_for(incident_id, unit_id, f"summon:{department}")


def summon_department(
    index: RoutingIndex,
    *,
    incident_id: str,
    grid_id: str,
    category: Category,
    urgency: Urgency,
    department: str,
    actor_id: str,
    existing: list[Handoff],
    closed: bool,
    now: datetime,
    report_due_at: datetime,
    admin: bool = False,
) -> Outcome:
    """A dispatcher (or an admin) adds a department to the whistle (增派): its district unit joins as co-operating.

    Its report clock starts now, at dispatch. A unit already working the incident (open handoff,
    any role but a rung of the ladder) or summoned this way before is returned unchanged.
    """
    route = index.route(grid_id)
    if not admin and not index.is_dispatcher_for(actor_id, route):
        raise Refused(
            f"actor {actor_id} is not a dispatcher for grid {grid_id} "
            "(member of its station duty desk or district command centre)"
        )
    if department not in index.department_codes:
        raise Invalid(f"unknown department {department!r}")
    unit = index.department_unit(department, route)
    if unit is None:
        raise Invalid(f"no unit of department {department!r} serves the district of grid {grid_id}")
    summoned_id = summon_handoff_id(incident_id, unit.id, department)
    for handoff in existing:
        already = handoff.unit_id == unit.id and handoff.is_open and handoff.role is not HandoffRole.ESCALATION
        if already or handoff.handoff_id == summoned_id:
            return Outcome(handoff, changed=False)
    if closed:
        raise Conflict(f"cannot summon {department}: incident {incident_id} is closed")
    summons = Summons(unit.id, department, HandoffRole.CO_OPERATING, "summoned_by_dispatcher")
    handoff = dispatch(
        incident_id, summons, category=category, urgency=urgency, grid_id=grid_id,
        dispatched_at=now, report_due_at=report_due_at, sequence=f"summon:{department}",
    )
    return Outcome(handoff, changed=True)


def release(handoff: Handoff, now: datetime) -> Handoff:
    """The handoff ends without further work (superseded, escalated past, or no longer responsible)."""
    return replace(handoff, state=HandoffState.RELEASED, ended_at=now)


# --- first receiver leads (首接负责) -------------------------------------------------------------

# The lead unit stays responsible until closure. Its role moves to another handoff only by one of
# these facts, each naming the successor; nothing else (an escalation, a decline or resolution by a
# co-operating unit, a warning, the lead's own resolution, the incident's closure) takes it away.
LEAD_PASSES_BY: Mapping[str, str] = {
    "decline": "HandoffDeclined, then HandoffDispatched of the replacement (role lead, same report_due_at)",
    "reassignment": "HandoffReassigned naming new_handoff_id (role lead, same report_due_at)",
    "reclassification": "HandoffReleased of the old lead, then HandoffDispatched of the new category's lead",
    "urgency_tightened": "HandoffReleased, then HandoffDispatched of the same unit (role lead, tighter deadline)",
    "reopen": "HandoffDispatched of the same lead unit (or its roster stand-in), role lead, fresh deadline",
    "reopen_cap": "IncidentEscalatedToCommandCentre (closure), then HandoffDispatched of the district command centre as lead",
}


def lead_of(handoffs: Sequence[Handoff]) -> Handoff | None:
    """The handoff holding the lead (首接负责) now, from handoffs in dispatch order; None if nobody leads.

    A declined or reassigned lead handed its role to its successor; a released lead was replaced (by
    a reclassification or tighter deadline) unless every lead is released, which is closure: the unit
    that led then still leads, so a reopen dispatches it again.
    """
    leads = [h for h in handoffs if h.role is HandoffRole.LEAD and h.state not in PASSED_ON_STATES]
    holding = [h for h in leads if h.state is not HandoffState.RELEASED] or leads
    return holding[-1] if holding else None


# --- escalation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EscalationStep:
    """The rung an unreported handoff climbs to, and why (a warning or a breach)."""

    level: int
    repeat: int
    summons: Summons
    reason: str


@dataclass(frozen=True)
class EscalationPolicy:
    """Which deadline signals escalate an unreported handoff, per urgency (a breach always does)."""

    # Urgency -> the warning fraction from which a warning raises the first rung; absent: breach only.
    warn_at: Mapping[Urgency, float] = field(default_factory=dict)

    def escalates_on_warning(self, urgency: Urgency, fraction: float) -> bool:
        """True if a warning at this fraction of the window escalates a handoff of this urgency."""
        threshold = self.warn_at.get(urgency)
        # Warnings arrive as the fractions the timer was configured with; allow for float noise.
        return threshold is not None and fraction >= threshold - 1e-9


def reported_in_time(handoff: Handoff, due_at: datetime) -> bool:
    """True if the unit reported (报到) at or before `due_at`: a warning or breach of that deadline is stale.

    sla_timer fires on what it has consumed so far, so an acknowledgement made in time can reach it
    after the due instant (consumer lag, a restart, a broker outage). Routing took the acknowledgement
    itself and knows better: such a signal must never escalate.
    """
    return handoff.acknowledged_at is not None and handoff.acknowledged_at <= due_at


def _rung(route: GridRoute, level: int) -> Summons:
    if level == LEVEL_DUTY_DESK and route.duty_desk_unit_id is not None:
        return Summons(route.duty_desk_unit_id, POLICE, HandoffRole.ESCALATION, "station_duty_desk")
    return Summons(route.command_centre_unit_id, COMMAND, HandoffRole.ESCALATION, "district_command_centre")


def plan_escalation(
    index: RoutingIndex, breached: Handoff, max_repeats: int, *, raised_level: int = 0
) -> EscalationStep | None:
    """The next rung after a breach: one above the chain's highest so far, repeating at the top; None when spent.

    `raised_level` is the highest rung already raised for the breached handoff's chain (0: none), so
    a breach after a warning escalation climbs past the duty desk instead of summoning it again.
    """
    if breached.state is not HandoffState.DISPATCHED:
        # The unit reported (in time, a stale breach: see `reported_in_time`; or late), or the handoff
        # was declined, reassigned or released: nothing is left to chase.
        return None
    route = index.route(breached.grid_id)
    climbing = breached.role is HandoffRole.ESCALATION
    level = breached.escalation_level + 1 if climbing else max(LEVEL_DUTY_DESK, raised_level + 1)
    repeat = 0
    if level > TOP_LEVEL:
        level, repeat = TOP_LEVEL, breached.escalation_repeat + 1
        if repeat > max_repeats:
            return None
    if level == LEVEL_DUTY_DESK and route.duty_desk_unit_id in (None, breached.unit_id):
        # An unknown grid has no station, and a late desk (e.g. standing in at night) cannot chase
        # itself: straight to the top.
        level = LEVEL_COMMAND_CENTRE
    reason = f"report deadline breached by unit {breached.unit_id}"
    if repeat:
        reason += f" (repeat {repeat} of {max_repeats} at the top level)"
    return EscalationStep(level=level, repeat=repeat, summons=_rung(route, level), reason=reason)


def plan_warning_escalation(
    index: RoutingIndex, warned: Handoff, fraction: float, policy: EscalationPolicy, *, raised_level: int = 0
) -> EscalationStep | None:
    """The first rung (the duty desk) on a warning, when the policy says so for the handoff's urgency."""
    if warned.state is not HandoffState.DISPATCHED or warned.role is HandoffRole.ESCALATION:
        return None  # reported already, moved on, or itself a rung: rungs climb on breach only
    if raised_level or not policy.escalates_on_warning(warned.urgency, fraction):
        return None
    route = index.route(warned.grid_id)
    level = LEVEL_DUTY_DESK if route.duty_desk_unit_id is not None else LEVEL_COMMAND_CENTRE
    summons = _rung(route, level)
    if summons.unit_id == warned.unit_id:
        return None  # the first rung itself is late: its breach climbs past it
    reason = f"warning: {fraction:.0%} of the report window of unit {warned.unit_id} elapsed without a report"
    return EscalationStep(level=level, repeat=0, summons=summons, reason=reason)


def escalate(
    breached: Handoff, step: EscalationStep, now: datetime, report_within: timedelta, *, sequence: str
) -> Handoff:
    """The escalation handoff to a team queue; its own short report deadline runs from now.

    Its role is `escalation`: a rung chases the breached unit beside it and never takes the lead (首接负责).
    """
    return dispatch(
        breached.incident_id, step.summons, category=breached.category, urgency=breached.urgency,
        grid_id=breached.grid_id, dispatched_at=now, report_due_at=now + report_within, sequence=sequence,
        predecessor=breached, bounce_count=breached.bounce_count, escalation_level=step.level,
        escalation_repeat=step.repeat,
    )


# --- reclassification -------------------------------------------------------------------------


@dataclass(frozen=True)
class Replan:
    """What a reclassification changes: handoffs to release and units to summon (with due instants)."""

    release: tuple[Handoff, ...]
    summon: tuple[tuple[Summons, datetime], ...]
    superseded: tuple[Handoff, ...]


def replan(
    index: RoutingIndex,
    grid_id: str,
    active: list[Handoff],
    *,
    category: Category,
    previous_category: Category,
    urgency: Urgency,
    previous_urgency: Urgency,
    now: datetime,
    fresh_due: datetime,
) -> Replan:
    """New units for a new category; tighter deadlines when urgency became urgent (never later ones)."""
    releases: list[Handoff] = []
    summons: list[tuple[Summons, datetime]] = []
    superseded: list[Handoff] = []
    work = [h for h in active if h.role is not HandoffRole.ESCALATION]
    if category is not previous_category:
        plan = plan_whistle(index, grid_id, category, now)
        # A unit already summoned stays whether it is on duty now or was standing in for one that is.
        wanted = {(s.unit_id, s.role) for s in plan} | {(s.stands_in_for, s.role) for s in plan if s.stands_in_for}
        kept = {(h.unit_id, h.role) for h in work if (h.unit_id, h.role) in wanted}
        releases = [h for h in work if (h.unit_id, h.role) not in wanted]
        for item in plan:
            if (item.unit_id, item.role) not in kept and (item.stands_in_for, item.role) not in kept:
                # A unit changing role keeps whatever budget it had left.
                old = next((h for h in releases if h.unit_id == item.unit_id and h.state is HandoffState.DISPATCHED), None)
                summons.append((item, min(fresh_due, old.report_due_at) if old else fresh_due))
        work = [h for h in work if (h.unit_id, h.role) in kept]
    if urgency is Urgency.URGENT and previous_urgency is not Urgency.URGENT:
        # The tighter clock runs from the reclassification, but never later than the old due instant.
        for handoff in work:
            if handoff.state is HandoffState.DISPATCHED and fresh_due < handoff.report_due_at:
                superseded.append(handoff)
    return Replan(tuple(releases), tuple(summons), tuple(superseded))


# --- views ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportStatus:
    """Whether every summoned unit has reported (报到), and when the last of them did."""

    all_reported: bool
    all_reported_at: datetime | None
    waiting_on: tuple[str, ...]


def report_status(handoffs: list[Handoff]) -> ReportStatus:
    """All reported when every current non-escalation handoff is acknowledged (a report stands once made)."""
    current = [
        h for h in handoffs
        if h.role is not HandoffRole.ESCALATION
        and (h.state not in MOVED_ON_STATES or (h.state is HandoffState.RELEASED and h.acknowledged_at is not None))
    ]
    waiting = tuple(h.unit_id for h in current if h.acknowledged_at is None)
    if not current or waiting:
        return ReportStatus(False, None, waiting)
    return ReportStatus(True, max(h.acknowledged_at for h in current if h.acknowledged_at), ())


def why_at_command_centre(handoff: Handoff) -> str:
    """Why the command centre holds a handoff: escalated, bounced (after declines), re-routed, or fallback (兜底)."""
    if handoff.role is HandoffRole.ESCALATION:
        return "escalated"
    if handoff.replaces_handoff_id is None:
        return "fallback"
    return "bounced" if handoff.bounce_count else "rerouted"
