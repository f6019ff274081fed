"""SLA timer HTTP API and its events: pause/resume (not by the assignee), reads, metrics, the live loop."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from faststream.kafka.annotations import KafkaMessage

from contracts.envelope import correlation_for
from contracts.events import CATALOGUE
from contracts.topics import SLA_DEADLINES
from contracts.vocabulary import DeadlineKind
from services.runtime.clock import FakeClock, SystemClock
from services.sla_timer.domain import deadline_id
from tests.component.test_sla_timer_harness import (
    ASSIGNEE_MEMBER,
    MS,
    URGENT_REPORT,
    acknowledged,
    dispatched,
    eventually,
    new_ids,
    running,
    settings_for,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sla(tmp_path, clock):
    async with running(settings_for(tmp_path / "sla.db"), clock) as timer:
        yield timer


async def _armed(sla, clock) -> tuple[str, str, str]:
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    return incident, handoff, deadline_id(handoff, DeadlineKind.REPORT)


async def test_pause_across_the_due_instant_holds_the_breach_until_the_resumed_due(sla, clock):
    _, _, deadline = await _armed(sla, clock)
    start = clock.now()
    clock.advance(timedelta(minutes=10))
    paused = await sla.http.post(
        f"/api/v1/deadlines/{deadline}/pause", json={"actor_id": "cmd-D01-1", "reason": "road closed by flood"}
    )
    assert paused.status_code == 200, paused.text
    assert paused.json()["state"] == "paused" and paused.json()["remaining_seconds"] == 300.0

    clock.set(start + URGENT_REPORT + timedelta(hours=1))  # far past the original due instant
    await sla.fire_due()
    assert await sla.emitted("DeadlineBreached") == []

    resumed_at = clock.now()
    resumed = await sla.http.post(f"/api/v1/deadlines/{deadline}/resume", json={"actor_id": "cmd-D01-1"})
    assert resumed.status_code == 200, resumed.text
    new_due = resumed_at + timedelta(minutes=5)
    assert datetime.fromisoformat(resumed.json()["due_at"]) == new_due
    [resumed_event] = await sla.emitted("DeadlineResumed")
    assert resumed_event.data.due_at == new_due and resumed_event.data.actor_id == "cmd-D01-1"

    clock.set(new_due - MS)
    await sla.fire_due()
    assert await sla.emitted("DeadlineBreached") == []
    clock.set(new_due)
    await sla.fire_due()
    [breach] = await sla.emitted("DeadlineBreached")
    assert breach.data.due_at == new_due


async def test_warnings_follow_running_time_across_a_pause(sla, clock):
    _, _, deadline = await _armed(sla, clock)
    start = clock.now()
    clock.set(start + timedelta(minutes=8))
    await sla.fire_due()  # the 50% warning (7:30)
    await sla.http.post(f"/api/v1/deadlines/{deadline}/pause", json={"actor_id": "cmd-D01-1", "reason": "x"})
    clock.advance(timedelta(hours=1))
    await sla.fire_due()
    await sla.http.post(f"/api/v1/deadlines/{deadline}/resume", json={"actor_id": "cmd-D01-1"})
    resumed_at = clock.now()
    clock.set(resumed_at + timedelta(minutes=4) - MS)  # 80% of running time is 12:00, i.e. 4 min after resume
    await sla.fire_due()
    assert [w.data.fraction for w in await sla.emitted("DeadlineWarned")] == [0.5]
    clock.advance(MS)
    await sla.fire_due()
    assert [w.data.fraction for w in await sla.emitted("DeadlineWarned")] == [0.5, 0.8]


async def test_the_assignee_is_refused_when_pausing_its_own_clock(sla, clock):
    _, _, deadline = await _armed(sla, clock)
    # A responder of the summoned unit is no dispatcher at all.
    refused = await sla.http.post(
        f"/api/v1/deadlines/{deadline}/pause", json={"actor_id": ASSIGNEE_MEMBER, "reason": "too busy"}
    )
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    # A duty desk summoned itself dispatches for the station, but not its own clock.
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now(), unit_id="U-DESK-S0101"), incident_id=incident)
    own = deadline_id(handoff, DeadlineKind.REPORT)
    refused = await sla.http.post(f"/api/v1/deadlines/{own}/pause", json={"actor_id": "desk-S0101-1", "reason": "busy"})
    assert refused.status_code == 403
    assert refused.json()["detail"]["code"] == "assignee_cannot_pause"
    assert (await sla.http.get(f"/api/v1/deadlines/{deadline}")).json()["state"] == "armed"
    assert await sla.emitted("DeadlinePaused") == []


async def test_pause_and_resume_refuse_the_wrong_state_and_unknown_deadlines(sla, clock):
    _, _, deadline = await _armed(sla, clock)
    body = {"actor_id": "cmd-D01-1", "reason": "x"}
    assert (await sla.http.post(f"/api/v1/deadlines/{deadline}/resume", json={"actor_id": "cmd-D01-1"})).status_code == 409
    assert (await sla.http.post(f"/api/v1/deadlines/{deadline}/pause", json=body)).status_code == 200
    assert (await sla.http.post(f"/api/v1/deadlines/{deadline}/pause", json=body)).status_code == 409
    assert (await sla.http.post("/api/v1/deadlines/nope/pause", json=body)).status_code == 404
    assert (await sla.http.get("/api/v1/deadlines/nope")).status_code == 404
    assert (await sla.http.post(f"/api/v1/deadlines/{deadline}/pause", json={"actor_id": "cmd-D01-1"})).status_code == 422


async def test_a_due_deadline_cannot_be_paused_out_of_its_breach(sla, clock):
    _, _, deadline = await _armed(sla, clock)
    clock.advance(URGENT_REPORT)  # due, the scheduler has not run yet
    response = await sla.http.post(f"/api/v1/deadlines/{deadline}/pause", json={"actor_id": "cmd-D01-1", "reason": "x"})
    assert response.status_code == 409 and response.json()["detail"]["code"] == "already_due"


async def test_an_ack_while_paused_cancels_the_clock(sla, clock):
    incident, handoff, deadline = await _armed(sla, clock)
    await sla.http.post(f"/api/v1/deadlines/{deadline}/pause", json={"actor_id": "cmd-D01-1", "reason": "x"})
    clock.advance(timedelta(hours=2))
    await sla.publish(acknowledged(incident, handoff, clock.now()), incident_id=incident)
    assert (await sla.deadline(handoff))["state"] == "cancelled"
    await sla.fire_due()
    assert await sla.emitted("DeadlineBreached") == []


async def test_events_carry_the_incident_key_correlation_causation_and_policy(sla, clock):
    incident, handoff = new_ids()
    dispatch = await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    clock.advance(timedelta(hours=1))
    await sla.fire_due()
    armed, breach = await sla.emitted("DeadlineArmed", "DeadlineBreached")
    for event in (armed, breach):
        assert event.subject == incident and event.correlation_id == correlation_for(incident)
        assert event.source == "sla_timer" and event.policy_version == "practice-2026.1"
    assert armed.causation_id == dispatch.id
    assert breach.causation_id == armed.id  # the breach follows from the arming


async def test_outbox_events_reach_the_deadlines_topic(sla, clock):
    received: list = []
    broker = sla.runtime.broker

    @broker.subscriber(sla.runtime.topic(SLA_DEADLINES), group_id="probe")
    async def probe(msg: KafkaMessage) -> None:
        received.append(CATALOGUE.decode(msg.body))

    await broker.start()  # the test broker wires subscribers added after start this way
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    clock.advance(timedelta(hours=1))
    await sla.fire_due()

    async def delivered() -> bool:
        return {e.type for e in received} >= {"DeadlineArmed", "DeadlineBreached"}

    await eventually(delivered)


async def test_metrics_count_by_urgency_and_kind_and_observe_lateness(sla, clock):
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    clock.advance(URGENT_REPORT + timedelta(milliseconds=3))
    await sla.fire_due()
    await sla.app.state.scheduler.refresh_pending_gauge()
    text = (await sla.http.get("/metrics")).text
    assert 'gridwhistle_sla_timer_deadlines_armed_total{kind="report",urgency="urgent"} 1.0' in text
    assert 'gridwhistle_sla_timer_deadlines_breached_total{kind="report",urgency="urgent"} 1.0' in text
    assert 'gridwhistle_sla_timer_breach_lateness_seconds_bucket{le="0.0025",urgency="urgent"} 0.0' in text
    assert 'gridwhistle_sla_timer_breach_lateness_seconds_bucket{le="0.005",urgency="urgent"} 1.0' in text
    assert 'gridwhistle_sla_timer_deadlines_pending{state="armed",urgency="urgent"} 0.0' in text


async def test_the_live_scheduler_fires_a_deadline_armed_sooner_than_its_sleep(tmp_path):
    # Real time: a max sleep of 30 s must not delay a deadline due in 100 ms (the arming wakes it).
    clock = SystemClock()
    settings = settings_for(tmp_path / "sla.db", scheduler_enabled=True, scheduler_max_sleep_seconds=30.0)
    async with running(settings, clock) as sla:
        await _settle(sla)
        incident, handoff = new_ids()
        now = clock.now()
        due = now + timedelta(milliseconds=100)
        await sla.publish(dispatched(incident, handoff, now, report_due_at=due), incident_id=incident)

        async def fired() -> bool:
            return bool(await sla.emitted("DeadlineBreached"))

        await eventually(fired, timeout=5.0)
        [breach] = await sla.emitted("DeadlineBreached")
        assert breach.data.fired_at >= due  # never early
        assert breach.data.fired_at - due < timedelta(seconds=2)


async def _settle(sla) -> None:
    # Let the loop finish its first round and go to sleep on an empty table.
    await asyncio.sleep(0.1)
