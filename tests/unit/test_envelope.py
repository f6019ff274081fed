"""The envelope codec: round trip, headers, UTC, upcasting and rejection reasons."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from contracts.envelope import Catalogue, Event, PoisonMessage, correlation_for, make_envelope
from contracts.events import CATALOGUE, IncidentReported
from tests.support import reported


def test_round_trip_keeps_payload_type_and_headers_mirror_the_envelope():
    env = reported("厨房着火了")
    back = CATALOGUE.decode(env.encode())
    assert isinstance(back.data, IncidentReported)
    assert back == env
    assert env.headers()["gw-type"] == "IncidentReported"
    assert env.headers()["gw-version"] == "1"
    assert env.headers()["gw-id"] == str(env.id)
    assert env.key() == env.subject.encode()
    assert "厨房着火了".encode() in env.encode()  # UTF-8, readable by non-Python clients


def test_non_utc_or_naive_occurred_at_is_refused():
    event = reported().data
    with pytest.raises(ValidationError):
        make_envelope(event, source="t", subject="s", occurred_at=datetime(2026, 1, 1), correlation_id=uuid.uuid4())
    with pytest.raises(ValidationError):
        make_envelope(
            event,
            source="t",
            subject="s",
            occurred_at=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=8))),
            correlation_id=uuid.uuid4(),
        )


def test_unknown_optional_fields_are_ignored_so_adding_one_keeps_the_version():
    raw = reported().encode().replace(b'"grid_id"', b'"new_optional_field":1,"grid_id"', 1)
    assert CATALOGUE.decode(raw).data.grid_id == "G0001"


def test_old_version_is_upcast_before_validation():
    catalogue = Catalogue()

    @catalogue.register
    class ThingHappenedV1(Event):
        event_type = "ThingHappened"
        version = 1
        name: str

    @catalogue.register
    class ThingHappened(Event):
        event_type = "ThingHappened"
        version = 2
        first_name: str
        last_name: str

    @catalogue.upcaster("ThingHappened", 1)
    def split_name(data: dict) -> dict:
        first, _, last = data.pop("name").partition(" ")
        return {**data, "first_name": first, "last_name": last}

    old = make_envelope(
        ThingHappenedV1(name="Li Lei"),
        source="t",
        subject="s",
        occurred_at=datetime.now(UTC),
        correlation_id=uuid.uuid4(),
    )
    decoded = catalogue.decode(old.encode())
    assert decoded.version == 2
    assert (decoded.data.first_name, decoded.data.last_name) == ("Li", "Lei")


def test_missing_upcaster_is_a_poison_message():
    catalogue = Catalogue()

    @catalogue.register
    class A1(Event):
        event_type = "A"
        version = 1

    @catalogue.register
    class A2(Event):
        event_type = "A"
        version = 2

    old = make_envelope(A1(), source="t", subject="s", occurred_at=datetime.now(UTC), correlation_id=uuid.uuid4())
    with pytest.raises(PoisonMessage) as caught:
        catalogue.decode(old.encode())
    assert caught.value.reason == "no_upcaster"


def test_correlation_is_the_incident_id_when_it_is_a_uuid():
    incident = str(uuid.uuid4())
    assert correlation_for(incident) == uuid.UUID(incident)
    assert correlation_for("legacy-42") == correlation_for("legacy-42")
