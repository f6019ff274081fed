"""Checked-in topic catalogue and JSON Schemas must be exactly what the code generates."""

from __future__ import annotations

import json

import jsonschema
import yaml

from contracts import generate
from contracts.events import CATALOGUE
from contracts.topics import TOPICS
from tests.support import reported


def test_checked_in_artifacts_match_the_code():
    assert generate.main(["--check"]) == 0, "run `python -m contracts.generate` and commit the result"


def test_check_fails_when_a_checked_in_schema_is_edited(tmp_path, monkeypatch):
    files = generate.generated_files()
    copy = {tmp_path / p.name: c for p, c in files.items()}
    for path, content in copy.items():
        path.write_text(content, encoding="utf-8")
    edited = tmp_path / "IncidentReported.v1.json"
    edited.write_text(edited.read_text().replace('"grid_id"', '"grid"', 1), encoding="utf-8")
    monkeypatch.setattr(generate, "generated_files", lambda: {p: c for p, c in copy.items()})
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    assert generate.main(["--check"]) == 1


def test_every_topic_has_a_dead_letter_twin_in_the_provisioning_file():
    names = {t["name"] for t in yaml.safe_load(generate.TOPICS_FILE.read_text())["topics"]}
    for spec in TOPICS:
        assert {spec.name, spec.dead_letter} <= names
        assert spec.partitions >= 3


def test_every_event_type_is_carried_by_exactly_one_topic():
    events = [m.event_type for m in CATALOGUE.models() if not m.__module__.endswith("commands")]
    for event_type in events:
        assert sum(event_type in spec.events for spec in TOPICS) == 1, event_type


def test_a_real_event_validates_against_its_published_schema():
    schema = json.loads((generate.SCHEMA_DIR / "IncidentReported.v1.json").read_text())
    jsonschema.validate(json.loads(reported().encode()), schema)
    broken = json.loads(reported().encode())
    del broken["data"]["grid_id"]
    try:
        jsonschema.validate(broken, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("schema accepted an event without grid_id")
