"""The console's "add department / 增派部门" action: checked here, forwarded to routing as the signed-in dispatcher."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.component.test_console_api import HOME_GRID, Harness, running_console

SUMMON = {"department": "health", "reason": "伤者需要救护", "actor_id": "desk-S0101-1"}


@pytest.fixture
async def console(tmp_path) -> AsyncIterator[Harness]:
    async with running_console(tmp_path) as harness:
        yield harness


async def test_a_dispatcher_of_the_area_summons_a_department_as_themselves(console: Harness):
    incident_id, _ = await console.whistle(HOME_GRID)
    body = {**SUMMON, "actor_id": "someone-else"}  # the body's actor is ignored
    answer = await console.http.post(
        f"/api/v1/incidents/{incident_id}/summon", json=body, headers=await console.as_user("cmd-D01-1")
    )
    assert answer.status_code == 200
    (url, forwarded, _), = console.forwarded
    assert url == f"http://127.0.0.1:8002/api/v1/incidents/{incident_id}/summon"
    assert forwarded == {"actor_id": "cmd-D01-1", "department": "health", "reason": "伤者需要救护"}


async def test_summon_is_refused_to_responders_and_hidden_from_other_stations(console: Harness):
    incident_id, _ = await console.whistle(HOME_GRID)
    path = f"/api/v1/incidents/{incident_id}/summon"
    responder = await console.http.post(path, json=SUMMON, headers=await console.as_user("P0001"))
    assert responder.status_code == 403
    stranger = await console.http.post(path, json=SUMMON, headers=await console.as_user("desk-S0102-1"))
    assert stranger.status_code == 404  # not in their area: not even confirmed to exist
    worker = await console.http.post(path, json=SUMMON, headers=await console.as_user("W0001"))
    assert worker.status_code == 403
    assert console.forwarded == []
