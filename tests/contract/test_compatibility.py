"""Evolution rules: released schemas may only grow compatibly; breaking changes need a new version."""

from __future__ import annotations

import copy
from typing import ClassVar

import pytest
from pydantic import Field

from contracts import generate
from contracts.compatibility import breaking_changes, catalogue_problems, missing_upcasters
from contracts.envelope import Catalogue, Event
from contracts.events import CATALOGUE, IncidentReported

RELEASED = generate.released_schemas()


def reported_schema() -> dict:
    return copy.deepcopy(RELEASED[("IncidentReported", 1)])


def data_of(schema: dict) -> dict:
    return schema["properties"]["data"]


def problems_with(edited: dict, *, has_upcaster=lambda _t, _v: False) -> list[str]:
    current = {**generate.current_schemas(), ("IncidentReported", 1): edited}
    return catalogue_problems(RELEASED, current, has_upcaster)


def test_every_registered_schema_version_has_a_released_snapshot():
    assert set(generate.current_schemas()) <= set(RELEASED)


def test_the_real_catalogue_keeps_the_evolution_rules():
    assert generate.compatibility_problems() == []


def test_an_unchanged_schema_has_no_breaking_change():
    assert breaking_changes(reported_schema(), reported_schema()) == []


def remove_property(schema: dict) -> None:
    del data_of(schema)["properties"]["reporter_id"]
    data_of(schema)["required"].remove("reporter_id")


def make_optional_required(schema: dict) -> None:
    data_of(schema)["required"].append("category_hint")


def add_required_property(schema: dict) -> None:
    data_of(schema)["properties"]["district_id"] = {"type": "string"}
    data_of(schema)["required"].append("district_id")


def change_type(schema: dict) -> None:
    data_of(schema)["properties"]["grid_id"] = {"type": "integer"}


def narrow_enum(schema: dict) -> None:
    schema["$defs"]["Category"]["enum"].remove("noise")


def lower_max_length(schema: dict) -> None:
    data_of(schema)["properties"]["description"]["maxLength"] = 500


def raise_minimum(schema: dict) -> None:
    schema["$defs"]["Location"]["properties"]["latitude"]["anyOf"][0]["minimum"] = 0


@pytest.mark.parametrize(
    ("edit", "kind", "field"),
    [
        (remove_property, "removed property", "data.reporter_id"),
        (make_optional_required, "optional property made required", "data.category_hint"),
        (add_required_property, "added required property", "data.district_id"),
        (change_type, "changed type", "data.grid_id"),
        (narrow_enum, "narrowed enum", "data.category_hint"),
        (lower_max_length, "tightened constraint", "data.description"),
        (raise_minimum, "tightened constraint", "data.location.latitude"),
    ],
)
def test_an_unversioned_breaking_change_fails_naming_the_field(edit, kind, field):
    edited = reported_schema()
    edit(edited)
    problems = problems_with(edited)
    assert len(problems) >= 1
    assert f"IncidentReported v1: {field}: {kind}" in problems[0]
    assert "add IncidentReported v2 with an upcaster from v1" in problems[0]


def test_adding_an_optional_property_or_an_enum_value_is_allowed():
    edited = reported_schema()
    data_of(edited)["properties"]["landmark"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    edited["$defs"]["Category"]["enum"].append("wildlife")
    data_of(edited)["properties"]["description"]["maxLength"] = 4000
    assert problems_with(edited) == []


def test_a_released_version_that_is_no_longer_registered_fails():
    current = generate.current_schemas()
    del current[("IncidentReported", 1)]
    problems = catalogue_problems(RELEASED, current, lambda _t, _v: True)
    assert problems == [
        "IncidentReported v1 was released but is no longer registered: keep its model class "
        "so records already in Kafka can still be read"
    ]


class _ReportedV2(IncidentReported):
    version: ClassVar[int] = 2
    district_id: str = Field(min_length=1)


def test_a_new_version_without_an_upcaster_from_the_previous_one_fails():
    current = {**generate.current_schemas(), ("IncidentReported", 2): generate.event_schema(_ReportedV2)}
    assert catalogue_problems(RELEASED, current, lambda _t, _v: False) == [
        "IncidentReported v2: no upcaster from v1 to v2"
    ]
    assert catalogue_problems(RELEASED, current, lambda t, v: (t, v) == ("IncidentReported", 1)) == []


def synthetic_catalogue(*, upcast_from: tuple[int, ...]) -> Catalogue:
    """A catalogue with a type at versions 1..3 and upcasters from the given versions."""
    catalogue = Catalogue()
    for number in (1, 2, 3):
        catalogue.register(type(f"GridPatrolled{number}", (Event,), {"event_type": "GridPatrolled", "version": number}))
    for number in upcast_from:
        catalogue.upcaster("GridPatrolled", number)(lambda data: data)
    return catalogue


def registered_versions(catalogue: Catalogue) -> list[tuple[str, int]]:
    return [(m.event_type, m.version) for m in catalogue.models()]


def test_every_registered_version_above_one_can_be_upcast_from_version_one():
    assert missing_upcasters(registered_versions(CATALOGUE), CATALOGUE.has_upcaster) == []


def test_a_broken_upcaster_chain_is_reported_for_every_version_it_strands():
    complete = synthetic_catalogue(upcast_from=(1, 2))
    assert missing_upcasters(registered_versions(complete), complete.has_upcaster) == []
    gap = synthetic_catalogue(upcast_from=(2,))
    assert missing_upcasters(registered_versions(gap), gap.has_upcaster) == [
        "GridPatrolled v2: no upcaster from v1 to v2",
        "GridPatrolled v3: no upcaster from v1 to v2",
    ]
