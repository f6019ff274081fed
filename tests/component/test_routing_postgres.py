"""Routing on PostgreSQL: row locks make concurrent identical commands apply once."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select

from contracts.vocabulary import Category, Urgency
from services.routing.repository import audit_log
from tests.component.test_routing_service import running_routing

pytestmark = pytest.mark.integration


async def test_concurrent_identical_acknowledgements_and_declines_apply_once(pg_url: str) -> None:
    async with running_routing(pg_url) as harness:
        incident = str(uuid.uuid4())
        await harness.classify(incident, Category.FIRE, Urgency.URGENT)
        officer = await harness.handoff_of(incident, "U-POL-P0001")
        health = await harness.handoff_of(incident, "U-HEALTH-D01")
        acks = await asyncio.gather(*(
            harness.http.post(f"/api/v1/handoffs/{officer['handoff_id']}/acknowledge", json={"actor_id": "P0001"})
            for _ in range(4)
        ))
        declines = await asyncio.gather(*(
            harness.http.post(f"/api/v1/handoffs/{health['handoff_id']}/decline",
                              json={"actor_id": "health-D01-1", "reason_code": "no_capacity"})
            for _ in range(4)
        ))
        assert [r.status_code for r in acks + declines] == [200] * 8
        assert len({r.text for r in acks}) == 1 and len({r.text for r in declines}) == 1
        assert len(await harness.outbox("HandoffAcknowledged")) == 1
        assert len(await harness.outbox("HandoffDeclined")) == 1
        assert len(await harness.outbox("HandoffDispatched")) == 4  # three summoned + one replacement
        async with harness.runtime.engine.connect() as conn:
            reasons = [r.reason for r in (await conn.execute(select(audit_log))).all()]
        assert reasons.count("applied") == 2 and len(reasons) == 8
