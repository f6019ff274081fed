"""Subscribers and HTTP commands of routing: envelope in -> domain call -> handoff state + events out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from contracts.commands import (
    AcknowledgeHandoff,
    DeclineHandoff,
    MarkOnScene,
    ReassignHandoff,
    ResolveHandoff,
    SummonDepartment,
)
from contracts.deadline_policy import DeadlinePolicy
from contracts.envelope import Envelope, Event, correlation_for, follow_up, make_envelope
from contracts.events import (
    DeadlineBreached,
    DeadlineWarned,
    HandoffAcknowledged,
    HandoffDeclined,
    HandoffDispatched,
    HandoffReassigned,
    HandoffReleased,
    HandoffResolved,
    IncidentClassified,
    IncidentClosed,
    IncidentEscalated,
    IncidentEscalatedToCommandCentre,
    IncidentReclassified,
    IncidentReopened,
    ResponderOnScene,
)
from contracts.vocabulary import Category, DeadlineKind, DeclineReason, Disposition, HandoffRole, HandoffState, Urgency
from services.routing import domain
from services.routing import repository as repo
from services.routing.domain import (
    Conflict,
    EscalationPolicy,
    EscalationStep,
    Handoff,
    Invalid,
    Outcome,
    Refused,
    RoutingIndex,
)
from services.routing.metrics import RoutingMetrics
from services.routing.settings import RoutingSettings
from services.runtime.access import STAFF, Action, Forbidden, acting_as, authorize, can_see, forbidden, sees_handoff
from services.runtime.auth import Principal, Role
from services.runtime.host import ServiceRuntime
from services.runtime.logs import get_logger
from services.runtime.outbox import UnitOfWork

SOURCE = "routing"
log = get_logger(__name__)


class Routing:
    """Routing's use cases: each runs inside one unit of work and stages its events in the outbox."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        settings: RoutingSettings,
        index: RoutingIndex,
        policy: DeadlinePolicy,
        metrics: RoutingMetrics,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.index = index
        self.policy = policy
        self.metrics = metrics
        self.escalation_policy = EscalationPolicy(warn_at=dict(settings.escalate_on_warning))

    def now(self) -> datetime:
        """The injected clock's instant."""
        return self.runtime.clock.now()

    def report_due(self, dispatched_at: datetime, urgency: Urgency, category: Category) -> datetime:
        """When a unit dispatched now must have reported (报到)."""
        return dispatched_at + self.policy.duration(DeadlineKind.REPORT, urgency, category)

    # --- emitting ---------------------------------------------------------------------------

    def _envelope(self, event: Event, incident_id: str, cause: Envelope | None, *, stamped: bool = False) -> Envelope:
        version = self.policy.version if stamped else None
        if cause is not None:
            return follow_up(cause, event, source=SOURCE, occurred_at=self.now(), policy_version=version)
        return make_envelope(
            event,
            source=SOURCE,
            subject=incident_id,
            occurred_at=self.now(),
            correlation_id=correlation_for(incident_id),
            policy_version=version,
        )

    async def _dispatch(self, uow: UnitOfWork, handoff: Handoff, cause: Envelope | None) -> bool:
        # Every routing decision ends here: record the reference data and roster that made it.
        handoff = self.index.stamp(handoff)
        if not await repo.insert_handoff(uow.conn, handoff):
            return False  # the same cause arrived again: its handoff already exists
        event = HandoffDispatched(
            incident_id=handoff.incident_id,
            handoff_id=handoff.handoff_id,
            unit_id=handoff.unit_id,
            department=handoff.department,
            role=handoff.role,
            category=handoff.category,
            urgency=handoff.urgency,
            grid_id=handoff.grid_id,
            dispatched_at=handoff.dispatched_at,
            report_due_at=handoff.report_due_at,
            escalation_level=handoff.escalation_level,
            bounce_count=handoff.bounce_count,
            replaces_handoff_id=handoff.replaces_handoff_id,
            reference_version=handoff.reference_version,
            roster_version=handoff.roster_version,
        )
        await uow.emit(self._envelope(event, handoff.incident_id, cause, stamped=True))
        return True

    async def _release(self, uow: UnitOfWork, handoff: Handoff, reason: str, cause: Envelope | None) -> Handoff:
        released = domain.release(handoff, self.now())
        await repo.save_handoff(uow.conn, released)
        event = HandoffReleased(
            incident_id=handoff.incident_id, handoff_id=handoff.handoff_id, unit_id=handoff.unit_id, reason=reason[:500]
        )
        await uow.emit(self._envelope(event, handoff.incident_id, cause))
        return released

    # --- events in --------------------------------------------------------------------------

    async def whistle(
        self, uow: UnitOfWork, cause: Envelope, incident_id: str, grid_id: str, category: Category, urgency: Urgency
    ) -> None:
        """Fan out: one handoff per summoned unit, each with its own report clock from now."""
        now = self.now()
        added = await repo.add_incident(
            uow.conn, incident_id=incident_id, grid_id=grid_id, category=category.value, urgency=urgency.value,
            created_at=now, updated_at=now,
        )
        if not added:
            return  # already routed: a second classification of the same incident dispatches nothing
        due = self.report_due(now, urgency, category)
        for summons in domain.plan_whistle(self.index, grid_id, category, now):
            handoff = domain.dispatch(
                incident_id, summons, category=category, urgency=urgency, grid_id=grid_id,
                dispatched_at=now, report_due_at=due, sequence="whistle",
            )
            await self._dispatch(uow, handoff, cause)

    async def on_classified(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """IncidentClassified: blow the whistle."""
        data: IncidentClassified = envelope.data  # type: ignore[assignment]
        await self.whistle(uow, envelope, data.incident_id, data.grid_id, data.category, data.urgency)
        self.metrics.count(uow.emitted)

    async def on_reclassified(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """IncidentReclassified: summon the new category's units, release the old, tighten deadlines."""
        data: IncidentReclassified = envelope.data  # type: ignore[assignment]
        incident = await repo.get_incident(uow.conn, data.incident_id, for_update=True)
        if incident is None:
            await self.whistle(uow, envelope, data.incident_id, data.grid_id, data.category, data.urgency)
            self.metrics.count(uow.emitted)
            return
        if incident.closed_at is not None:
            return
        now = self.now()
        previous_category, previous_urgency = Category(incident.category), Urgency(incident.urgency)
        active = [h for h in await repo.incident_handoffs(uow.conn, data.incident_id) if h.is_open]
        plan = domain.replan(
            self.index, incident.grid_id, active, category=data.category, previous_category=previous_category,
            urgency=data.urgency, previous_urgency=previous_urgency, now=now,
            fresh_due=self.report_due(now, data.urgency, data.category),
        )
        why = f"reclassified from {previous_category.value}/{previous_urgency.value} to {data.category.value}/{data.urgency.value}"
        for handoff in plan.release:
            await self._release(uow, handoff, f"{why}: no longer summoned in this role", envelope)
        for summons, due in plan.summon:
            handoff = domain.dispatch(
                data.incident_id, summons, category=data.category, urgency=data.urgency, grid_id=incident.grid_id,
                dispatched_at=now, report_due_at=due, sequence=f"reclassified:{envelope.id}",
            )
            await self._dispatch(uow, handoff, envelope)
        for old in plan.superseded:
            await self._release(uow, old, f"{why}: re-dispatched with the urgent deadline", envelope)
            successor = domain.dispatch(
                data.incident_id, domain.Summons(old.unit_id, old.department, old.role, "urgency_tightened"),
                category=data.category, urgency=data.urgency, grid_id=incident.grid_id, dispatched_at=now,
                report_due_at=min(old.report_due_at, self.report_due(now, data.urgency, data.category)),
                sequence=f"supersede:{old.handoff_id}", predecessor=old, bounce_count=old.bounce_count,
            )
            await self._dispatch(uow, successor, envelope)
        await repo.update_incident(
            uow.conn, data.incident_id, category=data.category.value, urgency=data.urgency.value, updated_at=now
        )
        self.metrics.count(uow.emitted)

    async def on_breached(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """DeadlineBreached of a report deadline: climb the escalation ladder (team queues only)."""
        data: DeadlineBreached = envelope.data  # type: ignore[assignment]
        if data.kind is not DeadlineKind.REPORT or data.handoff_id is None:
            return
        late = await self._unreported(uow, data.handoff_id)
        if late is None or self._stale(late, envelope, "breach"):
            return
        raised = await repo.chain_escalation_level(uow.conn, late.root)
        step = domain.plan_escalation(self.index, late, self.settings.max_escalation_repeats, raised_level=raised)
        if step is None:
            if late.state is HandoffState.DISPATCHED:
                log.error("escalation repeats exhausted; the command centre queue keeps the incident",
                          handoff_id=late.handoff_id)
            return
        await self._escalate(uow, envelope, late, step, sequence=f"escalation:{late.handoff_id}")

    async def on_warned(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """DeadlineWarned of a report deadline: the first rung early, when the policy says so for the urgency."""
        data: DeadlineWarned = envelope.data  # type: ignore[assignment]
        if data.kind is not DeadlineKind.REPORT or data.handoff_id is None:
            return
        late = await self._unreported(uow, data.handoff_id)
        if late is None or self._stale(late, envelope, "warning"):
            return
        raised = await repo.chain_escalation_level(uow.conn, late.root)
        step = domain.plan_warning_escalation(
            self.index, late, data.fraction, self.escalation_policy, raised_level=raised
        )
        if step is not None:
            await self._escalate(uow, envelope, late, step, sequence=f"warning:{late.handoff_id}")

    def _stale(self, handoff: Handoff, envelope: Envelope, signal: str) -> bool:
        """True (logged and counted) if the unit reported by the signal's due instant: never escalate then."""
        data: DeadlineBreached | DeadlineWarned = envelope.data  # type: ignore[assignment]
        if not domain.reported_in_time(handoff, data.due_at):
            return False
        # sla_timer fired before it had consumed the acknowledgement; routing, which took it, knows better.
        log.warning(
            "stale deadline signal ignored: the unit reported in time", signal=signal, event_id=str(envelope.id),
            handoff_id=handoff.handoff_id, deadline_id=data.deadline_id, due_at=data.due_at.isoformat(),
            acknowledged_at=handoff.acknowledged_at.isoformat() if handoff.acknowledged_at else None,
        )
        self.metrics.stale_breaches_ignored.labels(signal).inc()
        return True

    async def _unreported(self, uow: UnitOfWork, handoff_id: str) -> Handoff | None:
        """The handoff a deadline signal is about, locked; None when unknown or its incident is closed."""
        handoff = await repo.get_handoff(uow.conn, handoff_id, for_update=True)
        if handoff is None:
            log.warning("deadline signal for an unknown handoff ignored", handoff_id=handoff_id)
            return None
        incident = await repo.get_incident(uow.conn, handoff.incident_id)
        return handoff if incident is not None and incident.closed_at is None else None

    async def _escalate(
        self, uow: UnitOfWork, cause: Envelope, late: Handoff, step: EscalationStep, *, sequence: str
    ) -> None:
        escalation = domain.escalate(
            late, step, self.now(), timedelta(seconds=self.policy.escalation_report_seconds), sequence=sequence
        )
        if not await self._dispatch(uow, escalation, cause):
            return
        # One open escalation per chain: a rung nobody took up gives way to the next (a rung that
        # reported keeps working the incident).
        for rung in await repo.open_escalations(uow.conn, late.root):
            if rung.state is HandoffState.DISPATCHED and rung.handoff_id != escalation.handoff_id:
                await self._release(uow, rung, f"escalated to level {step.level}", cause)
        escalated = IncidentEscalated(
            incident_id=late.incident_id, level=step.level, unit_id=escalation.unit_id, reason=step.reason,
            trigger_handoff_id=late.handoff_id,
        )
        await uow.emit(self._envelope(escalated, late.incident_id, cause))
        self.metrics.count(uow.emitted)

    async def on_reopened(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """IncidentReopened: the lead unit is dispatched again with a new deadline chain."""
        data: IncidentReopened = envelope.data  # type: ignore[assignment]
        incident = await repo.get_incident(uow.conn, data.incident_id, for_update=True)
        if incident is None:
            log.warning("reopen of an incident routing never saw ignored", incident_id=data.incident_id)
            return
        now = self.now()
        category, urgency = Category(incident.category), Urgency(incident.urgency)
        # First receiver leads (首接负责): the unit that led until closure is dispatched again.
        lead = domain.lead_of(await repo.incident_handoffs(uow.conn, data.incident_id))
        if lead is not None:
            summons = domain.Summons(lead.unit_id, lead.department, HandoffRole.LEAD, "reopened")
            summons = self.index.staff(summons, self.index.route(incident.grid_id), now)
        else:
            summons = domain.plan_whistle(self.index, incident.grid_id, category, now)[0]
        handoff = domain.dispatch(
            data.incident_id, summons, category=category, urgency=urgency, grid_id=incident.grid_id,
            dispatched_at=now, report_due_at=self.report_due(now, urgency, category),
            sequence=f"reopen:{data.reopen_count}",
        )
        await self._dispatch(uow, handoff, envelope)
        await repo.update_incident(
            uow.conn, data.incident_id, closed_at=None, reopen_count=data.reopen_count, updated_at=now
        )
        self.metrics.count(uow.emitted)

    async def on_escalated_to_command_centre(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """IncidentEscalatedToCommandCentre: the reopen cap is spent; the district command centre leads (兜底)."""
        data: IncidentEscalatedToCommandCentre = envelope.data  # type: ignore[assignment]
        incident = await repo.get_incident(uow.conn, data.incident_id, for_update=True)
        if incident is None:
            log.warning("command-centre escalation of an incident routing never saw ignored", incident_id=data.incident_id)
            return
        now = self.now()
        category, urgency = Category(incident.category), Urgency(incident.urgency)
        command_centre = self.index.route(incident.grid_id).command_centre_unit_id
        handoff = domain.dispatch(
            data.incident_id, domain.Summons(command_centre, domain.COMMAND, HandoffRole.LEAD, "reopen_cap"),
            category=category, urgency=urgency, grid_id=incident.grid_id, dispatched_at=now,
            report_due_at=self.report_due(now, urgency, category), sequence=f"command-centre:{data.reopen_count}",
        )
        await self._dispatch(uow, handoff, envelope)
        self.metrics.count(uow.emitted)

    async def on_closed(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """IncidentClosed: no more escalations; whatever is still open is released."""
        data: IncidentClosed = envelope.data  # type: ignore[assignment]
        incident = await repo.get_incident(uow.conn, data.incident_id, for_update=True)
        if incident is None:
            return
        for handoff in await repo.incident_handoffs(uow.conn, data.incident_id):
            if handoff.is_open:
                await self._release(uow, handoff, f"incident closed ({data.outcome.value})", envelope)
        await repo.update_incident(uow.conn, data.incident_id, closed_at=data.closed_at, updated_at=self.now())

    # --- commands ---------------------------------------------------------------------------

    def allowed(self, principal: Principal | None, action: Action, handoff: Handoff) -> None:
        """Refused unless the caller's role and scope allow `action` on this handoff (no principal: a trusted caller)."""
        if principal is None:
            return
        try:
            authorize(principal, action, self.scope_of(handoff.grid_id, [handoff.unit_id]), handoff_unit_id=handoff.unit_id)
        except Forbidden as exc:
            raise Refused(str(exc)) from None

    def scope_of(self, grid_id: str, unit_ids: list[str]):  # noqa: ANN201 - a runtime.access Scope
        """Where an incident of `grid_id` with these units sits, for access checks."""
        return self.runtime.areas.of_grid(grid_id, unit_ids)

    async def command(
        self,
        handoff_id: str,
        action: str,
        actor_id: str,
        apply: Callable[[UnitOfWork, Handoff, datetime], Awaitable[Outcome]],
        principal: Principal | None = None,
    ) -> Outcome:
        """Run one command on one handoff: authorise, transition, audit, emit; raise HTTP errors after commit."""
        error: Exception | None = None
        async with self.runtime.unit_of_work() as uow:
            handoff = await repo.get_handoff(uow.conn, handoff_id, for_update=True)
            if handoff is None:
                raise HTTPException(404, detail=f"handoff {handoff_id} not found")
            now = self.now()
            staged = len(uow.emitted)
            try:
                # A savepoint, so that a refusal or conflict undoes the transition but keeps the audit row.
                async with uow.conn.begin_nested():
                    self.allowed(principal, Action(action), handoff)
                    outcome = await apply(uow, handoff, now)
                    if outcome.changed:
                        incident = await repo.get_incident(uow.conn, handoff.incident_id)
                        if incident is not None and incident.closed_at is not None:
                            raise Conflict(f"cannot {action}: incident {handoff.incident_id} is closed")
            except (Refused, Conflict) as rejected:
                del uow.emitted[staged:]
                refused = isinstance(rejected, Refused)
                await repo.audit(uow.conn, at=now, actor=actor_id, action=action, handoff=handoff_id,
                                 allowed=not refused, reason=str(rejected) if refused else f"conflict: {rejected}")
                error = forbidden(str(rejected)) if refused else HTTPException(409, detail=str(rejected))
            else:
                reason = "applied" if outcome.changed else "repeat: already done, same result"
                await repo.audit(uow.conn, at=now, actor=actor_id, action=action, handoff=handoff_id, allowed=True,
                                 reason=reason)
                await self.runtime.audit.accepted(uow, reason=reason)
        if error is not None:
            raise error
        self.metrics.count(uow.emitted)
        if handoff.acknowledged_at is None and outcome.handoff.acknowledged_at is not None:
            self.metrics.observe_report(outcome.handoff)
        return outcome

    async def _after_report(self, uow: UnitOfWork, handoff: Handoff) -> None:
        if handoff.role is HandoffRole.ESCALATION:
            return
        # The summoned unit reported after all: the team queues chasing it can stand down.
        for escalation in await repo.open_escalations(uow.conn, handoff.root):
            await self._release(uow, escalation, f"unit {handoff.unit_id} reported for duty", None)

    async def acknowledge(self, handoff_id: str, command: AcknowledgeHandoff, principal: Principal | None = None) -> Outcome:
        """AcknowledgeHandoff -> HandoffAcknowledged (late when past due, never refused for it)."""

        async def apply(uow: UnitOfWork, handoff: Handoff, now: datetime) -> Outcome:
            domain.require_member(self.index, handoff, command.actor_id)
            outcome = domain.acknowledge(handoff, command.actor_id, now)
            if outcome.changed:
                await self._save_acknowledged(uow, outcome.handoff)
            return outcome

        return await self.command(handoff_id, "acknowledge", command.actor_id, apply, principal)

    async def _save_acknowledged(self, uow: UnitOfWork, handoff: Handoff) -> None:
        await repo.save_handoff(uow.conn, handoff)
        event = HandoffAcknowledged(
            incident_id=handoff.incident_id, handoff_id=handoff.handoff_id, unit_id=handoff.unit_id,
            actor_id=handoff.acknowledged_by or "", acknowledged_at=handoff.acknowledged_at, late=handoff.late,
        )
        await uow.emit(self._envelope(event, handoff.incident_id, None))
        await self._after_report(uow, handoff)

    async def decline(self, handoff_id: str, command: DeclineHandoff, principal: Principal | None = None) -> Outcome:
        """DeclineHandoff -> HandoffDeclined + a replacement HandoffDispatched with the same due instant."""

        async def apply(uow: UnitOfWork, handoff: Handoff, now: datetime) -> Outcome:
            domain.require_member(self.index, handoff, command.actor_id)
            tried = await repo.chain_unit_ids(uow.conn, handoff.root)
            outcome = domain.decline(
                self.index, handoff, command.reason_code, now, tried_unit_ids=tried,
                max_bounces=self.settings.max_bounces, sequence=f"decline:{handoff.handoff_id}",
            )
            if outcome.changed and outcome.successor is not None:
                await repo.save_handoff(uow.conn, outcome.handoff)
                event = HandoffDeclined(
                    incident_id=handoff.incident_id, handoff_id=handoff.handoff_id, unit_id=handoff.unit_id,
                    actor_id=command.actor_id, reason_code=command.reason_code, reason_text=command.reason_text,
                    declined_at=now,
                )
                await uow.emit(self._envelope(event, handoff.incident_id, None))
                await self._dispatch(uow, outcome.successor, None)
            return outcome

        return await self.command(handoff_id, "decline", command.actor_id, apply, principal)

    async def mark_on_scene(self, handoff_id: str, command: MarkOnScene, principal: Principal | None = None) -> Outcome:
        """MarkOnScene -> ResponderOnScene (and HandoffAcknowledged first if nobody had reported yet)."""

        async def apply(uow: UnitOfWork, handoff: Handoff, now: datetime) -> Outcome:
            domain.require_member(self.index, handoff, command.actor_id)
            outcome = domain.mark_on_scene(handoff, command.actor_id, now)
            if outcome.changed:
                if handoff.state is HandoffState.DISPATCHED:
                    await self._save_acknowledged(uow, outcome.handoff)
                await repo.save_handoff(uow.conn, outcome.handoff)
                event = ResponderOnScene(
                    incident_id=handoff.incident_id, handoff_id=handoff.handoff_id, unit_id=handoff.unit_id,
                    actor_id=command.actor_id, arrived_at=now,
                )
                await uow.emit(self._envelope(event, handoff.incident_id, None))
            return outcome

        return await self.command(handoff_id, "on_scene", command.actor_id, apply, principal)

    async def resolve(self, handoff_id: str, command: ResolveHandoff, principal: Principal | None = None) -> Outcome:
        """ResolveHandoff -> HandoffResolved with role and disposition (only after acknowledgement)."""

        async def apply(uow: UnitOfWork, handoff: Handoff, now: datetime) -> Outcome:
            domain.require_member(self.index, handoff, command.actor_id)
            outcome = domain.resolve(handoff, command.actor_id, command.disposition, command.note, now)
            if outcome.changed:
                await repo.save_handoff(uow.conn, outcome.handoff)
                event = HandoffResolved(
                    incident_id=handoff.incident_id, handoff_id=handoff.handoff_id, unit_id=handoff.unit_id,
                    role=handoff.role, actor_id=command.actor_id, disposition=command.disposition,
                    note=command.note, resolved_at=now,
                )
                await uow.emit(self._envelope(event, handoff.incident_id, None))
            return outcome

        return await self.command(handoff_id, "resolve", command.actor_id, apply, principal)

    async def reassign(self, handoff_id: str, command: ReassignHandoff, principal: Principal | None = None) -> Outcome:
        """ReassignHandoff (dispatchers only) -> HandoffReassigned + HandoffDispatched keeping the due instant."""

        async def apply(uow: UnitOfWork, handoff: Handoff, now: datetime) -> Outcome:
            outcome = domain.reassign(
                self.index, handoff, command.actor_id, command.to_unit_id, now,
                sequence=f"reassign:{handoff.handoff_id}", admin=_is_admin(principal),
            )
            if outcome.changed and outcome.successor is not None:
                await repo.save_handoff(uow.conn, outcome.handoff)
                event = HandoffReassigned(
                    incident_id=handoff.incident_id, handoff_id=handoff.handoff_id, from_unit_id=handoff.unit_id,
                    to_unit_id=outcome.successor.unit_id, new_handoff_id=outcome.successor.handoff_id,
                    actor_id=command.actor_id, reason=command.reason,
                )
                await uow.emit(self._envelope(event, handoff.incident_id, None))
                await self._dispatch(uow, outcome.successor, None)
            return outcome

        return await self.command(handoff_id, "reassign", command.actor_id, apply, principal)

    async def summon(self, incident_id: str, command: SummonDepartment, principal: Principal | None = None) -> Outcome:
        """SummonDepartment (dispatchers only) -> HandoffDispatched for the department's unit, co-operating."""
        error: Exception | None = None
        async with self.runtime.unit_of_work() as uow:
            incident = await repo.get_incident(uow.conn, incident_id, for_update=True)
            if incident is None:
                raise HTTPException(404, detail=f"incident {incident_id} not found")
            now = self.now()
            category, urgency = Category(incident.category), Urgency(incident.urgency)
            unit = self.index.department_unit(command.department, self.index.route(incident.grid_id))
            audited = domain.summon_handoff_id(incident_id, unit.id, command.department) if unit else ""
            try:
                if principal is not None:
                    try:
                        authorize(principal, Action.SUMMON, self.scope_of(incident.grid_id, []))
                    except Forbidden as exc:
                        raise Refused(str(exc)) from None
                outcome = domain.summon_department(
                    self.index, incident_id=incident_id, grid_id=incident.grid_id, category=category,
                    urgency=urgency, department=command.department, actor_id=command.actor_id,
                    existing=await repo.incident_handoffs(uow.conn, incident_id),
                    closed=incident.closed_at is not None, now=now,
                    report_due_at=self.report_due(now, urgency, category), admin=_is_admin(principal),
                )
            except (Refused, Conflict, Invalid) as rejected:
                status = 403 if isinstance(rejected, Refused) else 409 if isinstance(rejected, Conflict) else 422
                await repo.audit(uow.conn, at=now, actor=command.actor_id, action="summon", handoff=audited,
                                 allowed=status != 403, reason=f"{status}: {rejected}")
                error = forbidden(str(rejected)) if status == 403 else HTTPException(status, detail=str(rejected))
            else:
                if outcome.changed:
                    await self._dispatch(uow, outcome.handoff, None)
                reason = f"summoned {command.department}: {command.reason}" if outcome.changed else (
                    f"repeat: {command.department} already summoned, same result")
                await repo.audit(uow.conn, at=now, actor=command.actor_id, action="summon",
                                 handoff=outcome.handoff.handoff_id, allowed=True, reason=reason)
                await self.runtime.audit.accepted(uow, reason=reason)
        if error is not None:
            raise error
        self.metrics.count(uow.emitted)
        return outcome


def _is_admin(principal: Principal | None) -> bool:
    # Admins dispatch anywhere, as the console lets them; everyone else must sit at the grid's desk or centre.
    return principal is not None and principal.role is Role.ADMIN


def event_handlers(routing: Routing) -> dict[str, dict[str, Any]]:
    """Handlers per consumed topic name, keyed by event type."""
    return {
        "decisions": {
            IncidentClassified.event_type: routing.on_classified,
            IncidentReclassified.event_type: routing.on_reclassified,
        },
        "deadlines": {DeadlineBreached.event_type: routing.on_breached, DeadlineWarned.event_type: routing.on_warned},
        "outcomes": {
            IncidentReopened.event_type: routing.on_reopened,
            IncidentEscalatedToCommandCentre.event_type: routing.on_escalated_to_command_centre,
            IncidentClosed.event_type: routing.on_closed,
        },
    }


def handoff_view(handoff: Handoff, now: datetime) -> dict[str, Any]:
    """A handoff as JSON; `seconds_left` is the report budget left while nobody has reported."""
    view: dict[str, Any] = {}
    for name, value in handoff.__dict__.items():
        view[name] = value.value if hasattr(value, "value") else value.isoformat() if isinstance(value, datetime) else value
    waiting = handoff.state is HandoffState.DISPATCHED
    view["seconds_left"] = (handoff.report_due_at - now).total_seconds() if waiting else None
    return view


class _ActorBody(BaseModel):
    """A command body. The actor is the signed-in user; `actor_id`, when sent, must be that user."""

    model_config = ConfigDict(extra="forbid")
    actor_id: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="Optional. The actor comes from the bearer token; a different id here is refused (403).",
    )


class AcknowledgeBody(_ActorBody):
    """Report for duty (报到); the body may be left out."""


class OnSceneBody(_ActorBody):
    """Arrived on scene; the body may be left out."""


class DeclineBody(_ActorBody):
    """Refuse with a reason code."""

    reason_code: DeclineReason
    reason_text: str = Field(default="", max_length=500)


class ResolveBody(_ActorBody):
    """Finish the unit's work with a disposition."""

    disposition: Disposition
    note: str = Field(default="", max_length=2000)


class ReassignBody(_ActorBody):
    """Move a handoff to another unit (dispatchers)."""

    to_unit_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="", max_length=500)


class SummonBody(_ActorBody):
    """Add a department to the whistle (dispatchers)."""

    department: str = Field(min_length=1, max_length=40)
    reason: str = Field(default="", max_length=500)


def command_router(routing: Routing) -> APIRouter:
    """HTTP: the summoned unit's commands, dispatchers' reassignment, handoff and queue views.

    Every route needs a bearer token (ServiceRuntime.http_app); the acting user is the token's,
    and each command is checked against the caller's role and scope inside its transaction.
    """
    router = APIRouter(prefix="/api/v1", tags=["routing"])
    engine = routing.runtime.engine
    areas = routing.runtime.areas
    caller = Depends(routing.runtime.auth.principal)

    def result(outcome: Outcome) -> dict[str, Any]:
        body = handoff_view(outcome.handoff, routing.now())
        body["successor_handoff_id"] = outcome.handoff.successor_handoff_id
        return body

    def fields(body: _ActorBody | None) -> dict[str, Any]:
        return body.model_dump(exclude={"actor_id"}) if body is not None else {}

    @router.post("/handoffs/{handoff_id}/acknowledge", summary="Report for duty (报到): a member of the summoned unit")
    async def acknowledge(
        handoff_id: str, body: AcknowledgeBody | None = Body(default=None), principal: Principal = caller
    ) -> dict:
        actor = acting_as(principal, body.actor_id if body else None)
        return result(await routing.acknowledge(handoff_id, AcknowledgeHandoff(actor_id=actor), principal))

    @router.post("/handoffs/{handoff_id}/decline", summary="Refuse with a reason code; re-routed with the remaining budget")
    async def decline(handoff_id: str, body: DeclineBody, principal: Principal = caller) -> dict:
        actor = acting_as(principal, body.actor_id)
        return result(await routing.decline(handoff_id, DeclineHandoff(actor_id=actor, **fields(body)), principal))

    @router.post("/handoffs/{handoff_id}/on-scene", summary="A responder of the summoned unit arrived")
    async def on_scene(handoff_id: str, body: OnSceneBody | None = Body(default=None), principal: Principal = caller) -> dict:
        actor = acting_as(principal, body.actor_id if body else None)
        return result(await routing.mark_on_scene(handoff_id, MarkOnScene(actor_id=actor), principal))

    @router.post("/handoffs/{handoff_id}/resolve", summary="Finish the unit's work (处置)")
    async def resolve(handoff_id: str, body: ResolveBody, principal: Principal = caller) -> dict:
        actor = acting_as(principal, body.actor_id)
        return result(await routing.resolve(handoff_id, ResolveHandoff(actor_id=actor, **fields(body)), principal))

    @router.post("/handoffs/{handoff_id}/reassign", summary="A dispatcher of the area moves the handoff; the due instant is kept")
    async def reassign(handoff_id: str, body: ReassignBody, principal: Principal = caller) -> dict:
        actor = acting_as(principal, body.actor_id)
        return result(await routing.reassign(handoff_id, ReassignHandoff(actor_id=actor, **fields(body)), principal))

    @router.post("/incidents/{incident_id}/summon", summary="A dispatcher of the area adds a department to the whistle (增派部门)")
    async def summon(incident_id: str, body: SummonBody, principal: Principal = caller) -> dict:
        actor = acting_as(principal, body.actor_id)
        return result(await routing.summon(incident_id, SummonDepartment(actor_id=actor, **fields(body)), principal))

    @router.get("/handoffs/{handoff_id}", summary="One handoff: its unit, dispatchers of the area, staff, the grid's worker")
    async def get_handoff(handoff_id: str, principal: Principal = caller) -> dict:
        async with engine.connect() as conn:
            handoff = await repo.get_handoff(conn, handoff_id)
        if handoff is None:
            raise HTTPException(404, detail=f"handoff {handoff_id} not found")
        if not sees_handoff(principal, routing.scope_of(handoff.grid_id, [handoff.unit_id]), handoff.unit_id):
            raise forbidden(f"{principal.user_id} may not see handoff {handoff_id}")
        return handoff_view(handoff, routing.now())

    @router.get("/incidents/{incident_id}/handoffs", summary="Every handoff of an incident (a responder: their unit's); whether all units reported")
    async def incident_handoffs(incident_id: str, principal: Principal = caller) -> dict:
        async with engine.connect() as conn:
            handoffs = await repo.incident_handoffs(conn, incident_id)
        if not handoffs:
            raise HTTPException(404, detail=f"incident {incident_id} has no handoffs")
        scope = routing.scope_of(handoffs[0].grid_id, [h.unit_id for h in handoffs])
        if not can_see(principal, scope):
            raise forbidden(f"{principal.user_id} may not see incident {incident_id}")
        now = routing.now()
        status = domain.report_status(handoffs)
        return {
            "incident_id": incident_id,
            "all_reported": status.all_reported,
            "all_reported_at": status.all_reported_at.isoformat() if status.all_reported_at else None,
            "waiting_on": list(status.waiting_on),
            "handoffs": [handoff_view(h, now) for h in handoffs if sees_handoff(principal, scope, h.unit_id)],
        }

    async def queue_of(unit_ids: list[str], *, with_why: bool = False) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            handoffs = await repo.units_queue(conn, unit_ids)
        now = routing.now()
        views = [handoff_view(h, now) for h in handoffs]
        if with_why:
            for view, handoff in zip(views, handoffs, strict=True):
                view["why"] = domain.why_at_command_centre(handoff)
        return views

    @router.get("/units/{unit_id}/queue", summary="A unit's open handoffs, soonest report deadline first: its members, dispatchers of its area, staff")
    async def unit_queue(unit_id: str, principal: Principal = caller) -> dict:
        if routing.index.unit(unit_id) is None:
            raise HTTPException(404, detail=f"unit {unit_id} not found")
        if not areas.sees_unit(principal, unit_id):
            raise forbidden(f"{principal.user_id} may not see the queue of {unit_id}")
        return {"unit_id": unit_id, "handoffs": await queue_of([unit_id])}

    @router.get("/departments/{code}/queue", summary="A department's open handoffs (one district or all), soonest due first: staff, a command centre for its district")
    async def department_queue(code: str, district_id: str | None = Query(default=None), principal: Principal = caller) -> dict:
        units = routing.index.units_of(code, district_id)
        if not units:
            raise HTTPException(404, detail=f"no unit of department {code!r}" + (f" in {district_id}" if district_id else ""))
        if principal.role not in STAFF and not all(areas.sees_unit(principal, u.id) for u in units):
            raise forbidden(f"{principal.user_id} may not see every unit of {code}" + (f" in {district_id}" if district_id else ""))
        return {"department": code, "district_id": district_id, "handoffs": await queue_of([u.id for u in units])}

    @router.get("/command-centres/{district_id}/queue", summary="What a district command centre owns, soonest due first: staff, the district's dispatchers")
    async def command_centre_queue(district_id: str, principal: Principal = caller) -> dict:
        unit_id = routing.index.command_centre_of(district_id)
        if unit_id is None:
            raise HTTPException(404, detail=f"district {district_id} not found")
        if principal.role not in STAFF and not (principal.role is Role.DISPATCHER and principal.district_id == district_id):
            raise forbidden(f"{principal.user_id} is not a dispatcher of district {district_id}")
        return {"district_id": district_id, "unit_id": unit_id, "handoffs": await queue_of([unit_id], with_why=True)}

    @router.get("/units/{unit_id}", summary="A unit with its members (the directory: any signed-in caller)")
    async def get_unit(unit_id: str) -> dict:
        unit = routing.index.unit(unit_id)
        if unit is None:
            raise HTTPException(404, detail=f"unit {unit_id} not found")
        return unit.model_dump(mode="json")

    return router
