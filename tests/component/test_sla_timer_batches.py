"""Runs of dispatches and acknowledgements handled set-based have the effect of handling them one by one.

Each case feeds the same records to the handoffs consumer of two apps: one as a fetched batch
(`process_batch`, which hands runs of one type to the set-based handlers), one record by record
(`process`). The deadlines stored and the events staged must be the same, in the same order.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from contracts.envelope import Envelope, correlation_for, make_envelope
from contracts.events import Event
from services.runtime.clock import FakeClock
from services.runtime.consumer import Record
from services.sla_timer.repository import deadlines
from tests.component.test_sla_timer_harness import (
    MS,
    SlaTimer,
    acknowledged,
    closed,
    dispatched,
    new_ids,
    running,
    settings_for,
)

HANDOFFS_TOPIC = "gridwhistle.routing.handoffs"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """A fresh database URL for each of the two apps of a case."""
    if request.param == "sqlite":
        return lambda name: f"sqlite+aiosqlite:///{tmp_path}/{name}.db"
    request.applymarker(pytest.mark.integration)
    return request.getfixturevalue("pg_url_factory")


def envelope(event: Event, incident_id: str, clock: FakeClock) -> Envelope:
    return make_envelope(
        event, source="test", subject=incident_id, occurred_at=clock.now(), correlation_id=correlation_for(incident_id)
    )


def records(envelopes: list[Envelope], first_offset: int = 0) -> list[Record]:
    return [
        Record(HANDOFFS_TOPIC, 0, first_offset + i, e.key(), e.encode(), e.headers()) for i, e in enumerate(envelopes)
    ]


def handoffs_consumer(sla: SlaTimer) -> Any:
    return next(c for c in sla.runtime.consumers if c.name.endswith("handoffs"))


async def state(sla: SlaTimer) -> tuple[list[tuple], list[tuple]]:
    """(every deadline row, every staged event as (type, deadline or handoff, cause)), in order."""
    async with sla.runtime.engine.connect() as conn:
        rows = list((await conn.execute(select(deadlines).order_by(deadlines.c.id))).all())
    staged = [
        (e.type, getattr(e.data, "deadline_id", None) or getattr(e.data, "handoff_id", None), e.causation_id)
        for e in await sla.emitted()
    ]
    return rows, staged


async def both_ways(
    database, batches: list[list[Envelope]], *, first: list[Envelope] = ()
) -> tuple[Any, Any, list[list[str]]]:
    """Deliver `first` to two apps, then `batches` to one batch by batch and to the other record by record."""
    clock = FakeClock()
    outcomes = []
    async with (
        running(settings_for("unused").model_copy(update={"database_url": database("batched")}), clock) as batched,
        running(settings_for("unused").model_copy(update={"database_url": database("single")}), clock) as single,
    ):
        for prior in first:  # through the in-memory broker, to whichever consumer its topic has
            await batched.deliver(prior)
            await single.deliver(prior)
        offset = 0
        for batch in batches:
            outcomes.append(await handoffs_consumer(batched).process_batch(records(batch, offset)))
            for record in records(batch, offset):
                await handoffs_consumer(single).process(record)
            offset += len(batch)
        return await state(batched), await state(single), outcomes


async def test_a_run_of_dispatches_arms_each_report_clock_once_as_one_by_one_would(database):
    clock = FakeClock()
    ids = [new_ids() for _ in range(6)]
    dispatches = [envelope(dispatched(i, h, clock.now() + k * MS), i, clock) for k, (i, h) in enumerate(ids)]
    # A redelivered batch and a second copy inside the next one change nothing.
    batched, single, outcomes = await both_ways(database, [dispatches, [dispatches[2], *dispatches[4:]]])

    assert batched == single
    rows, staged = batched
    assert len(rows) == 6 and {r.state for r in rows} == {"armed"}
    assert [s[0] for s in staged] == ["DeadlineArmed"] * 6
    assert [s[2] for s in staged] == [d.id for d in dispatches]  # staged in the order of their causes
    assert outcomes[1] == ["duplicate"] * 3


async def test_a_run_of_dispatches_skips_closed_incidents_and_keeps_early_acknowledgements(database):
    clock = FakeClock()
    (gone, gone_handoff), (early, early_handoff), *rest = [new_ids() for _ in range(4)]
    before = [
        envelope(closed(gone, clock.now()), gone, clock),
        envelope(acknowledged(early, early_handoff, clock.now() + 5 * MS), early, clock),
    ]
    dispatches = [
        envelope(dispatched(i, h, clock.now()), i, clock)
        for i, h in [(gone, gone_handoff), (early, early_handoff), *rest]
    ]
    batched, single, _ = await both_ways(database, [dispatches], first=before)

    assert batched == single
    rows, _ = batched
    by_handoff = {r.handoff_id: r for r in rows if r.kind == "report"}
    assert gone_handoff not in by_handoff
    assert by_handoff[early_handoff].state == "cancelled"
    assert {by_handoff[h].state for _, h in rest} == {"armed"}


async def test_a_run_of_in_time_acknowledgements_cancels_and_starts_the_next_clocks_as_one_by_one_would(database):
    clock = FakeClock()
    ids = [new_ids() for _ in range(5)]
    dispatches = [envelope(dispatched(i, h, clock.now()), i, clock) for i, h in ids]
    acks = [envelope(acknowledged(i, h, clock.now() + (k + 1) * timedelta(seconds=30)), i, clock) for k, (i, h) in enumerate(ids)]
    batched, single, _ = await both_ways(database, [dispatches, acks, acks[:2]])

    assert batched == single
    rows, staged = batched
    assert {(r.kind, r.state) for r in rows} == {("report", "cancelled"), ("on_scene", "armed"), ("resolution", "armed")}
    assert len(rows) == 15
    after_acks = staged[5:]
    assert [t for t, _, _ in after_acks].count("DeadlineCancelled") == 5
    for ack in acks:  # each acknowledgement's cancellation comes before the clocks it started
        caused = [t for t, _, cause in after_acks if cause == ack.id]
        assert caused == ["DeadlineCancelled", "DeadlineArmed", "DeadlineArmed"]


async def test_a_late_or_repeated_acknowledgement_in_a_run_is_settled_as_one_by_one_would(database):
    clock = FakeClock()
    (late, late_handoff), *rest = [new_ids() for _ in range(3)]
    dispatches = [envelope(dispatched(i, h, clock.now()), i, clock) for i, h in [(late, late_handoff), *rest]]
    acks = [
        envelope(acknowledged(late, late_handoff, clock.now() + timedelta(minutes=15)), late, clock),  # at due: late
        *[envelope(acknowledged(i, h, clock.now() + timedelta(minutes=1)), i, clock) for i, h in rest],
        envelope(acknowledged(rest[0][0], rest[0][1], clock.now() + timedelta(minutes=2)), rest[0][0], clock),
    ]
    # Dispatches and acknowledgements in one fetched batch: two runs, in order.
    batched, single, _ = await both_ways(database, [[*dispatches, *acks]])

    assert batched == single
    rows, staged = batched
    report = {r.handoff_id: r for r in rows if r.kind == "report"}
    assert report[late_handoff].state == "fired" and report[late_handoff].late_ack_at is not None
    assert {report[h].state for _, h in rest} == {"cancelled"}
    assert [t for t, _, _ in staged].count("DeadlineBreached") == 1
