"""The chain of clocks: report → on-scene and resolution (from the ack) → the incident's verification.

Durations come from the versioned policy (per urgency, optionally per category) and every
deadline event carries the policy version. A reopen starts a new chain generation.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from contracts.deadline_policy import DEFAULT_POLICY
from contracts.events import (
    HandoffReleased,
    HandoffResolved,
    IncidentEscalatedToCommandCentre,
    IncidentReopened,
    IncidentResolved,
    IncidentVerified,
    ResponderOnScene,
)
from contracts.vocabulary import Category, DeadlineKind, Disposition, HandoffRole, Urgency
from services.runtime.clock import FakeClock
from services.sla_timer.domain import verification_deadline_id
from tests.component.test_sla_timer_harness import (
    ASSIGNEE_UNIT,
    MS,
    acknowledged,
    closed,
    dispatched,
    new_ids,
    running,
    settings_for,
)

URGENT = DEFAULT_POLICY.urgent
GENERAL = DEFAULT_POLICY.general


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sla(tmp_path, clock):
    async with running(settings_for(tmp_path / "sla.db", warnings_enabled=False), clock) as timer:
        yield timer


def on_scene(incident: str, handoff: str, at) -> ResponderOnScene:
    return ResponderOnScene(incident_id=incident, handoff_id=handoff, unit_id=ASSIGNEE_UNIT, actor_id="P0001", arrived_at=at)


def resolved_handoff(incident: str, handoff: str, at) -> HandoffResolved:
    return HandoffResolved(
        incident_id=incident, handoff_id=handoff, unit_id=ASSIGNEE_UNIT, role=HandoffRole.LEAD, actor_id="P0001",
        disposition=Disposition.RESOLVED, resolved_at=at,
    )


def incident_resolved(incident: str, at) -> IncidentResolved:
    return IncidentResolved(incident_id=incident, disposition=Disposition.RESOLVED, resolved_at=at)


async def verification(sla, incident: str, generation: int = 0) -> dict | None:
    response = await sla.http.get(f"/api/v1/deadlines/{verification_deadline_id(incident, generation)}")
    return response.json() if response.status_code == 200 else None


async def _acked(sla, clock, urgency: Urgency = Urgency.URGENT) -> tuple[str, str]:
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now(), urgency=urgency), incident_id=incident)
    clock.advance(timedelta(minutes=3))
    await sla.publish(acknowledged(incident, handoff, clock.now()), incident_id=incident)
    return incident, handoff


async def test_ack_arms_on_scene_and_resolution_clocks_from_the_ack_with_policy_durations(sla, clock):
    _, handoff = await _acked(sla, clock)
    acked_at = clock.now()
    scene = await sla.deadline(handoff, DeadlineKind.ON_SCENE)
    resolution = await sla.deadline(handoff, DeadlineKind.RESOLUTION)
    assert scene["state"] == resolution["state"] == "armed"
    assert scene["due_at"] == (acked_at + timedelta(seconds=URGENT.on_scene)).isoformat().replace("+00:00", "Z")
    assert resolution["due_at"] == (acked_at + timedelta(seconds=URGENT.resolution)).isoformat().replace("+00:00", "Z")
    armed = await sla.emitted("DeadlineArmed")
    assert [a.data.kind for a in armed] == [DeadlineKind.REPORT, DeadlineKind.ON_SCENE, DeadlineKind.RESOLUTION]
    assert {a.policy_version for a in armed} == {DEFAULT_POLICY.version}


async def test_arrival_on_scene_cancels_only_the_on_scene_clock(sla, clock):
    incident, handoff = await _acked(sla, clock)
    clock.advance(timedelta(seconds=URGENT.on_scene) - MS)
    await sla.publish(on_scene(incident, handoff, clock.now()), incident_id=incident)
    clock.advance(timedelta(hours=2))
    await sla.fire_due()

    assert (await sla.deadline(handoff, DeadlineKind.ON_SCENE))["cancel_reason"] == "on_scene"
    assert (await sla.deadline(handoff, DeadlineKind.RESOLUTION))["state"] == "armed"
    assert await sla.emitted("DeadlineBreached") == []


async def test_late_arrival_after_the_on_scene_breach_is_recorded_not_cancelled(sla, clock):
    incident, handoff = await _acked(sla, clock)
    clock.advance(timedelta(seconds=URGENT.on_scene))
    assert await sla.fire_due() == 1
    clock.advance(timedelta(minutes=5))
    await sla.publish(on_scene(incident, handoff, clock.now()), incident_id=incident)

    scene = await sla.deadline(handoff, DeadlineKind.ON_SCENE)
    assert scene["state"] == "fired" and scene["late_ack_at"] is not None
    [breach] = await sla.emitted("DeadlineBreached")
    assert breach.data.kind is DeadlineKind.ON_SCENE
    assert [c.data.kind for c in await sla.emitted("DeadlineCancelled")] == [DeadlineKind.REPORT]


async def test_arrival_consumed_before_the_dispatch_means_no_on_scene_clock(sla, clock):
    incident, handoff = new_ids()
    dispatched_at = clock.now()
    arrived_at = clock.advance(timedelta(minutes=4))
    await sla.publish(acknowledged(incident, handoff, arrived_at), incident_id=incident)
    await sla.publish(on_scene(incident, handoff, arrived_at), incident_id=incident)
    await sla.publish(dispatched(incident, handoff, dispatched_at), incident_id=incident)

    assert await sla.deadline(handoff, DeadlineKind.ON_SCENE) is None
    assert (await sla.deadline(handoff, DeadlineKind.RESOLUTION))["state"] == "armed"


async def test_handoff_resolved_cancels_the_resolution_clock(sla, clock):
    incident, handoff = await _acked(sla, clock)
    await sla.publish(on_scene(incident, handoff, clock.now()), incident_id=incident)
    await sla.publish(resolved_handoff(incident, handoff, clock.now()), incident_id=incident)
    assert (await sla.deadline(handoff, DeadlineKind.RESOLUTION))["cancel_reason"] == "resolved"


async def test_reclassified_to_urgent_the_released_clock_ends_and_the_redispatch_arms_the_shorter_one(sla, clock):
    # Routing answers IncidentReclassified by releasing the handoff and dispatching a successor
    # with min(old due, urgent due); the timer only follows those two facts.
    incident, old = new_ids()
    _, successor = new_ids()
    await sla.publish(dispatched(incident, old, clock.now(), urgency=Urgency.GENERAL), incident_id=incident)
    clock.advance(timedelta(minutes=10))
    released = HandoffReleased(incident_id=incident, handoff_id=old, unit_id=ASSIGNEE_UNIT, reason="reclassified")
    await sla.publish(released, incident_id=incident)
    tight_due = clock.now() + timedelta(minutes=15)
    await sla.publish(
        dispatched(incident, successor, clock.now(), urgency=Urgency.URGENT, report_due_at=tight_due), incident_id=incident
    )
    assert (await sla.deadline(old))["cancel_reason"] == "released"
    assert (await sla.deadline(successor))["due_at"] == tight_due.isoformat().replace("+00:00", "Z")


async def test_incident_resolved_arms_verification_at_the_incident_urgency_and_verified_cancels_it(sla, clock):
    incident, _ = await _acked(sla, clock, urgency=Urgency.GENERAL)
    resolved_at = clock.advance(timedelta(hours=1))
    await sla.publish(incident_resolved(incident, resolved_at), incident_id=incident)
    row = await verification(sla, incident)
    assert row["state"] == "armed" and row["urgency"] == "general" and row["handoff_id"] is None
    assert row["window_seconds"] == GENERAL.verification

    clock.advance(timedelta(hours=5))
    verified = IncidentVerified(incident_id=incident, actor_id="W0001", verified_at=clock.now())
    await sla.publish(verified, incident_id=incident)
    assert (await verification(sla, incident))["cancel_reason"] == "verified"


async def test_an_unverified_resolution_breaches_its_verification_clock_once(sla, clock):
    incident, handoff = await _acked(sla, clock)
    await sla.publish(on_scene(incident, handoff, clock.now()), incident_id=incident)
    await sla.publish(resolved_handoff(incident, handoff, clock.now()), incident_id=incident)
    await sla.publish(incident_resolved(incident, clock.now()), incident_id=incident)
    clock.advance(timedelta(seconds=URGENT.verification))
    assert await sla.fire_due() == 1
    assert await sla.fire_due() == 0
    [breach] = await sla.emitted("DeadlineBreached")
    assert breach.data.kind is DeadlineKind.VERIFICATION and breach.data.handoff_id is None


async def test_a_reopen_ends_the_open_verification_clock_and_the_next_resolution_arms_a_new_generation(sla, clock):
    incident, _ = await _acked(sla, clock)
    await sla.publish(incident_resolved(incident, clock.now()), incident_id=incident)
    reopened = IncidentReopened(incident_id=incident, reason="still leaking", reopen_count=1, reopened_at=clock.now())
    await sla.publish(reopened, incident_id=incident)
    assert (await verification(sla, incident, 0))["cancel_reason"] == "reopened"

    clock.advance(timedelta(hours=3))
    await sla.publish(incident_resolved(incident, clock.now()), incident_id=incident)
    second = await verification(sla, incident, 1)
    assert second["state"] == "armed" and second["armed_at"] == clock.now().isoformat().replace("+00:00", "Z")
    await sla.publish(closed(incident, clock.now()), incident_id=incident)
    assert (await verification(sla, incident, 1))["cancel_reason"] == "incident_closed"


async def test_the_command_centres_round_after_the_reopen_cap_has_a_verification_clock_of_its_own(sla, clock):
    incident, _ = await _acked(sla, clock)
    await sla.publish(incident_resolved(incident, clock.now()), incident_id=incident)
    reopened = IncidentReopened(incident_id=incident, reason="still leaking", reopen_count=1, reopened_at=clock.now())
    await sla.publish(reopened, incident_id=incident)
    await sla.publish(incident_resolved(incident, clock.now()), incident_id=incident)
    escalated = IncidentEscalatedToCommandCentre(
        incident_id=incident, grid_id="G0001", reopen_count=1, reason="not satisfied again", escalated_at=clock.now()
    )
    await sla.publish(escalated, incident_id=incident)
    await sla.publish(escalated, incident_id=incident)  # a re-sent copy starts nothing new
    assert (await verification(sla, incident, 1))["cancel_reason"] == "escalated_to_command_centre"

    clock.advance(timedelta(hours=4))
    await sla.publish(incident_resolved(incident, clock.now()), incident_id=incident)  # the command centre resolved it
    assert (await verification(sla, incident, 2))["state"] == "armed"


async def test_per_category_durations_and_the_policy_version_are_stamped_on_every_deadline_event(tmp_path, clock):
    policy = DEFAULT_POLICY.model_copy(
        update={
            "version": "test-fire-2026.2",
            "per_category": {
                Category.VIOLENCE: {Urgency.URGENT: URGENT.model_copy(update={"on_scene": 600.0, "resolution": 7200.0})}
            },
        }
    )
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy.model_dump(mode="json")), encoding="utf-8")
    settings = settings_for(tmp_path / "sla.db", deadline_policy=str(path), warnings_enabled=False)
    async with running(settings, clock) as sla:
        incident, handoff = new_ids()
        await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)  # violence, urgent
        await sla.publish(acknowledged(incident, handoff, clock.now()), incident_id=incident)
        assert (await sla.deadline(handoff, DeadlineKind.ON_SCENE))["window_seconds"] == 600.0
        assert (await sla.deadline(handoff, DeadlineKind.RESOLUTION))["window_seconds"] == 7200.0
        clock.advance(timedelta(hours=3))
        await sla.fire_due()
        events = await sla.emitted()
        assert {e.type for e in events} >= {"DeadlineArmed", "DeadlineCancelled", "DeadlineBreached"}
        # The report clock's version comes from the dispatch (routing computed that due instant);
        # the clocks the timer computes itself carry the timer's policy.
        stamped = {(e.type, e.data.kind): e.policy_version for e in events}
        assert stamped[("DeadlineArmed", DeadlineKind.ON_SCENE)] == "test-fire-2026.2"
        assert stamped[("DeadlineBreached", DeadlineKind.RESOLUTION)] == "test-fire-2026.2"
        assert all(e.policy_version for e in events)
