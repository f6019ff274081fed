"""Open311 GeoReport v2: services, create (form and JSON), get and list, errors in GeoReport shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contracts.events import IncidentClosed, IncidentReported
from contracts.reference import demo_city
from contracts.vocabulary import Category, ClosureOutcome
from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from services.runtime.auth import DEV_OPEN311_API_KEY
from services.runtime.clock import FakeClock
from tests.support import envelope_for, outbox_envelopes, publish, running

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CITY_APP = {"api_key": DEV_OPEN311_API_KEY}  # the demo city app's key (dev mode)
CITY = demo_city()


def make_app(tmp_path, clock: FakeClock | None = None):
    settings = IntakeSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/intake.db")
    return create_app(settings, clock=clock or FakeClock(START))


async def test_services_list_every_category_with_names_in_both_languages(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        services = (await client.get("/open311/v2/services.json")).json()
        assert {s["service_code"] for s in services} == {c.value for c in Category}
        fire = next(s for s in services if s["service_code"] == "fire")
        assert fire["service_name"] == "火灾 / Fire" and fire["group"] == "emergencies"
        definition = (await client.get("/open311/v2/services/fire.json")).json()
        assert {a["code"] for a in definition["attributes"]} == {"grid_id", "reporter_id"}
        missing = await client.get("/open311/v2/services/nope.json")
        assert missing.status_code == 404 and missing.json()[0]["code"] == 404


async def test_form_encoded_request_round_trips(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        created = await client.post(
            "/open311/v2/requests.json", params=CITY_APP,
            data={
                "service_code": "environment",
                "lat": "28.12",
                "long": "112.92",
                "address_string": "幸福路8号",
                "description": "小区门口垃圾堆放很臭",
                "media_url": "https://media.example/1.jpg",
                "attribute[grid_id]": "G0001",
                "attribute[reporter_id]": "W0001",
            },
        )
        assert created.status_code == 201, created.text
        (row,) = created.json()
        request_id = row["service_request_id"]

        (envelope,) = await outbox_envelopes(app)
        assert isinstance(envelope.data, IncidentReported)
        assert envelope.data.category_hint is Category.ENVIRONMENT and envelope.data.grid_id == "G0001"
        assert envelope.data.media == ["https://media.example/1.jpg"]

        (request,) = (await client.get(f"/open311/v2/requests/{request_id}.json")).json()
        assert request["service_request_id"] == request_id
        assert (request["status"], request["service_code"]) == ("open", "environment")
        assert (request["lat"], request["long"], request["address"]) == (28.12, 112.92, "幸福路8号")
        assert request["requested_datetime"] == "2026-03-01T09:00:00Z"
        assert request["description"] == "小区门口垃圾堆放很臭"
        assert {"updated_datetime", "agency_responsible"} <= request.keys()

        # The same incident through the grid worker's API.
        assert (await client.get(f"/api/v1/incidents/{request_id}")).json()["reporter_id"] == "W0001"


async def test_json_request_without_grid_uses_the_nearest_grid_centre(tmp_path):
    app = make_app(tmp_path)
    grid = CITY.grid("G0042")
    async with running(app) as client:
        created = await client.post(
            "/open311/v2/requests.json", params=CITY_APP,
            json={
                "service_code": "noise",
                "lat": grid.latitude + 0.0001,
                "long": grid.longitude,
                "description": "广场舞噪音扰民",
                "reporter_id": "W0042",
            },
        )
        assert created.status_code == 201, created.text
        (envelope,) = await outbox_envelopes(app)
        assert envelope.data.grid_id == "G0042"


async def test_list_filters_by_service_code_status_and_start_date(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        async def create(code: str, grid: str) -> str:
            response = await client.post(
                "/open311/v2/requests.json", params=CITY_APP,
                data={"service_code": code, "address_string": "幸福路", "description": f"{code} 测试 {grid}",
                      "grid_id": grid, "reporter_id": "W0001"},
            )
            assert response.status_code == 201, response.text
            return response.json()[0]["service_request_id"]

        noise = await create("noise", "G0001")
        clock.advance(timedelta(hours=1))
        fire = await create("fire", "G0100")
        clock.advance(timedelta(hours=1))
        theft = await create("theft", "G0200")
        await publish(
            app,
            envelope_for(IncidentClosed(incident_id=theft, outcome=ClosureOutcome.RESOLVED, closed_at=clock.now()), theft),
        )

        everything = (await client.get("/open311/v2/requests.json")).json()
        assert [r["service_request_id"] for r in everything] == [theft, fire, noise]
        only_fire = (await client.get("/open311/v2/requests.json", params={"service_code": "fire"})).json()
        assert [r["service_request_id"] for r in only_fire] == [fire]
        closed = (await client.get("/open311/v2/requests.json", params={"status": "closed"})).json()
        assert [(r["service_request_id"], r["status"]) for r in closed] == [(theft, "closed")]
        open_ = (await client.get("/open311/v2/requests.json", params={"status": "open"})).json()
        assert {r["service_request_id"] for r in open_} == {noise, fire}
        recent = (await client.get("/open311/v2/requests.json", params={"start_date": "2026-03-01T09:30:00Z"})).json()
        assert {r["service_request_id"] for r in recent} == {fire, theft}


async def test_errors_come_back_in_georeport_shape_and_create_nothing(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        cases = [
            ({"lat": "28.1", "long": "112.9", "reporter_id": "W1"}, "service_code is required"),
            ({"service_code": "alien", "grid_id": "G0001", "reporter_id": "W1"}, "unknown service_code"),
            ({"service_code": "fire", "description": "着火", "reporter_id": "W1", "address_string": "x"}, "grid_id is required"),
            ({"service_code": "fire", "grid_id": "G0001", "address_string": "x"}, "reporter_id is required"),
            ({"service_code": "fire", "grid_id": "G9999", "reporter_id": "W1", "address_string": "x"}, "unknown grid"),
            ({"service_code": "fire", "grid_id": "G0001", "reporter_id": "W1"}, "location"),
            ({"service_code": "fire", "lat": "north", "long": "1", "reporter_id": "W1"}, "lat must be a number"),
        ]
        for fields, message in cases:
            response = await client.post("/open311/v2/requests.json", params=CITY_APP, data=fields)
            assert response.status_code == 400, (fields, response.text)
            (error,) = response.json()
            assert error["code"] == 400 and message in error["description"], (fields, error)
        broken = await client.post(
            "/open311/v2/requests.json", params=CITY_APP, content=b"{oops", headers={"Content-Type": "application/json"}
        )
        assert broken.status_code == 400 and "not valid JSON" in broken.json()[0]["description"]
        missing = await client.get("/open311/v2/requests/nope.json")
        assert missing.status_code == 404 and missing.json() == [
            {"code": 404, "description": "service request 'nope' not found"}
        ]
        bad_filter = await client.get("/open311/v2/requests.json", params={"status": "pending"})
        assert bad_filter.status_code == 400 and bad_filter.json()[0]["code"] == 400
        assert await outbox_envelopes(app) == []


async def test_open311_honours_idempotency_keys(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        fields = {"service_code": "fire", "grid_id": "G0001", "reporter_id": "W1", "address_string": "幸福路8号"}
        headers = {"Idempotency-Key": "open311-1"}
        first = await client.post("/open311/v2/requests.json", params=CITY_APP, data=fields, headers=headers)
        again = await client.post("/open311/v2/requests.json", params=CITY_APP, data=fields, headers=headers)
        assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
        conflict = await client.post(
            "/open311/v2/requests.json", params=CITY_APP, data={**fields, "description": "另一件"}, headers=headers
        )
        assert conflict.status_code == 409 and conflict.json()[0]["code"] == 409
        assert len(await outbox_envelopes(app)) == 1


async def three_requests(client, clock: FakeClock) -> list[str]:
    """Noise at 09:00, fire at 10:00, theft at 11:00, each in its own grid."""
    ids = []
    for code, grid in (("noise", "G0001"), ("fire", "G0100"), ("theft", "G0200")):
        response = await client.post(
            "/open311/v2/requests.json", params=CITY_APP,
            data={"service_code": code, "address_string": "幸福路", "description": f"{code} 测试 {grid}",
                  "grid_id": grid, "reporter_id": "W0001"},
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()[0]["service_request_id"])
        clock.advance(timedelta(hours=1))
    return ids


async def listed(client, **params) -> list[str]:
    response = await client.get("/open311/v2/requests.json", params={**CITY_APP, **params})
    assert response.status_code == 200, response.text
    return [r["service_request_id"] for r in response.json()]


async def test_list_filters_by_end_date_inclusively_and_with_start_date(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        noise, fire, theft = await three_requests(client, clock)
        assert await listed(client, end_date="2026-03-01T09:59:59Z") == [noise]
        # Inclusive: a request filed at exactly end_date is listed; an offset is honoured.
        assert await listed(client, end_date="2026-03-01T18:00:00+08:00") == [fire, noise]
        assert await listed(client, start_date="2026-03-01T10:00:00Z", end_date="2026-03-01T10:00:00Z") == [fire]
        assert await listed(client, start_date="2026-03-01T09:30:00Z", end_date="2026-03-01T10:30:00Z") == [fire]
        assert await listed(client, end_date="2026-03-01T08:00:00Z") == []
        assert await listed(client, end_date="2026-03-02T00:00:00Z") == [theft, fire, noise]


async def test_list_filters_by_service_request_ids(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        noise, fire, theft = await three_requests(client, clock)
        assert await listed(client, service_request_id=fire) == [fire]
        assert await listed(client, service_request_id=f"{noise}, {theft}") == [theft, noise]
        assert await listed(client, service_request_id=f"{noise},no-such-request") == [noise]
        assert await listed(client, service_request_id="no-such-request") == []
        # Combined with other filters: every filter must hold.
        assert await listed(client, service_request_id=f"{noise},{fire}", service_code="fire") == [fire]
        assert await listed(client, service_request_id=noise, start_date="2026-03-01T09:30:00Z") == []


async def test_list_limit_takes_the_newest_and_is_capped(tmp_path):
    clock = FakeClock(START)
    app = make_app(tmp_path, clock)
    async with running(app) as client:
        noise, fire, theft = await three_requests(client, clock)
        assert await listed(client, limit="1") == [theft]
        assert await listed(client, limit="2") == [theft, fire]
        assert await listed(client, limit="3") == [theft, fire, noise]
        # More than the server's cap (200) is served, not refused: GeoReport clients ask for "all" that way.
        assert await listed(client, limit="100000") == [theft, fire, noise]
        assert await listed(client, limit="2", service_code="noise,fire") == [fire, noise]


async def test_list_with_a_bad_limit_or_date_range_is_a_georeport_400(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        cases = [
            ({"limit": "0"}, "limit must be a whole number from 1 to 200, got 0"),
            ({"limit": "-5"}, "limit must be a whole number from 1 to 200, got -5"),
            ({"limit": "ten"}, "limit must be a whole number from 1 to 200, got 'ten'"),
            ({"limit": "2.5"}, "limit must be a whole number from 1 to 200, got '2.5'"),
            ({"end_date": "tomorrow"}, "end_date must be an ISO 8601 date-time, got 'tomorrow'"),
            ({"end_date": "2026-03-01T08:00:00"}, "end_date must carry a time zone (e.g. 2026-01-01T08:00:00Z)"),
            ({"start_date": "2026-03-02T00:00:00Z", "end_date": "2026-03-01T00:00:00Z"}, "end_date must not be before start_date"),
        ]
        for params, message in cases:
            response = await client.get("/open311/v2/requests.json", params={**CITY_APP, **params})
            assert response.status_code == 400, (params, response.text)
            assert response.json() == [{"code": 400, "description": message}], params
