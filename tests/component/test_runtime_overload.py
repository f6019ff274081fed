"""Every service's API under overload or database trouble: 503 with Retry-After, never a hang or a 500."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy.exc
from fastapi import FastAPI

from contracts.reference import demo_city
from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from services.runtime.clock import FakeClock
from services.runtime.http import ShedLoad, database_trouble_handler
from tests.support import as_user, running, wait_for

CITY = demo_city()
GRID = CITY.grids[0]


def report(description: str = "小区门口垃圾堆放多日无人清理") -> dict:
    return {
        "grid_id": GRID.id,
        "reporter_id": GRID.grid_worker_ids[0],
        "description": description,
        "location": {"latitude": GRID.latitude, "longitude": GRID.longitude, "address": "幸福路8号"},
    }


def refused(app: FastAPI, reason: str) -> float:
    return app.state.runtime.metrics.requests_refused.labels(reason)._value.get()


async def test_a_report_past_the_in_flight_limit_is_refused_at_once_and_probes_still_answer(tmp_path):
    settings = IntakeSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/intake.db", max_requests_in_flight=1)
    app = create_app(settings, clock=FakeClock(datetime(2026, 3, 1, 9, tzinfo=UTC)))
    headers = {**as_user(app, GRID.grid_worker_ids[0]), "Content-Type": "application/json"}
    body_may_finish = asyncio.Event()

    async def slow_body():
        # The first report holds its slot while its body is still on the way (a phone on a bad network).
        await body_may_finish.wait()
        yield json.dumps(report()).encode()

    async with running(app, signed=False) as client:
        held = asyncio.create_task(
            client.post("/api/v1/incidents", content=slow_body(), headers={**headers, "Idempotency-Key": "held"})
        )
        shed = next(m for m in app.user_middleware if m.cls is ShedLoad)
        assert shed.kwargs["limit"] == 1
        await wait_for(lambda: _in_flight(app))

        second = await client.post("/api/v1/incidents", json=report(), headers={**headers, "Idempotency-Key": "second"})
        assert second.status_code == 503
        assert second.headers["Retry-After"] == "1"
        (problem,) = second.json()["detail"]
        assert problem["type"] == "unavailable" and "overloaded" in problem["msg"]
        assert refused(app, "overloaded") == 1
        assert (await client.get("/live")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200

        body_may_finish.set()
        assert (await held).status_code == 202
        retried = await client.post("/api/v1/incidents", json=report(), headers={**headers, "Idempotency-Key": "second"})
        assert retried.status_code == 202, retried.text
        mine = await client.get("/api/v1/incidents", headers=headers)
        assert len(mine.json()["items"]) == 2


async def _in_flight(app: FastAPI) -> bool:
    """True once the held request has entered the shedding middleware (found in the built stack)."""
    layer = app.middleware_stack
    while layer is not None and not isinstance(layer, ShedLoad):
        layer = getattr(layer, "app", None)
    return layer is not None and layer.in_flight == 1


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (sqlalchemy.exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached"), "database_busy"),
        (sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError()), "database_unreachable"),
        (ConnectionRefusedError(111, "Connect call failed"), "database_unreachable"),
    ],
)
async def test_database_trouble_in_a_request_is_a_503_with_retry_after_not_a_500(error, reason):
    seen: list[str] = []
    app = FastAPI()
    app.add_exception_handler(type(error), database_trouble_handler(3, seen.append))

    @app.post("/api/v1/things")
    async def fail() -> None:
        raise error

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.post("/api/v1/things")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "3"
    assert reason.replace("_", " ") in response.json()["detail"][0]["msg"]
    assert seen == [reason]


async def test_an_event_stream_is_never_counted_against_the_limit():
    release = asyncio.Event()
    app = FastAPI()

    @app.get("/api/v1/slow")
    async def slow() -> dict:
        await release.wait()
        return {"ok": True}

    sheds: list[int] = []
    guarded = ShedLoad(app, limit=1, on_shed=lambda: sheds.append(1))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://test") as client:
        streams = [
            asyncio.create_task(client.get("/api/v1/slow", headers={"Accept": "text/event-stream"})) for _ in range(3)
        ]
        await asyncio.sleep(0.05)
        assert guarded.in_flight == 0
        plain = asyncio.create_task(client.get("/api/v1/slow"))
        await wait_for(lambda: _async(guarded.in_flight == 1))
        assert (await client.get("/api/v1/slow")).status_code == 503
        release.set()
        assert [r.status_code for r in await asyncio.gather(*streams, plain)] == [200, 200, 200, 200]
    assert sheds == [1] and guarded.in_flight == 0


async def _async(value: bool) -> bool:
    return value
