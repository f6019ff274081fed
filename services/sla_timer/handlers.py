"""Subscribers and HTTP commands of the SLA timer: envelope in -> deadline rules -> events out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from contracts.deadline_policy import DeadlinePolicy
from contracts.envelope import Envelope
from contracts.events import (
    HandoffAcknowledged,
    HandoffDeclined,
    HandoffDispatched,
    HandoffReassigned,
    HandoffReleased,
    HandoffResolved,
    IncidentClosed,
    IncidentEscalatedToCommandCentre,
    IncidentReopened,
    IncidentResolved,
    IncidentVerified,
    ResponderOnScene,
)
from contracts.reference import ReferenceData
from contracts.vocabulary import Category, DeadlineKind, Urgency
from services.runtime.access import Action, Scope, acting_as, can_see, forbidden, require
from services.runtime.auth import Principal
from services.runtime.host import ServiceRuntime
from services.runtime.outbox import UnitOfWork
from services.sla_timer import facts
from services.sla_timer import repository as repo
from services.sla_timer.domain import (
    NEXT_CLOCKS,
    DeadlineState,
    PauseRefused,
    Settlement,
    check_pause,
    deadline_id,
    is_due,
    next_fire_at,
    next_warning,
    remaining_seconds_at,
    resumed_due_at,
    settle,
    verification_deadline_id,
)
from services.sla_timer.metrics import SlaTimerMetrics
from services.sla_timer.scheduler import DeadlineScheduler


class DeadlineKeeper:
    """Arms, cancels and settles deadlines as handoff and closure facts arrive."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        policy: DeadlinePolicy,
        scheduler: DeadlineScheduler,
        metrics: SlaTimerMetrics,
    ) -> None:
        self._runtime = runtime
        self._policy = policy
        self._scheduler = scheduler
        self._metrics = metrics

    def _armed_row(
        self,
        uow: UnitOfWork,
        *,
        incident_id: str,
        handoff_id: str | None,
        unit_id: str | None,
        kind: DeadlineKind,
        urgency: Urgency,
        category: Category | None,
        armed_at: datetime,
        due_at: datetime,
        policy_version: str,
        generation: int = 0,
    ) -> dict[str, Any]:
        window = max((due_at - armed_at).total_seconds(), 0.0)
        upcoming = next_warning(due_at, window, self._scheduler.warning_fractions, 0.0)
        warning_at = upcoming[1] if upcoming else None
        return {
            "id": deadline_id(handoff_id or incident_id, kind, generation),
            "incident_id": incident_id,
            "handoff_id": handoff_id,
            "unit_id": unit_id,
            "kind": kind.value,
            "urgency": urgency.value,
            "category": category.value if category else None,
            "armed_at": armed_at,
            "due_at": due_at,
            "window_seconds": window,
            "state": DeadlineState.ARMED.value,
            "next_warning_at": warning_at,
            "next_fire_at": next_fire_at(due_at, warning_at),
            "warnings_sent": [],
            "policy_version": policy_version,
            "source_topic": uow.source[0] if uow.source else None,
            "source_partition": uow.source[1] if uow.source else None,
        }

    async def _stage_armed(self, uow: UnitOfWork, stored: Any, cause: Envelope) -> None:
        await uow.emit(facts.armed(stored, now=self._runtime.clock.now(), cause=cause))
        uow.after_commit(lambda: self._scheduler.armed(stored.next_fire_at))
        uow.after_commit(lambda: self._metrics.armed.labels(stored.urgency, stored.kind).inc())

    def _next_clock_rows(self, uow: UnitOfWork, settled: Any, started_at: datetime, early: Any) -> list[dict[str, Any]]:
        """The rows of the clocks that follow `settled` in the chain, running from `started_at`."""
        urgency = Urgency(settled.urgency)
        category = Category(settled.category) if settled.category else None
        rows = []
        for kind in NEXT_CLOCKS.get(DeadlineKind(settled.kind), ()):
            if kind is DeadlineKind.ON_SCENE and early is not None and early.on_scene_at is not None:
                continue  # the arrival was consumed before the ack: that clock has nothing to wait for
            rows.append(
                self._armed_row(
                    uow,
                    incident_id=settled.incident_id,
                    handoff_id=settled.handoff_id,
                    unit_id=settled.unit_id,
                    kind=kind,
                    urgency=urgency,
                    category=category,
                    armed_at=started_at,
                    due_at=started_at + self._policy.duration(kind, urgency, category),
                    policy_version=self._policy.version,
                )
            )
        return rows

    async def arm_next_clocks(self, uow: UnitOfWork, cause: Envelope, settled: Any, started_at: datetime) -> None:
        """Arm the clocks that follow `settled` in the chain, running from `started_at`."""
        if not NEXT_CLOCKS.get(DeadlineKind(settled.kind)):
            return
        early = await repo.get_early_fact(uow.conn, settled.handoff_id)
        await self._arm_all(uow, [(row, cause) for row in self._next_clock_rows(uow, settled, started_at, early)])

    async def settle_awaited(self, uow: UnitOfWork, cause: Envelope, row: Any, fact_at: datetime, reason: str) -> bool:
        """Apply the awaited fact of a clock, stamped `fact_at`: cancel it, or record it late.

        Returns True when this fact settled the clock (the chain goes on), False when it had
        been settled before (a repeat, or the clock was cancelled by something else).
        """
        decision = settle(row.state, row.due_at, fact_at)
        if decision is Settlement.BREACH_THEN_LATE:
            # Late by its own timestamp but not fired yet (the scheduler is behind): the breach
            # is real and is fired here, exactly once, by the same conditional update.
            await self.breach_now(uow, cause, row)
            row = await repo.get_deadline(uow.conn, row.id)
            decision = settle(row.state, row.due_at, fact_at)
        if decision is Settlement.CANCEL:
            return await self.cancel(uow, cause, row, reason)
        if decision is Settlement.WITHDRAW:
            now = self._runtime.clock.now()
            if not await repo.withdraw_if_fired(uow.conn, row.id, at=now):
                return False
            await uow.emit(facts.withdrawn(row, fact_at, now=now, cause=cause))
            uow.after_commit(lambda: self._metrics.withdrawn.labels(row.urgency, row.kind).inc())
            return True
        if decision is Settlement.LATE:
            if not await repo.record_late_ack(uow.conn, row.id, fact_at):
                return False  # a redelivered or repeated fact
            if row.kind == DeadlineKind.REPORT.value:
                uow.after_commit(lambda: self._metrics.late_acks.labels(row.urgency).inc())
            return True
        return False

    async def cancel(self, uow: UnitOfWork, cause: Envelope, row: Any, reason: str) -> bool:
        """Cancel one open deadline and stage DeadlineCancelled; False if it had already fired or ended."""
        now = self._runtime.clock.now()
        if not await repo.cancel_if_open(uow.conn, row.id, at=now, reason=reason):
            return False
        await uow.emit(facts.cancelled(row, reason, now=now, cause=cause))
        uow.after_commit(lambda: self._metrics.cancelled.labels(row.urgency, row.kind).inc())
        return True

    async def breach_now(self, uow: UnitOfWork, cause: Envelope, row: Any) -> None:
        """Fire a due deadline from a handler (the scheduler had not got to it yet)."""
        now = self._runtime.clock.now()
        if await repo.fire_if_armed(uow.conn, row.id, at=now):
            await uow.emit(facts.breached(row, now=now, cause=cause))
            uow.after_commit(lambda: self._scheduler.count_breach(row, now))

    # --- consumed facts -------------------------------------------------------------------

    async def on_dispatched(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """Arm the report clock at the dispatch's own report_due_at (it started at dispatch)."""
        dispatch: HandoffDispatched = envelope.data  # type: ignore[assignment]
        closed, early = await repo.dispatch_context(uow.conn, dispatch.incident_id, dispatch.handoff_id)
        if closed:
            return
        if early is None:
            await self._arm_all(uow, [(self._report_clock(uow, envelope), envelope)])
            return
        await self._settle_dispatch_after_early_fact(uow, envelope, dispatch, early)

    async def _settle_dispatch_after_early_fact(
        self, uow: UnitOfWork, envelope: Envelope, dispatch: HandoffDispatched, early: Any
    ) -> None:
        # The acknowledgement (or the end) of this handoff was consumed first: the report clock
        # is stored already settled, so it can never fire, and the chain goes on from the ack.
        report_id = deadline_id(dispatch.handoff_id, DeadlineKind.REPORT)
        acked_at = early.acknowledged_at
        late = acked_at is not None and is_due(dispatch.report_due_at, acked_at)
        row = {
            "id": report_id,
            "incident_id": dispatch.incident_id,
            "handoff_id": dispatch.handoff_id,
            "unit_id": dispatch.unit_id,
            "kind": DeadlineKind.REPORT.value,
            "urgency": dispatch.urgency.value,
            "category": dispatch.category.value,
            "armed_at": dispatch.dispatched_at,
            "due_at": dispatch.report_due_at,
            "window_seconds": max((dispatch.report_due_at - dispatch.dispatched_at).total_seconds(), 0.0),
            "state": DeadlineState.CANCELLED.value,
            "warnings_sent": [],
            "cancelled_at": self._runtime.clock.now(),
            "cancel_reason": f"{early.ended_by or 'acknowledged'}_before_dispatch",
            "late_ack_at": acked_at if late else None,
            "policy_version": envelope.policy_version or self._policy.version,
        }
        if not await repo.insert_deadline(uow.conn, **row):
            return
        if acked_at is not None and early.ended_by is None:
            stored = await repo.get_deadline(uow.conn, report_id)
            await self.arm_next_clocks(uow, envelope, stored, acked_at)

    async def on_acknowledged(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """Settle the report clock (cancel, or record a late ack) and arm the next clock of the chain."""
        ack: HandoffAcknowledged = envelope.data  # type: ignore[assignment]
        row = await repo.lock_deadline(uow.conn, deadline_id(ack.handoff_id, DeadlineKind.REPORT))
        if row is None:
            await repo.record_early_fact(
                uow.conn,
                handoff_id=ack.handoff_id,
                incident_id=ack.incident_id,
                at=self._runtime.clock.now(),
                acknowledged_at=ack.acknowledged_at,
            )
            return
        if await self.settle_awaited(uow, envelope, row, ack.acknowledged_at, "acknowledged"):
            await self.arm_next_clocks(uow, envelope, row, ack.acknowledged_at)

    async def on_dispatched_many(self, uow: UnitOfWork, envelopes: list[Envelope]) -> None:
        """on_dispatched for each of a run of dispatches, in one lookup and one insert."""
        dispatches: list[HandoffDispatched] = [e.data for e in envelopes]  # type: ignore[misc]
        handoff_ids = [d.handoff_id for d in dispatches]
        closed, early = await repo.dispatch_contexts(uow.conn, {d.incident_id for d in dispatches}, set(handoff_ids))
        if early or len(set(handoff_ids)) < len(handoff_ids):
            # Rare (a fact consumed before its dispatch, a re-dispatched handoff): keep the
            # one-by-one path and its exact order rather than a second set-based variant of it.
            for envelope in envelopes:
                await self.on_dispatched(uow, envelope)
            return
        await self._arm_all(
            uow,
            [(self._report_clock(uow, e), e) for e, d in zip(envelopes, dispatches, strict=True) if d.incident_id not in closed],
        )

    def _report_clock(self, uow: UnitOfWork, envelope: Envelope) -> dict[str, Any]:
        """The row of a dispatch's report clock, which started at the dispatch itself."""
        dispatch: HandoffDispatched = envelope.data  # type: ignore[assignment]
        return self._armed_row(
            uow,
            incident_id=dispatch.incident_id,
            handoff_id=dispatch.handoff_id,
            unit_id=dispatch.unit_id,
            kind=DeadlineKind.REPORT,
            urgency=dispatch.urgency,
            category=dispatch.category,
            armed_at=dispatch.dispatched_at,
            due_at=dispatch.report_due_at,
            policy_version=envelope.policy_version or self._policy.version,
        )

    async def _arm_all(self, uow: UnitOfWork, armed: list[tuple[dict[str, Any], Envelope]]) -> None:
        """Store these clocks in one statement; stage DeadlineArmed for each new one, in the order given."""
        stored = await repo.insert_deadlines_returning(uow.conn, [row for row, _ in armed])
        for row, cause in armed:
            if (kept := stored.get(row["id"])) is not None:
                await self._stage_armed(uow, kept, cause)

    async def on_acknowledged_many(self, uow: UnitOfWork, envelopes: list[Envelope]) -> None:
        """on_acknowledged for each of a run of acknowledgements; in time ones in a few set-based statements."""
        acks: list[HandoffAcknowledged] = [e.data for e in envelopes]  # type: ignore[misc]
        report_ids = [deadline_id(a.handoff_id, DeadlineKind.REPORT) for a in acks]
        locked = await repo.lock_deadlines(uow.conn, report_ids)
        in_time = len(set(report_ids)) == len(report_ids) and all(
            rid in locked and settle(locked[rid].state, locked[rid].due_at, a.acknowledged_at) is Settlement.CANCEL
            for rid, a in zip(report_ids, acks, strict=True)
        )
        if not in_time:
            # A late, early, repeated or already settled acknowledgement among them: one by one.
            for envelope in envelopes:
                await self.on_acknowledged(uow, envelope)
            return
        now = self._runtime.clock.now()
        cancelled = await repo.cancel_many_if_open(uow.conn, report_ids, at=now, reason="acknowledged")
        early = await repo.early_facts(uow.conn, {a.handoff_id for a in acks})
        settled = [
            (envelope, locked[rid], self._next_clock_rows(uow, locked[rid], ack.acknowledged_at, early.get(ack.handoff_id)))
            for envelope, ack, rid in zip(envelopes, acks, report_ids, strict=True)
            if rid in cancelled
        ]
        stored = await repo.insert_deadlines_returning(uow.conn, [row for *_, rows in settled for row in rows])
        for envelope, row, next_rows in settled:  # staged as one by one would: cancelled, then its next clocks
            await uow.emit(facts.cancelled(row, "acknowledged", now=now, cause=envelope))
            uow.after_commit(lambda row=row: self._metrics.cancelled.labels(row.urgency, row.kind).inc())
            for next_row in next_rows:
                if (kept := stored.get(next_row["id"])) is not None:
                    await self._stage_armed(uow, kept, envelope)

    async def on_scene(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """Settle the on-scene clock of a responder who arrived (cancel, or record the arrival late)."""
        arrival: ResponderOnScene = envelope.data  # type: ignore[assignment]
        row = await repo.lock_deadline(uow.conn, deadline_id(arrival.handoff_id, DeadlineKind.ON_SCENE))
        if row is not None:
            await self.settle_awaited(uow, envelope, row, arrival.arrived_at, "on_scene")
            return
        if await repo.get_deadline(uow.conn, deadline_id(arrival.handoff_id, DeadlineKind.REPORT)) is None:
            # Arrived before the dispatch was consumed: the ack that follows must not arm ON_SCENE.
            await repo.record_early_fact(
                uow.conn,
                handoff_id=arrival.handoff_id,
                incident_id=arrival.incident_id,
                at=self._runtime.clock.now(),
                on_scene_at=arrival.arrived_at,
            )

    async def on_handoff_ended(self, uow: UnitOfWork, envelope: Envelope, handoff_id: str, reason: str) -> None:
        """Cancel every open deadline of a handoff that was declined, reassigned, resolved or released."""
        rows = await repo.open_deadlines(uow.conn, handoff_id=handoff_id)
        for row in rows:
            await self.cancel(uow, envelope, row, reason)
        if not rows and await repo.get_deadline(uow.conn, deadline_id(handoff_id, DeadlineKind.REPORT)) is None:
            await repo.record_early_fact(
                uow.conn,
                handoff_id=handoff_id,
                incident_id=envelope.subject,
                at=self._runtime.clock.now(),
                ended_by=reason,
            )

    async def on_incident_closed(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """Cancel every open deadline of a closed incident; later dispatches of it arm nothing."""
        closed: IncidentClosed = envelope.data  # type: ignore[assignment]
        await repo.record_closed(uow.conn, closed.incident_id, closed.closed_at)
        for row in await repo.open_deadlines(uow.conn, incident_id=closed.incident_id):
            await self.cancel(uow, envelope, row, "incident_closed")

    async def on_incident_resolved(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """Arm the incident's verification (核查) clock of its current chain generation."""
        resolved: IncidentResolved = envelope.data  # type: ignore[assignment]
        if await repo.is_closed(uow.conn, resolved.incident_id):
            return
        # IncidentResolved carries no urgency: the incident's latest handoff clock knows it
        # (after a reclassification routing re-dispatched, so the latest clock is the current one).
        latest = await repo.latest_handoff_clock(uow.conn, resolved.incident_id)
        urgency = Urgency(latest.urgency) if latest else Urgency.GENERAL
        category = Category(latest.category) if latest and latest.category else None
        kind = DeadlineKind.VERIFICATION
        clock = self._armed_row(
            uow,
            incident_id=resolved.incident_id,
            handoff_id=None,
            unit_id=None,
            kind=kind,
            urgency=urgency,
            category=category,
            armed_at=resolved.resolved_at,
            due_at=resolved.resolved_at + self._policy.duration(kind, urgency, category),
            policy_version=self._policy.version,
            generation=await repo.chain_generation(uow.conn, resolved.incident_id),
        )
        await self._arm_all(uow, [(clock, envelope)])

    async def on_incident_verified(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """Settle the verification clock of the current generation (cancel, or record it late)."""
        verified: IncidentVerified = envelope.data  # type: ignore[assignment]
        generation = await repo.chain_generation(uow.conn, verified.incident_id)
        row = await repo.lock_deadline(uow.conn, verification_deadline_id(verified.incident_id, generation))
        if row is not None:
            await self.settle_awaited(uow, envelope, row, verified.verified_at, "verified")

    async def on_incident_reopened(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """Start a new chain generation: the open verification clock ends, the next resolution re-arms it."""
        reopened: IncidentReopened = envelope.data  # type: ignore[assignment]
        await self._new_generation(uow, envelope, reopened.incident_id, reopened.reopen_count, "reopened")

    async def on_escalated_to_command_centre(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """The command centre's round is one more generation: its resolution arms a verification clock of its own."""
        escalated: IncidentEscalatedToCommandCentre = envelope.data  # type: ignore[assignment]
        await self._new_generation(
            uow, envelope, escalated.incident_id, escalated.reopen_count + 1, "escalated_to_command_centre"
        )

    async def _new_generation(self, uow: UnitOfWork, envelope: Envelope, incident_id: str, generation: int, reason: str) -> None:
        if not await repo.advance_generation(uow.conn, incident_id, generation):
            return
        for row in await repo.open_deadlines(uow.conn, incident_id=incident_id, kind=DeadlineKind.VERIFICATION.value):
            await self.cancel(uow, envelope, row, reason)

    def routing_handlers(self) -> dict:
        """Handlers for the routing handoffs topic, keyed by event type."""

        def ended(reason: str) -> Any:
            async def handle(uow: UnitOfWork, envelope: Envelope) -> None:
                await self.on_handoff_ended(uow, envelope, envelope.data.handoff_id, reason)  # type: ignore[attr-defined]

            return handle

        return {
            HandoffDispatched.event_type: self.on_dispatched,
            HandoffAcknowledged.event_type: self.on_acknowledged,
            ResponderOnScene.event_type: self.on_scene,
            HandoffDeclined.event_type: ended("declined"),
            HandoffReassigned.event_type: ended("reassigned"),
            HandoffResolved.event_type: ended("resolved"),
            HandoffReleased.event_type: ended("released"),
        }

    def routing_batch_handlers(self) -> dict:
        """Set-based handlers for runs of one type on the routing handoffs topic (the hot ones)."""
        return {
            HandoffDispatched.event_type: self.on_dispatched_many,
            HandoffAcknowledged.event_type: self.on_acknowledged_many,
        }

    def closure_handlers(self) -> dict:
        """Handlers for the closure outcomes topic, keyed by event type."""
        return {
            IncidentResolved.event_type: self.on_incident_resolved,
            IncidentVerified.event_type: self.on_incident_verified,
            IncidentReopened.event_type: self.on_incident_reopened,
            IncidentEscalatedToCommandCentre.event_type: self.on_escalated_to_command_centre,
            IncidentClosed.event_type: self.on_incident_closed,
        }


# --- HTTP ---------------------------------------------------------------------------------


_ACTOR = Field(
    default=None, min_length=1, max_length=64,
    description="Optional. The actor comes from the bearer token; a different id here is refused (403).",
)


class PauseDeadline(BaseModel):
    """Stop a deadline's clock; the actor (a dispatcher of the area) must not belong to the summoned unit."""

    model_config = ConfigDict(extra="forbid")
    actor_id: str | None = _ACTOR
    reason: str = Field(min_length=1, max_length=500)


class ResumeDeadline(BaseModel):
    """Run a paused deadline's clock again; the body may be left out."""

    model_config = ConfigDict(extra="forbid")
    actor_id: str | None = _ACTOR


def deadline_view(row: Any) -> dict:
    """The public shape of one deadline."""
    view = dict(row._mapping)
    view.pop("next_fire_at", None)
    return view


def command_router(
    runtime: ServiceRuntime, scheduler: DeadlineScheduler, reference: ReferenceData
) -> APIRouter:
    """HTTP: read deadlines, pause and resume them (a bearer token on every route).

    The timer does not know an incident's grid: a deadline's area is its unit's, and a clock of
    the whole incident (verification) lies where the incident's summoned units do (the grid's
    officer's station when summoned). Dispatchers of that area pause and resume; the summoned
    units, dispatchers of the area and staff read.
    """
    router = APIRouter(prefix="/api/v1", tags=["sla_timer"])
    caller = Depends(runtime.auth.principal)
    areas = runtime.areas

    def scope_of(row: Any, incident_rows: list[Any]) -> Scope:
        if row.unit_id:
            return areas.of_unit(row.unit_id)
        units = sorted({r.unit_id for r in incident_rows if r.unit_id})
        scopes = [areas.of_unit(u) for u in units]
        where = next((sc for sc in scopes if sc.station_id), scopes[0] if scopes else Scope(None, None, None))
        return Scope(None, where.district_id, where.station_id, frozenset(units))

    async def visible_deadline(conn: Any, principal: Principal, row: Any) -> Scope:
        scope = scope_of(row, [] if row.unit_id else await repo.deadlines_of_incident(conn, row.incident_id))
        if not can_see(principal, scope):
            raise forbidden(f"{principal.user_id} may not see deadline {row.id}")
        return scope

    @router.get("/deadlines", summary="Deadlines of one incident (those the caller may see)")
    async def list_deadlines(incident_id: str = Query(min_length=1, max_length=64), principal: Principal = caller) -> list[dict]:
        async with runtime.engine.connect() as conn:
            rows = await repo.deadlines_of_incident(conn, incident_id)
        shown = [r for r in rows if can_see(principal, scope_of(r, rows))]
        if rows and not shown:
            raise forbidden(f"{principal.user_id} may not see the deadlines of incident {incident_id}")
        return [deadline_view(r) for r in shown]

    @router.get("/deadlines/{deadline_id}", summary="One deadline")
    async def get_deadline(deadline_id: str, principal: Principal = caller) -> dict:
        async with runtime.engine.connect() as conn:
            row = await repo.get_deadline(conn, deadline_id)
            if row is None:
                raise HTTPException(404, detail=f"deadline {deadline_id} not found")
            await visible_deadline(conn, principal, row)
        return deadline_view(row)

    @router.post("/deadlines/{deadline_id}/pause", summary="Stop the clock: a dispatcher of the area, not the assignee")
    async def pause(deadline_id: str, command: PauseDeadline, principal: Principal = caller) -> dict:
        actor = acting_as(principal, command.actor_id)
        async with runtime.unit_of_work() as uow:
            row = await repo.lock_deadline(uow.conn, deadline_id)
            if row is None:
                raise HTTPException(404, detail=f"deadline {deadline_id} not found")
            require(principal, Action.PAUSE, await visible_deadline(uow.conn, principal, row))
            now = runtime.clock.now()
            unit = reference.unit(row.unit_id) if row.unit_id else None
            try:
                check_pause(row.state, row.due_at, now, actor, unit.members if unit else ())
            except PauseRefused as refused:
                status = 403 if refused.code == "assignee_cannot_pause" else 409
                raise HTTPException(status, detail={"code": refused.code, "message": str(refused)}) from None
            remaining = remaining_seconds_at(row.due_at, now)
            if not await repo.pause(uow.conn, row.id, at=now, remaining_seconds=remaining, actor_id=actor):
                raise HTTPException(409, detail={"code": "not_armed", "message": "the deadline changed; retry"})
            await uow.emit(facts.paused(row, actor_id=actor, reason=command.reason, now=now))
            await runtime.audit.accepted(uow, reason=command.reason)
            updated = await repo.get_deadline(uow.conn, row.id)
        return deadline_view(updated)

    @router.post("/deadlines/{deadline_id}/resume", summary="Run the clock again from where it stopped: a dispatcher of the area")
    async def resume(
        deadline_id: str, command: ResumeDeadline | None = Body(default=None), principal: Principal = caller
    ) -> dict:
        actor = acting_as(principal, command.actor_id if command else None)
        async with runtime.unit_of_work() as uow:
            row = await repo.lock_deadline(uow.conn, deadline_id)
            if row is None:
                raise HTTPException(404, detail=f"deadline {deadline_id} not found")
            require(principal, Action.RESUME, await visible_deadline(uow.conn, principal, row))
            if row.state != DeadlineState.PAUSED.value:
                raise HTTPException(
                    409, detail={"code": "not_paused", "message": f"only a paused deadline resumes (it is {row.state})"}
                )
            now = runtime.clock.now()
            due_at = resumed_due_at(row.remaining_seconds, now)
            upcoming = next_warning(
                due_at, row.window_seconds, scheduler.warning_fractions, max(row.warnings_sent, default=0.0)
            )
            warning_at = upcoming[1] if upcoming else None
            fire_at = next_fire_at(due_at, warning_at)
            await repo.resume(uow.conn, row.id, due_at=due_at, next_warning_at=warning_at, next_fire_at=fire_at)
            await uow.emit(facts.resumed(row, actor_id=actor, due_at=due_at, now=now))
            await runtime.audit.accepted(uow, reason="resumed")
            uow.after_commit(lambda: scheduler.armed(fire_at))
            updated = await repo.get_deadline(uow.conn, row.id)
        return deadline_view(updated)

    return router
