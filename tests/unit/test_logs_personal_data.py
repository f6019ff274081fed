"""Log lines are JSON with the service and incident ids, and never carry raw personal data."""

from __future__ import annotations

import json

from fastapi import APIRouter
from sqlalchemy import MetaData

from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.runtime.host import ServiceRuntime
from services.runtime.logs import configure_logging, get_logger
from services.runtime.settings import ServiceSettings
from tests.support import running

PHONE = "13812345678"
ID_CARD = "430102199001011234"


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_phone_id_number_and_name_fields_are_masked_in_a_log_line(capsys):
    configure_logging("probe")
    get_logger("probe").info(
        "free text", description=f"请联系 {PHONE}，身份证 {ID_CARD}", reporter_name="张三", contact={"phone": PHONE}
    )
    out = capsys.readouterr().out
    (line,) = json_lines(out)
    assert PHONE not in out and ID_CARD not in out and "张三" not in out
    assert line["service"] == "probe"
    assert line["reporter_name"] == "***" and line["contact"] == {"phone": "***"}
    assert "138****5678" in line["description"]


async def test_a_reported_incident_is_logged_with_its_id_and_without_the_phone_number_in_its_text(tmp_path, capsys):
    app = create_intake(IntakeSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/intake.db"))
    async with running(app) as client:
        answer = await client.post(
            "/api/v1/incidents",
            json={
                "grid_id": "G0001",
                "reporter_id": "W0001",
                "description": f"3号楼楼下有人打架，报警人电话 {PHONE}，身份证 {ID_CARD}",
                "location": {"latitude": 28.12, "longitude": 112.92, "address": "幸福路8号"},
            },
        )
        assert answer.status_code == 202
        incident_id = answer.json()["incident_id"]
    out = capsys.readouterr().out
    assert PHONE not in out and ID_CARD not in out
    reported = [line for line in json_lines(out) if line["event"] == "incident reported"]
    assert [(line["service"], line["incident_id"]) for line in reported] == [("intake", incident_id)]


async def test_http_paths_that_name_an_incident_tag_their_log_lines_with_it(tmp_path, capsys):
    runtime = ServiceRuntime("probe", ServiceSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/p.db"), MetaData())
    router = APIRouter()

    @router.post("/incidents/{incident_id}/poke")
    async def poke(incident_id: str) -> dict:
        get_logger("probe").info("poked")
        return {}

    async with running(runtime.http_app(title="probe", routers=[router])) as client:
        assert (await client.post("/incidents/inc-42/poke")).status_code == 200
    (poked,) = [line for line in json_lines(capsys.readouterr().out) if line["event"] == "poked"]
    assert poked["incident_id"] == "inc-42" and poked["service"] == "probe"
