"""Closure on PostgreSQL: row locks, JSON summaries and hashes survive the real database."""

from __future__ import annotations

import asyncio

import pytest

from contracts.events import IncidentResolved, IncidentVerified
from contracts.vocabulary import HandoffRole
from services.closure.app import create_app
from services.closure.settings import ClosureSettings
from services.closure.verify_chain import check_chains
from services.runtime.clock import FakeClock
from tests.component.test_closure_service import Incident, feedback, verify
from tests.support import running

pytestmark = pytest.mark.integration


async def test_concurrent_identical_verifications_apply_once_and_the_chain_verifies(pg_url):
    clock = FakeClock()
    app = create_app(ClosureSettings(database_url=pg_url, log_json=False), clock=clock)
    async with running(app) as client:
        incident = Incident(app, clock)
        await incident.report()
        await incident.dispatch("lead")
        await incident.dispatch("co", HandoffRole.CO_OPERATING)
        await incident.resolve("lead")
        await incident.resolve("co", HandoffRole.CO_OPERATING)
        responses = await asyncio.gather(*(verify(client, incident) for _ in range(4)))
        assert [r.status_code for r in responses] == [200] * 4
        assert await incident.emitted() == [IncidentResolved, IncidentVerified]
        closed = await feedback(client, incident, "satisfied")
        assert closed.json()["outcome"] == "resolved"
        timeline = (await client.get(f"/api/v1/incidents/{incident.id}/timeline")).json()
        assert timeline["chain"] == "intact"
    assert await check_chains(pg_url) == (1, None)
