"""SLA timer scenarios on a FakeClock: arming, the race at the due instant, warnings, pause, restart.

The scheduler loop is off here; `fire_due()` runs its core at the clock's instant, so nothing sleeps.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from contracts.events import HandoffDeclined, HandoffReassigned, HandoffResolved
from contracts.vocabulary import DeadlineKind, DeclineReason, Disposition, HandoffRole, Urgency
from services.runtime.clock import FakeClock
from services.sla_timer.domain import deadline_id
from tests.component.test_sla_timer_harness import (
    MS,
    URGENT_REPORT,
    acknowledged,
    closed,
    dispatched,
    eventually,
    new_ids,
    running,
    settings_for,
)

BREACH = "DeadlineBreached"


async def report_breaches(sla) -> list:
    """Breaches of report clocks only (an ack also arms on-scene and resolution clocks that may fire later)."""
    return [b for b in await sla.emitted(BREACH) if b.data.kind is DeadlineKind.REPORT]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sla(tmp_path, clock):
    async with running(settings_for(tmp_path / "sla.db"), clock) as timer:
        yield timer


async def test_dispatch_arms_the_report_clock_at_the_dispatch_due_instant_not_recomputed(sla, clock):
    incident, handoff = new_ids()
    dispatched_at = clock.now() - timedelta(minutes=3)  # consumed 3 minutes after routing dispatched
    due = dispatched_at + timedelta(minutes=14)  # routing's figure, whatever the policy says
    await sla.publish(dispatched(incident, handoff, dispatched_at, report_due_at=due), incident_id=incident)

    row = await sla.deadline(handoff)
    assert row["state"] == "armed" and row["kind"] == "report" and row["urgency"] == "urgent"
    assert datetime.fromisoformat(row["due_at"]) == due
    [armed] = await sla.emitted("DeadlineArmed")
    assert armed.data.deadline_id == deadline_id(handoff, DeadlineKind.REPORT)
    assert armed.data.due_at == due and armed.subject == incident
    assert armed.policy_version == "practice-2026.1"


async def test_ack_one_millisecond_before_due_cancels_and_never_breaches(sla, clock):
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    clock.advance(URGENT_REPORT - MS)
    await sla.publish(acknowledged(incident, handoff, clock.now()), incident_id=incident)
    clock.advance(timedelta(hours=1))
    await sla.fire_due()

    assert (await sla.deadline(handoff))["state"] == "cancelled"
    assert await report_breaches(sla) == []
    [cancelled] = await sla.emitted("DeadlineCancelled")
    assert cancelled.data.reason == "acknowledged" and cancelled.data.kind is DeadlineKind.REPORT


async def test_ack_arms_the_resolution_clock_from_the_acknowledgement_instant(sla, clock):
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    acked_at = clock.advance(timedelta(minutes=5))
    await sla.publish(acknowledged(incident, handoff, acked_at), incident_id=incident)

    resolution = await sla.deadline(handoff, DeadlineKind.RESOLUTION)
    assert resolution["state"] == "armed"
    armed = [e for e in await sla.emitted("DeadlineArmed") if e.data.kind is DeadlineKind.RESOLUTION]
    assert armed[0].data.due_at == acked_at + timedelta(hours=24)  # policy: urgent resolution 24 h


async def test_nothing_fires_one_millisecond_before_due_and_the_breach_fires_at_due(sla, clock):
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    clock.advance(URGENT_REPORT - MS)
    await sla.fire_due()
    assert await sla.emitted(BREACH) == []
    clock.advance(MS)
    await sla.fire_due()
    [breach] = await sla.emitted(BREACH)
    assert breach.data.fired_at == breach.data.due_at == clock.now()


async def test_ack_exactly_at_due_after_the_scheduler_fired_is_one_breach_and_a_late_ack(sla, clock):
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    due = clock.advance(URGENT_REPORT)
    await sla.fire_due()  # the scheduler commits first
    await sla.publish(acknowledged(incident, handoff, due), incident_id=incident)

    row = await sla.deadline(handoff)
    assert row["state"] == "fired" and row["late_ack_at"] is not None
    assert len(await sla.emitted(BREACH)) == 1
    assert await sla.emitted("DeadlineCancelled") == []
    # The unit did report, late: its next clock runs from the acknowledgement.
    assert (await sla.deadline(handoff, DeadlineKind.RESOLUTION))["state"] == "armed"


async def test_ack_exactly_at_due_before_the_scheduler_fired_is_the_same_one_breach_and_late_ack(sla, clock):
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    due = clock.advance(URGENT_REPORT)
    await sla.publish(acknowledged(incident, handoff, due), incident_id=incident)  # the ack commits first
    assert await sla.fire_due() == 0

    row = await sla.deadline(handoff)
    assert row["state"] == "fired" and row["late_ack_at"] is not None
    [breach] = await sla.emitted(BREACH)
    assert breach.data.fired_at == due
    assert await sla.emitted("DeadlineCancelled") == []
    assert (await sla.deadline(handoff, DeadlineKind.RESOLUTION))["state"] == "armed"


async def test_ack_one_millisecond_after_due_is_a_breach_then_a_recorded_late_ack(sla, clock):
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    clock.advance(URGENT_REPORT + MS)
    await sla.fire_due()
    late = clock.advance(timedelta(minutes=2))
    await sla.publish(acknowledged(incident, handoff, late), incident_id=incident)

    row = await sla.deadline(handoff)
    assert row["state"] == "fired"
    assert datetime.fromisoformat(row["late_ack_at"]) == late
    assert len(await sla.emitted(BREACH)) == 1


async def test_a_deadline_already_past_at_arming_fires_on_the_next_fire_due(sla, clock):
    incident, handoff = new_ids()
    long_ago = clock.now() - timedelta(hours=1)
    await sla.publish(dispatched(incident, handoff, long_ago), incident_id=incident)
    await sla.fire_due()
    [breach] = await sla.emitted(BREACH)
    assert breach.data.due_at == long_ago + URGENT_REPORT
    assert await sla.emitted("DeadlineWarned") == []  # the breach says it all


async def test_fire_due_twice_emits_one_breach(sla, clock):
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    clock.advance(timedelta(hours=1))
    assert await sla.fire_due() == 1
    assert await sla.fire_due() == 0
    assert len(await sla.emitted(BREACH)) == 1


async def test_warnings_at_half_and_eighty_percent_each_once(sla, clock):
    incident, handoff = new_ids()
    start = clock.now()
    await sla.publish(dispatched(incident, handoff, start), incident_id=incident)
    clock.set(start + timedelta(minutes=7, seconds=30) - MS)
    await sla.fire_due()
    assert await sla.emitted("DeadlineWarned") == []
    clock.advance(MS)
    await sla.fire_due()
    await sla.fire_due()
    clock.set(start + timedelta(minutes=12))
    await sla.fire_due()
    await sla.fire_due()
    warnings = await sla.emitted("DeadlineWarned")
    assert [w.data.fraction for w in warnings] == [0.5, 0.8]
    assert [w.data.fired_at for w in warnings] == [start + timedelta(minutes=7, seconds=30), start + timedelta(minutes=12)]
    assert (await sla.deadline(handoff))["warnings_sent"] == [0.5, 0.8]
    clock.set(start + URGENT_REPORT)
    await sla.fire_due()
    assert len(await sla.emitted(BREACH)) == 1
    assert len(await sla.emitted("DeadlineWarned")) == 2


async def test_duplicate_dispatch_delivery_arms_one_deadline(sla, clock):
    incident, handoff = new_ids()
    envelope = await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    await sla.deliver(envelope)  # the same record again
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)  # re-sent, new event id
    listing = (await sla.http.get("/api/v1/deadlines", params={"incident_id": incident})).json()
    assert len(listing) == 1
    assert len(await sla.emitted("DeadlineArmed")) == 1


async def test_ack_before_dispatch_leaves_no_armed_report_clock_and_never_breaches(sla, clock):
    incident, handoff = new_ids()
    dispatched_at = clock.now()
    acked_at = clock.advance(timedelta(minutes=2))
    await sla.publish(acknowledged(incident, handoff, acked_at), incident_id=incident)
    await sla.publish(dispatched(incident, handoff, dispatched_at), incident_id=incident)
    clock.advance(timedelta(hours=1))
    await sla.fire_due()

    report = await sla.deadline(handoff)
    assert report["state"] == "cancelled" and report["cancel_reason"] == "acknowledged_before_dispatch"
    assert await report_breaches(sla) == []
    # The acknowledgement is not lost: the chain goes on from it.
    resolution = await sla.deadline(handoff, DeadlineKind.RESOLUTION)
    assert resolution["state"] == "armed"


async def test_decline_before_dispatch_arms_nothing(sla, clock):
    incident, handoff = new_ids()
    declined = HandoffDeclined(
        incident_id=incident,
        handoff_id=handoff,
        unit_id="U-POL-P0001",
        actor_id="P0001",
        reason_code=DeclineReason.NOT_OUR_AREA,
        declined_at=clock.now(),
    )
    await sla.publish(declined, incident_id=incident)
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    clock.advance(timedelta(hours=1))
    await sla.fire_due()
    assert (await sla.deadline(handoff))["state"] == "cancelled"
    assert await sla.emitted(BREACH) == []


async def test_incident_closed_cancels_every_open_deadline_of_the_incident(sla, clock):
    incident, lead = new_ids()
    _, co_operating = new_ids()
    other_incident, other_handoff = new_ids()
    await sla.publish(dispatched(incident, lead, clock.now()), incident_id=incident)
    await sla.publish(dispatched(incident, co_operating, clock.now(), urgency=Urgency.GENERAL), incident_id=incident)
    await sla.publish(acknowledged(incident, lead, clock.now()), incident_id=incident)  # lead: on-scene + resolution clocks
    await sla.publish(dispatched(other_incident, other_handoff, clock.now()), incident_id=other_incident)
    await sla.publish(closed(incident, clock.now()), incident_id=incident)
    clock.advance(timedelta(days=5))
    await sla.fire_due()

    listing = (await sla.http.get("/api/v1/deadlines", params={"incident_id": incident})).json()
    assert {d["state"] for d in listing} == {"cancelled"} and len(listing) == 4
    breaches = await sla.emitted(BREACH)
    assert [b.subject for b in breaches] == [other_incident]
    # A dispatch arriving after closure arms nothing.
    _, late_handoff = new_ids()
    await sla.publish(dispatched(incident, late_handoff, clock.now()), incident_id=incident)
    assert await sla.deadline(late_handoff) is None


@pytest.mark.parametrize(
    "make_end",
    [
        lambda i, h, now: HandoffDeclined(
            incident_id=i, handoff_id=h, unit_id="U", actor_id="a", reason_code=DeclineReason.NO_CAPACITY, declined_at=now
        ),
        lambda i, h, now: HandoffReassigned(
            incident_id=i, handoff_id=h, from_unit_id="U", to_unit_id="V", new_handoff_id="h2", actor_id="d"
        ),
        lambda i, h, now: HandoffResolved(
            incident_id=i, handoff_id=h, unit_id="U", role=HandoffRole.LEAD, actor_id="a",
            disposition=Disposition.RESOLVED, resolved_at=now,
        ),
    ],
    ids=["declined", "reassigned", "resolved"],
)
async def test_a_handoff_that_ends_cancels_its_open_deadlines(sla, clock, make_end):
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    await sla.publish(make_end(incident, handoff, clock.now()), incident_id=incident)
    clock.advance(timedelta(hours=1))
    await sla.fire_due()
    assert (await sla.deadline(handoff))["state"] == "cancelled"
    assert await sla.emitted(BREACH) == []


async def test_restart_with_a_backlog_of_overdue_deadlines_fires_each_once(tmp_path, clock):
    database = tmp_path / "sla.db"
    handoffs = []
    async with running(settings_for(database), clock) as first:
        for _ in range(7):
            incident, handoff = new_ids()
            handoffs.append(handoff)
            await first.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    clock.advance(timedelta(hours=3))  # the service was down while every deadline came due

    # A new app on the same file, with its real scheduler loop and a tiny batch to force several rounds.
    settings = settings_for(database, scheduler_enabled=True, fire_batch_size=3)
    async with running(settings, clock) as second:

        async def all_fired() -> bool:
            return len(await second.emitted(BREACH)) >= len(handoffs)

        await eventually(all_fired)
        assert await second.fire_due() == 0
        breaches = await second.emitted(BREACH)
        assert sorted(b.data.handoff_id for b in breaches) == sorted(handoffs)
