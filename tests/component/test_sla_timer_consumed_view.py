"""The scheduler fires a deadline only once the partition its awaited fact arrives on is consumed up to due.

A scripted view stands in for the Kafka one (tests/unit/test_runtime_watermarks.py covers that
one; tests/chaos covers both against a real broker): here it says how far each partition is known.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from contracts.topics import ROUTING_HANDOFFS
from contracts.vocabulary import DeadlineKind
from services.runtime.clock import FakeClock
from tests.component.test_sla_timer_harness import (
    MS,
    URGENT_REPORT,
    acknowledged,
    dispatched,
    new_ids,
    running,
    settings_for,
)

BREACH = "DeadlineBreached"


class ScriptedView:
    """A consumed view whose watermarks the test sets by hand (None: the partition is behind)."""

    def __init__(self) -> None:
        self.marks: dict[tuple[str, int], datetime | None] = {}
        self.asked: list[dict] = []

    topics = frozenset({ROUTING_HANDOFFS.name})

    async def watermarks(self, partitions, as_of):
        self.asked.append((set(partitions), as_of))
        return {partition: self.marks.get(partition) for partition in partitions}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sla(tmp_path, clock):
    async with running(settings_for(tmp_path / "sla.db"), clock) as timer:
        yield timer


@pytest.fixture
def view(sla) -> ScriptedView:
    scripted = ScriptedView()
    sla.app.state.scheduler.use_view(scripted)
    return scripted


async def test_the_clock_remembers_the_partition_it_was_armed_from(sla, clock):
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)

    row = await sla.deadline(handoff)
    assert (row["source_topic"], row["source_partition"]) == (ROUTING_HANDOFFS.name, 0)


async def test_a_due_deadline_waits_while_its_partition_is_behind_and_an_ack_made_in_time_then_cancels_it(sla, view, clock):
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    due = clock.now() + URGENT_REPORT
    acked_at = due - MS  # reported in time; its event is still on its way (lag, a restart)

    clock.advance(URGENT_REPORT + timedelta(seconds=5))
    assert await sla.fire_due() == 0
    assert (await sla.deadline(handoff))["state"] == "armed"
    assert view.asked[-1] == ({(ROUTING_HANDOFFS.name, 0)}, clock.now())

    await sla.publish(acknowledged(incident, handoff, acked_at), incident_id=incident)
    view.marks[(ROUTING_HANDOFFS.name, 0)] = clock.now()
    await sla.fire_due()

    assert (await sla.deadline(handoff))["state"] == "cancelled"
    assert [b for b in await sla.emitted(BREACH) if b.data.kind is DeadlineKind.REPORT] == []


async def test_a_deadline_fires_once_the_view_reaches_its_due_instant_and_not_for_a_watermark_short_of_it(sla, view, clock):
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    due = clock.now() + URGENT_REPORT
    clock.advance(URGENT_REPORT + timedelta(seconds=1))

    view.marks[(ROUTING_HANDOFFS.name, 0)] = due - MS
    await sla.fire_due()
    assert await sla.emitted(BREACH) == []

    view.marks[(ROUTING_HANDOFFS.name, 0)] = due
    await sla.fire_due()
    [breach] = await sla.emitted(BREACH)
    assert breach.data.handoff_id == handoff and breach.data.fired_at == clock.now()


async def test_a_held_partition_does_not_hold_back_deadlines_of_another(sla, view, clock):
    behind, ahead = new_ids(), new_ids()
    for incident, handoff in (behind, ahead):
        await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    # The in-memory broker puts everything on partition 0: move one clock to another partition.
    await sla.set_source(ahead[1], partition=3)
    clock.advance(URGENT_REPORT + timedelta(seconds=1))
    view.marks[(ROUTING_HANDOFFS.name, 3)] = clock.now()

    await sla.fire_due()

    assert [b.data.handoff_id for b in await sla.emitted(BREACH)] == [ahead[1]]
    assert (await sla.deadline(behind[1]))["state"] == "armed"


async def test_an_ack_stamped_before_due_that_arrives_after_the_breach_withdraws_it_once_and_the_chain_goes_on(sla, clock):
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    due = clock.now() + URGENT_REPORT
    clock.advance(URGENT_REPORT)
    await sla.fire_due()  # nothing in Kafka yet: the ack waited in routing's outbox through a crash
    clock.advance(timedelta(seconds=20))
    ack = acknowledged(incident, handoff, due - MS)
    await sla.publish(ack, incident_id=incident)
    await sla.publish(ack, incident_id=incident)  # a re-sent copy (new event id) changes nothing

    [breach] = await sla.emitted(BREACH)
    [withdrawn] = await sla.emitted("DeadlineBreachWithdrawn")
    assert withdrawn.data.deadline_id == breach.data.deadline_id
    assert withdrawn.data.fact_at == due - MS and withdrawn.data.withdrawn_at == clock.now()
    assert withdrawn.causation_id is not None and withdrawn.subject == incident
    row = await sla.deadline(handoff)
    assert row["state"] == "withdrawn" and row["late_ack_at"] is None
    # The unit did report, in time: its resolution clock runs from the acknowledgement.
    resolution = await sla.deadline(handoff, DeadlineKind.RESOLUTION)
    assert resolution["state"] == "armed" and datetime.fromisoformat(resolution["armed_at"]) == due - MS


async def test_an_ack_stamped_at_due_after_the_breach_is_late_not_a_withdrawal(sla, clock):
    incident, handoff = new_ids()
    await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
    due = clock.advance(URGENT_REPORT)
    await sla.fire_due()
    await sla.publish(acknowledged(incident, handoff, due), incident_id=incident)

    assert await sla.emitted("DeadlineBreachWithdrawn") == []
    assert (await sla.deadline(handoff))["state"] == "fired"
