"""Every refused report says which field is wrong and why, and stores nothing: no incident, no event, no key.

The JSON API answers 422 with FastAPI's field-level `detail` list; Open311 answers 400 in the
GeoReport shape with the field named in the description. Boundaries are checked from both sides.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from contracts.reference import demo_city
from services.intake.app import create_app
from services.intake.repository import idempotency_keys, incidents
from services.intake.settings import IntakeSettings
from services.runtime.auth import DEV_OPEN311_API_KEY
from services.runtime.clock import FakeClock
from tests.support import as_user, running

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SKEW = timedelta(seconds=60)
CITY_APP = {"api_key": DEV_OPEN311_API_KEY}
G0001 = demo_city().grid("G0001")


def make_app(tmp_path):
    settings = IntakeSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/intake.db", occurred_at_max_skew_seconds=SKEW.total_seconds()
    )
    return create_app(settings, clock=FakeClock(START))


def body(**overrides):
    report = {
        "grid_id": "G0001",
        "reporter_id": "W0001",
        "description": "3号楼楼下有人打架",
        "location": {"latitude": 28.12, "longitude": 112.92, "address": "幸福路8号"},
    }
    return {**report, **overrides}


def at(location_overrides: dict) -> dict:
    return body(location=location_overrides)


async def stored(app) -> tuple[int, int, int]:
    """Incidents, outbox rows and idempotency keys in the app's database."""
    runtime = app.state.runtime
    async with runtime.engine.connect() as conn:
        counts = []
        for table in (incidents, runtime.tables[0], idempotency_keys):
            counts.append((await conn.execute(select(func.count()).select_from(table))).scalar_one())
    return tuple(counts)


# case -> (body, the error's loc, a fragment of its msg)
REFUSED_REPORTS = {
    "latitude above 90": (at({"latitude": 90.0001, "longitude": 112.9}), ["body", "location", "latitude"], "less than or equal to 90"),
    "latitude below -90": (at({"latitude": -90.5, "longitude": 112.9}), ["body", "location", "latitude"], "greater than or equal to -90"),
    "longitude above 180": (at({"latitude": 28.1, "longitude": 180.01}), ["body", "location", "longitude"], "less than or equal to 180"),
    "longitude below -180": (at({"latitude": 28.1, "longitude": -181}), ["body", "location", "longitude"], "greater than or equal to -180"),
    "latitude not finite": (at({"latitude": "Infinity", "longitude": 112.9}), ["body", "location", "latitude"], "finite number"),
    "longitude without latitude": (at({"longitude": 112.9, "address": "幸福路8号"}), ["body", "location"], "latitude and longitude must be given together"),
    "latitude without longitude": (at({"latitude": 28.1, "address": "幸福路8号"}), ["body", "location"], "latitude and longitude must be given together"),
    "latitude null, longitude given": (at({"latitude": None, "longitude": 112.9}), ["body", "location"], "latitude and longitude must be given together"),
    "address over 300 characters": (at({"address": "路" * 301}), ["body", "location", "address"], "at most 300 characters"),
    "address blank and no coordinates": (at({"address": "   "}), ["body", "location"], "give coordinates"),
    "unknown location field": (at({"address": "幸福路8号", "altitude": 3}), ["body", "location", "altitude"], "Extra inputs"),
    "grid_id empty": (body(grid_id=""), ["body", "grid_id"], "at least 1 character"),
    "grid_id blank": (body(grid_id="   "), ["body", "grid_id"], "at least 1 character"),
    "grid_id over 64 characters": (body(grid_id="G" * 65), ["body", "grid_id"], "at most 64 characters"),
    "reporter_id empty": (body(reporter_id=""), ["body", "reporter_id"], "at least 1 character"),
    "reporter_id over 64 characters": (body(reporter_id="W" * 65), ["body", "reporter_id"], "at most 64 characters"),
    "media item empty": (body(media=[""]), ["body", "media", 0], "at least 1 character"),
    "media item blank": (body(media=["https://m/1", "  "]), ["body", "media", 1], "at least 1 character"),
    "media item over 1000 characters": (body(media=["https://m/" + "x" * 991]), ["body", "media", 0], "at most 1000 characters"),
    "eleven media items": (body(media=[f"https://m/{i}" for i in range(11)]), ["body", "media"], "at most 10 items"),
    "media not a list": (body(media="https://m/1"), ["body", "media"], "valid list"),
    "occurred_at not a date": (body(occurred_at="yesterday"), ["body", "occurred_at"], "valid datetime"),
    "occurred_at impossible time": (body(occurred_at="2026-03-01T25:00:00+08:00"), ["body", "occurred_at"], "valid datetime"),
    "occurred_at naive": (body(occurred_at="2026-03-01T08:00:00"), ["body", "occurred_at"], "timezone"),
    "occurred_at a bare number": (body(occurred_at=1772355600), ["body", "occurred_at"], "ISO 8601 date-time string with a time zone"),
    "occurred_at beyond the skew": (
        body(occurred_at=(START + SKEW + timedelta(seconds=1)).isoformat()), ["body", "occurred_at"], "in the future",
    ),
    "description over 2000 characters": (body(description="打" * 2001), ["body", "description"], "at most 2000 characters"),
}


@pytest.mark.parametrize("case", REFUSED_REPORTS.keys())
async def test_refused_report_names_the_field_and_stores_nothing(tmp_path, case):
    report, loc, message = REFUSED_REPORTS[case]
    app = make_app(tmp_path)
    async with running(app) as client:
        response = await client.post(
            "/api/v1/incidents", json=report, headers={**as_user(app, "W0001"), "Idempotency-Key": "refused-1"}
        )
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        matching = [e for e in detail if e["loc"] == loc]
        assert matching, detail
        assert any(message in e["msg"] for e in matching), matching
        assert await stored(app) == (0, 0, 0)


async def test_not_a_number_latitude_in_raw_json_is_refused(tmp_path):
    # Python's JSON reader takes the non-standard NaN literal; the model must still refuse it.
    app = make_app(tmp_path)
    raw = b'{"grid_id": "G0001", "description": "x", "location": {"latitude": NaN, "longitude": 112.9}}'
    async with running(app) as client:
        response = await client.post(
            "/api/v1/incidents", content=raw, headers={**as_user(app, "W0001"), "Content-Type": "application/json"}
        )
        assert response.status_code == 422, response.text
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body", "location", "latitude"] and "finite number" in error["msg"]
        assert await stored(app) == (0, 0, 0)


ACCEPTED_AT_THE_BOUNDARY = {
    "latitude 90, longitude 180": at({"latitude": 90, "longitude": 180}),
    "latitude -90, longitude -180": at({"latitude": -90, "longitude": -180}),
    "address of 300 characters only": at({"address": "路" * 300}),
    "ten media items": body(media=[f"https://m/{i}" for i in range(10)]),
    "media item of 1000 characters": body(media=["https://m/" + "x" * 990]),
    "occurred_at exactly at the skew": body(occurred_at=(START + SKEW).isoformat()),
    "occurred_at with an offset": body(occurred_at="2026-03-01T16:30:00+08:00"),
    "description of 2000 characters": body(description="打" * 2000),
}


@pytest.mark.parametrize("case", ACCEPTED_AT_THE_BOUNDARY.keys())
async def test_values_on_the_limit_are_accepted(tmp_path, case):
    app = make_app(tmp_path)
    async with running(app) as client:
        response = await client.post("/api/v1/incidents", json=ACCEPTED_AT_THE_BOUNDARY[case])
        assert response.status_code == 202, response.text
        assert await stored(app) == (1, 1, 0)


async def test_occurred_at_is_stored_in_utc(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        created = await client.post("/api/v1/incidents", json=body(occurred_at="2026-03-01T16:30:00+08:00"))
        view = (await client.get(created.json()["links"]["self"])).json()
        assert view["occurred_at"] == "2026-03-01T08:30:00Z"


# --- the list of own reports ------------------------------------------------------------------

REFUSED_PAGES = {
    "limit 0": ({"limit": 0}, ["query", "limit"], "greater than or equal to 1"),
    "limit 101": ({"limit": 101}, ["query", "limit"], "less than or equal to 100"),
    "limit not a number": ({"limit": "ten"}, ["query", "limit"], "valid integer"),
    "offset negative": ({"offset": -1}, ["query", "offset"], "greater than or equal to 0"),
    "offset past 10000": ({"offset": 10_001}, ["query", "offset"], "less than or equal to 10000"),
    "offset beyond a database integer": ({"offset": 10**20}, ["query", "offset"], "less than or equal to 10000"),
    "reporter_id empty": ({"reporter_id": ""}, ["query", "reporter_id"], "at least 1 character"),
    "reporter_id over 64 characters": ({"reporter_id": "W" * 65}, ["query", "reporter_id"], "at most 64 characters"),
}


@pytest.mark.parametrize("case", REFUSED_PAGES.keys())
async def test_list_paging_out_of_bounds_is_a_field_error(tmp_path, case):
    params, loc, message = REFUSED_PAGES[case]
    app = make_app(tmp_path)
    async with running(app) as client:
        response = await client.get("/api/v1/incidents", params=params, headers=as_user(app, "W0001"))
        assert response.status_code == 422, response.text
        (error,) = response.json()["detail"]
        assert error["loc"] == loc and message in error["msg"], error


async def test_list_paging_on_the_bounds_answers(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        await client.post("/api/v1/incidents", json=body())
        for params, count in (({"limit": 1}, 1), ({"limit": 100}, 1), ({"offset": 0}, 1), ({"offset": 10_000}, 0)):
            response = await client.get("/api/v1/incidents", params=params, headers=as_user(app, "W0001"))
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["items"]) == count, (params, page)
            assert page["limit"] == params.get("limit", 20) and page["offset"] == params.get("offset", 0)


# --- Open311 create ---------------------------------------------------------------------------


def georeport(**overrides) -> dict:
    fields = {
        "service_code": "fire",
        "description": "3号楼冒烟",
        "attribute[grid_id]": "G0001",
        "attribute[reporter_id]": "W0001",
        "address_string": "幸福路8号",
    }
    return {k: v for k, v in {**fields, **overrides}.items() if v is not None}


# case -> (fields, a fragment of the description naming the field)
REFUSED_REQUESTS = {
    "lat above 90": (georeport(lat="90.5", long="112.9"), "location.latitude: Input should be less than or equal to 90"),
    "lat below -90": (georeport(lat="-91", long="112.9"), "location.latitude: Input should be greater than or equal to -90"),
    "long above 180": (georeport(lat="28.1", long="180.5"), "location.longitude: Input should be less than or equal to 180"),
    "long below -180": (georeport(lat="28.1", long="-180.5"), "location.longitude: Input should be greater than or equal to -180"),
    "lat not finite": (georeport(lat="nan", long="112.9"), "location.latitude: Input should be a finite number"),
    "long without lat": (georeport(long="112.9"), "location: Value error, latitude and longitude must be given together"),
    "lat without long": (georeport(lat="28.1"), "location: Value error, latitude and longitude must be given together"),
    "lat out of range and no grid": (
        georeport(**{"attribute[grid_id]": None}, lat="95", long="112.9"), "location.latitude: Input should be less than or equal to 90",
    ),
    "grid_id over 64 characters": (georeport(**{"attribute[grid_id]": "G" * 65}), "grid_id: String should have at most 64 characters"),
    "grid_id empty and no coordinates": (georeport(**{"attribute[grid_id]": ""}), "grid_id is required"),
    "reporter_id over 64 characters": (
        georeport(**{"attribute[reporter_id]": "W" * 65}), "reporter_id: String should have at most 64 characters",
    ),
    "reporter_id empty": (georeport(**{"attribute[reporter_id]": ""}), "reporter_id is required"),
    "address over 300 characters": (georeport(address_string="路" * 301), "location.address: String should have at most 300 characters"),
    "media_url over 1000 characters": (
        georeport(media_url="https://m/" + "x" * 991), "media.0: String should have at most 1000 characters",
    ),
    "media_url blank": (georeport(media_url="   "), "media.0: String should have at least 1 character"),
    "description over 2000 characters": (georeport(description="火" * 2001), "description: String should have at most 2000 characters"),
}


@pytest.mark.parametrize("case", REFUSED_REQUESTS.keys())
async def test_refused_georeport_request_names_the_field_and_stores_nothing(tmp_path, case):
    fields, message = REFUSED_REQUESTS[case]
    app = make_app(tmp_path)
    async with running(app) as client:
        response = await client.post(
            "/open311/v2/requests.json", params=CITY_APP, data=fields, headers={"Idempotency-Key": "refused-311"}
        )
        assert response.status_code == 400, response.text
        (error,) = response.json()
        assert error["code"] == 400 and message in error["description"], error
        assert await stored(app) == (0, 0, 0)


async def test_georeport_request_on_the_limits_is_accepted(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        fields = georeport(lat="90", long="-180", address_string="路" * 300, media_url="https://m/" + "x" * 990)
        response = await client.post("/open311/v2/requests.json", params=CITY_APP, data=fields)
        assert response.status_code == 201, response.text
        assert await stored(app) == (1, 1, 0)
