"""Idempotency-Keys belong to the caller who sent them: a reporter's (or a city app's) own key space.

Same caller + same key + same body -> the same incident (also after a restart); same caller + same
key + another body -> 409; another caller with the same key -> their own incident, never a replay
of someone else's report and never a conflict that would tell them the key is taken.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import func, select, text

from services.intake.app import create_app
from services.intake.domain import canonical_body_hash
from services.intake.repository import idempotency_keys, incidents
from services.intake.settings import IntakeSettings
from services.runtime.clock import FakeClock
from services.runtime.db import create_engine
from services.runtime.migrations import alembic_config
from tests.support import as_user, running

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
# Two city apps; each is its own caller.
CITY_APPS = {"key-of-app-a": "app-a", "key-of-app-b": "app-b"}
# The intake revision before keys were scoped.
UNSCOPED_REVISION = "05b4e528521a"


def sqlite_url(tmp_path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/intake.db"


def make_app(url: str):
    settings = IntakeSettings(database_url=url, open311_api_keys=CITY_APPS, log_json=False)
    return create_app(settings, clock=FakeClock(START))


def report(grid_id: str, description: str = "3号楼楼下有人打架") -> dict:
    return {"grid_id": grid_id, "description": description, "location": {"address": "幸福路8号"}}


async def post(client, app, user: str, body: dict, key: str):
    return await client.post("/api/v1/incidents", json=body, headers={**as_user(app, user), "Idempotency-Key": key})


async def counts(app) -> tuple[int, int]:
    async with app.state.runtime.engine.connect() as conn:
        reports = (await conn.execute(select(func.count()).select_from(incidents))).scalar_one()
        keys = (await conn.execute(select(func.count()).select_from(idempotency_keys))).scalar_one()
    return reports, keys


async def test_two_reporters_with_one_key_each_get_their_own_incident(tmp_path):
    app = make_app(sqlite_url(tmp_path))
    async with running(app) as client:
        mine = await post(client, app, "W0001", report("G0001"), "report-1")
        theirs = await post(client, app, "W0600", report("G0600"), "report-1")
        assert (mine.status_code, theirs.status_code) == (202, 202), (mine.text, theirs.text)
        assert "Idempotent-Replayed" not in theirs.headers
        assert mine.json()["incident_id"] != theirs.json()["incident_id"]
        # Each one's retry replays their own incident.
        again_mine = await post(client, app, "W0001", report("G0001"), "report-1")
        again_theirs = await post(client, app, "W0600", report("G0600"), "report-1")
        assert again_mine.json()["incident_id"] == mine.json()["incident_id"]
        assert again_theirs.json()["incident_id"] == theirs.json()["incident_id"]
        assert again_mine.headers["Idempotent-Replayed"] == again_theirs.headers["Idempotent-Replayed"] == "true"
        assert await counts(app) == (2, 2)


async def test_a_key_reused_with_another_body_conflicts_only_for_its_owner(tmp_path):
    app = make_app(sqlite_url(tmp_path))
    async with running(app) as client:
        await post(client, app, "W0001", report("G0001"), "report-2")
        conflict = await post(client, app, "W0001", report("G0001", "另一件事"), "report-2")
        assert conflict.status_code == 409 and "different request body" in conflict.json()["detail"]
        # Another reporter's first use of the same key is simply a new report.
        other = await post(client, app, "W0600", report("G0600", "另一件事"), "report-2")
        assert other.status_code == 202 and "Idempotent-Replayed" not in other.headers
        assert await counts(app) == (2, 2)


async def test_concurrent_taps_of_two_reporters_with_one_key_make_one_incident_each(tmp_path):
    app = make_app(sqlite_url(tmp_path))
    async with running(app) as client:
        callers = [("W0001", "G0001"), ("W0600", "G0600")] * 4
        responses = await asyncio.gather(*(post(client, app, user, report(grid), "double-tap") for user, grid in callers))
        assert {r.status_code for r in responses} == {202}
        ids = {grid: {r.json()["incident_id"] for (_, g), r in zip(callers, responses) if g == grid} for grid in ("G0001", "G0600")}
        assert [len(one) for one in ids.values()] == [1, 1] and ids["G0001"] != ids["G0600"]
        assert await counts(app) == (2, 2)


def georeport(reporter: str = "W0001") -> dict:
    return {"service_code": "fire", "grid_id": "G0001", "reporter_id": reporter, "address_string": "幸福路8号"}


async def file(client, api_key: str, fields: dict, key: str):
    return await client.post("/open311/v2/requests.json", params={"api_key": api_key}, data=fields, headers={"Idempotency-Key": key})


async def test_two_city_apps_with_one_key_each_get_their_own_request(tmp_path):
    app = make_app(sqlite_url(tmp_path))
    async with running(app) as client:
        a = await file(client, "key-of-app-a", georeport(), "311-1")
        b = await file(client, "key-of-app-b", georeport(), "311-1")
        assert (a.status_code, b.status_code) == (201, 201)
        assert a.json() != b.json() and "Idempotent-Replayed" not in b.headers
        again = await file(client, "key-of-app-a", georeport(), "311-1")
        assert again.json() == a.json() and again.headers["Idempotent-Replayed"] == "true"
        # A city app's keys are the app's, whoever it names as the reporter.
        conflict = await file(client, "key-of-app-a", georeport("W0002"), "311-1")
        assert conflict.status_code == 409
        assert await counts(app) == (2, 2)


async def test_a_reporter_and_a_city_app_with_one_key_do_not_meet(tmp_path):
    app = make_app(sqlite_url(tmp_path))
    async with running(app) as client:
        filed = await file(client, "key-of-app-a", georeport(), "shared")
        reported = await post(client, app, "W0001", report("G0001"), "shared")
        assert (filed.status_code, reported.status_code) == (201, 202)
        assert filed.json()[0]["service_request_id"] != reported.json()["incident_id"]
        assert await counts(app) == (2, 2)


async def test_scoped_keys_survive_a_restart(tmp_path):
    url = sqlite_url(tmp_path)
    first = make_app(url)
    async with running(first) as client:
        mine = (await post(client, first, "W0001", report("G0001"), "restart")).json()["incident_id"]
        theirs = (await post(client, first, "W0600", report("G0600"), "restart")).json()["incident_id"]
    second = make_app(url)
    async with running(second) as client:
        again_mine = await post(client, second, "W0001", report("G0001"), "restart")
        again_theirs = await post(client, second, "W0600", report("G0600"), "restart")
        assert (again_mine.json()["incident_id"], again_theirs.json()["incident_id"]) == (mine, theirs)
        assert again_mine.headers["Idempotent-Replayed"] == "true"
        assert (await post(client, second, "W0600", report("G0600", "变了"), "restart")).status_code == 409
        assert await counts(second) == (2, 2)


# --- keys stored before they were scoped ------------------------------------------------------


async def store_an_unscoped_key(url: str, *, key: str, body: dict, reporter: str) -> str:
    """A database at the revision before scoping, holding one report filed with an Idempotency-Key."""
    engine = create_engine(url)
    incident_id = "0b5f1c1e-0000-4000-8000-000000000001"
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config("intake", c), UNSCOPED_REVISION))
            await conn.execute(
                text(
                    "INSERT INTO incidents (incident_id, grid_id, reporter_id, description, address, media,"
                    " reported_at, channel) VALUES (:id, :grid, :reporter, :description, :address, '[]', :at, 'api')"
                ),
                {"id": incident_id, "grid": body["grid_id"], "reporter": reporter, "description": body["description"],
                 "address": body["location"]["address"], "at": START},
            )
            await conn.execute(
                text("INSERT INTO idempotency_keys (key, body_hash, incident_id, created_at) VALUES (:k, :h, :id, :at)"),
                # What intake hashed before scoping: the body with the reporter.
                {"k": key, "h": canonical_body_hash({**body, "reporter_id": reporter}), "id": incident_id, "at": START},
            )
    finally:
        await engine.dispose()
    return incident_id


async def assert_unscoped_key_still_answers(url: str) -> None:
    body = report("G0001")
    stored = await store_an_unscoped_key(url, key="before-the-upgrade", body=body, reporter="W0001")
    app = make_app(url)  # starting migrates to the scoped keys
    async with running(app) as client:
        replay = await post(client, app, "W0001", body, "before-the-upgrade")
        assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json()["incident_id"] == stored
        assert (await post(client, app, "W0001", report("G0001", "变了"), "before-the-upgrade")).status_code == 409
        # As before the upgrade, nobody else's body matches the stored hash.
        assert (await post(client, app, "W0600", report("G0600"), "before-the-upgrade")).status_code == 409
        assert await counts(app) == (1, 1)
        # New keys are scoped.
        fresh = await post(client, app, "W0001", report("G0001", "新的一件"), "after-the-upgrade")
        assert fresh.status_code == 202
        async with app.state.runtime.engine.connect() as conn:
            scopes = dict((await conn.execute(select(idempotency_keys.c.key, idempotency_keys.c.scope))).all())
        assert scopes == {"before-the-upgrade": "", "after-the-upgrade": "user:W0001"}


async def test_a_key_stored_before_scoping_still_replays_for_its_reporter(tmp_path):
    await assert_unscoped_key_still_answers(sqlite_url(tmp_path))


@pytest.mark.integration
async def test_a_key_stored_before_scoping_still_replays_for_its_reporter_on_postgresql(pg_url):
    await assert_unscoped_key_still_answers(pg_url)


@pytest.mark.integration
async def test_two_reporters_with_one_key_on_postgresql(pg_url):
    app = make_app(pg_url)
    async with running(app) as client:
        taps = [post(client, app, "W0001", report("G0001"), "pg-tap") for _ in range(5)]
        taps += [post(client, app, "W0600", report("G0600"), "pg-tap") for _ in range(5)]
        responses = await asyncio.gather(*taps)
        assert {r.status_code for r in responses} == {202}
        assert len({r.json()["incident_id"] for r in responses[:5]}) == 1
        assert len({r.json()["incident_id"] for r in responses[5:]}) == 1
        assert responses[0].json()["incident_id"] != responses[5].json()["incident_id"]
        assert await counts(app) == (2, 2)
