"""Log lines are JSON with the service and incident ids, and never carry raw personal data."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import MetaData

from contracts.topics import INTAKE_INCIDENTS
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.runtime.db import create_schema
from services.runtime.host import ServiceRuntime
from services.runtime.logs import configure_logging, get_logger, mask_text
from services.runtime.settings import ServiceSettings
from tests.support import publish, reported, running

PHONE = "13812345678"
LANDLINE = "0731-88886666"
ID_CARD = "430102199001011234"
NAME = "张小明"


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize(
    ("text", "raw", "masked"),
    [
        ("请联系 13812345678", "13812345678", "138****5678"),
        ("电话 +86 138 1234 5678。", "1234 5678", "138****5678"),
        ("手机138-1234-5678", "1234-5678", "138****5678"),
        ("座机0731-88886666，", "88886666", "0731-****66"),
        ("拨打(010)62345678转3", "62345678", "010-****78"),
        ("拨打（0731）8888 6666", "8888 6666", "0731-****66"),
        ("号码073188886666", "88886666", "0731-****66"),
        ("身份证430102199001011234", "19900101", "430102********1234"),
        ("身份证号 43010219900101123X", "19900101", "430102********123X"),
        ("身份证 430102 19900101 1234", "19900101", "430102********1234"),
        ("联系人张小明电话13812345678", "张小明", "联系人张**电话138****5678"),
        ("报警人：李四，住幸福路8号", "李四", "报警人：李*，住幸福路8号"),
    ],
)
def test_phone_numbers_id_numbers_and_introduced_names_are_masked_inside_free_text(text, raw, masked):
    assert raw not in mask_text(text)
    assert masked in mask_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "3f1c9a52-0731-4123-5678-abcdef012345",  # a UUID whose groups look like an area code and number
        "a0e1b2c3-d4f5-4a6b-9c8d-13812345678f",
        "2026-01-01T08:00:00.123456+00:00",
        "offset=12345678901 partition=3 at 1764581234567",
        "lat 28.10795 lon 112.932143, 127.0.0.1:41234",
        "G0001 W0001 P0001 A00011 U-POL-P0001 hf-3f1c9a52-U-POL-P0001",
        "幸福路8号3单元501室，报警人称楼下有人打架",
    ],
)
def test_ids_times_offsets_and_addresses_are_left_alone(text):
    assert mask_text(text) == text


def test_phone_id_number_and_name_fields_are_masked_in_a_log_line(capsys):
    configure_logging("probe")
    get_logger("probe").info(
        "free text",
        description=f"请联系 {PHONE} 或 {LANDLINE}，身份证 {ID_CARD}，联系人{NAME}",
        reporter_name="张三",
        contact={"phone": PHONE},
    )
    out = capsys.readouterr().out
    (line,) = json_lines(out)
    for raw in (PHONE, "88886666", ID_CARD, NAME, "张三"):
        assert raw not in out
    assert line["service"] == "probe"
    assert line["reporter_name"] == "***" and line["contact"] == {"phone": "***"}
    assert line["description"] == "请联系 138****5678 或 0731-****66，身份证 430102********1234，联系人张**"


def test_stdlib_records_and_tracebacks_are_masked_too(capsys):
    configure_logging("probe")
    logging.getLogger("aiokafka.probe").warning("send to %s failed", PHONE)
    try:
        raise ValueError(f"cannot store description '报警人电话 {PHONE}，身份证 {ID_CARD}'")
    except ValueError:
        get_logger("probe").exception("store failed")
    out = capsys.readouterr().out
    warned, failed = json_lines(out)
    assert PHONE not in out and ID_CARD not in out
    assert warned["event"] == "send to 138****5678 failed"
    assert "ValueError" in failed["exception"] and "138****5678" in failed["exception"]


class Note(BaseModel):
    """What the probe handler derives from a report: a deliberately too short description field."""

    description: str = Field(max_length=5)


async def test_a_consumer_quoting_a_reported_description_logs_it_masked_with_correlation_and_causation(
    tmp_path, capsys
):
    # The realistic leak: a handler's model rejects the incoming data, pydantic quotes the input
    # (the incident's description) in its error, and the consumer logs that error on every retry
    # and again when it dead-letters the record.
    runtime = ServiceRuntime(
        "probe",
        ServiceSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/p.db", handler_max_attempts=2),
        MetaData(),
    )

    async def take_note(uow, envelope) -> None:
        get_logger("probe").info("whistle received", description=envelope.data.description)
        Note(description=envelope.data.description)

    runtime.subscribe(INTAKE_INCIDENTS, {"IncidentReported": take_note})
    description = f"电话{PHONE}，座机{LANDLINE}，身份证{ID_CARD}，联系人{NAME}，楼下打架"
    envelope = reported(description).model_copy(update={"causation_id": uuid.uuid4()})
    await create_schema(runtime.engine, runtime.metadata)  # a probe service has no migrations of its own
    app = runtime.http_app(title="probe")
    async with running(app):
        await publish(app, envelope)
    out = capsys.readouterr().out
    for raw in (PHONE, "88886666", ID_CARD, NAME):
        assert raw not in out

    handling = {"whistle received", "handler failed; retrying", "record dead-lettered"}
    lines = [line for line in json_lines(out) if line["event"] in handling]
    assert {line["event"] for line in lines} == handling
    by_event = {line["event"]: line for line in lines}
    assert by_event["whistle received"]["description"].startswith("电话138****5678，座机0731-****66，身份证430102")
    # The errors really did quote the description, masked.
    assert "input_value='电话138****5678" in by_event["handler failed; retrying"]["error"]
    assert "input_value='电话138****5678" in by_event["record dead-lettered"]["detail"]
    for line in lines:
        assert line["service"] == "probe"
        assert line["incident_id"] == envelope.subject
        assert line["event_id"] == str(envelope.id)
        assert line["correlation_id"] == str(envelope.correlation_id)
        assert line["causation_id"] == str(envelope.causation_id)


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
    reported_lines = [line for line in json_lines(out) if line["event"] == "incident reported"]
    assert [(line["service"], line["incident_id"]) for line in reported_lines] == [("intake", incident_id)]


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
