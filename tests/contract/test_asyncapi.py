"""The AsyncAPI document: complete, true to the running services, and valid for the official parser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from contracts import generate
from contracts.asyncapi import SERVICES, channel_id, message_id, service_subscriptions
from contracts.events import CATALOGUE
from contracts.topics import TOPICS
from tests._infra import unavailable

VALIDATOR_DIR = generate.ROOT / "tools" / "asyncapi"


@pytest.fixture(scope="module")
def document() -> dict:
    return yaml.safe_load(generate.ASYNCAPI_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def subscriptions():
    return service_subscriptions()


def test_every_topic_and_its_dead_letter_twin_is_a_channel_carrying_its_events(document):
    for spec in TOPICS:
        channel = document["channels"][channel_id(spec)]
        assert channel["address"] == spec.name
        assert set(channel["messages"]) == {f"{event}_v1" for event in spec.events}
        assert channel["bindings"]["kafka"]["partitions"] == spec.partitions
        assert document["channels"][channel_id(spec, dead_letter=True)]["address"] == spec.dead_letter


def test_every_topic_has_its_owner_as_the_only_sender(document):
    for spec in TOPICS:
        senders = [
            key
            for key, op in document["operations"].items()
            if op["action"] == "send" and op["channel"]["$ref"] == f"#/channels/{channel_id(spec)}"
        ]
        assert senders == [f"{spec.owner}_sends_{channel_id(spec)}"]


def test_message_examples_validate_against_the_published_json_schemas(document):
    for model in CATALOGUE.models():
        message = document["components"]["messages"].get(message_id(model))
        if message is None:
            continue  # commands travel over HTTP, not on a topic
        schema = json.loads(generate.schema_path(generate.SCHEMA_DIR, model.event_type, model.version).read_text())
        example = message["examples"][0]
        jsonschema.validate(example["payload"], schema)
        assert example["headers"]["gw-type"] == model.event_type
        assert message["bindings"]["kafka"]["key"]["type"] == "string"


def test_message_payloads_are_the_published_json_schemas(document):
    for model in CATALOGUE.models():
        payload = document["components"]["schemas"].get(message_id(model))
        if payload is None:
            continue
        published = generate.event_schema(model)
        assert payload["properties"].keys() == published["properties"].keys()
        assert payload["properties"]["type"] == {"const": model.event_type, "type": "string"}
        assert payload["required"] == published["required"]


def test_every_service_subscription_is_declared_in_the_topic_catalogue(subscriptions):
    assert {s.service for s in subscriptions} == set(SERVICES)
    for spec in TOPICS:
        subscribed = {s.service for s in subscriptions if s.topic == spec}
        declared = {c for c in spec.consumers if c in SERVICES}
        assert subscribed == declared, f"{spec.name}: services subscribe {subscribed}, catalogue says {declared}"


def test_receive_operations_name_the_consumer_group_and_only_handled_events(document, subscriptions):
    receives = [key for key, op in document["operations"].items() if op["action"] == "receive"]
    assert len(receives) == len(subscriptions), "one receive operation per consumer group"
    for sub in subscriptions:
        operation = document["operations"][f"{sub.name}_receives_{channel_id(sub.topic)}"]
        assert operation["bindings"]["kafka"]["groupId"]["enum"] == [sub.group_id]
        handled = {ref["$ref"].rsplit("/", 1)[-1].removesuffix("_v1") for ref in operation["messages"]}
        assert handled == set(sub.event_types)
        assert handled <= set(sub.topic.events)


@pytest.fixture(scope="module")
def node_validator() -> list[str]:
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed (Node 20+ is needed to validate the AsyncAPI document)")
    if not (VALIDATOR_DIR / "node_modules" / "@asyncapi" / "parser").is_dir():
        unavailable("tools/asyncapi is not installed: run `make asyncapi-tools` (npm ci)")
    return [node, str(VALIDATOR_DIR / "validate.mjs")]


def _validate(command: list[str], path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=120, check=False)


def test_official_asyncapi_parser_accepts_the_generated_document(node_validator):
    result = _validate(node_validator, generate.ASYNCAPI_FILE)
    assert result.returncode == 0, result.stderr
    assert "valid AsyncAPI 3.0.0" in result.stdout


def test_official_asyncapi_parser_rejects_a_broken_copy(node_validator, tmp_path):
    text = generate.ASYNCAPI_FILE.read_text(encoding="utf-8")
    good_ref = "$ref: '#/channels/intake_incidents'\n"
    assert good_ref in text
    broken = tmp_path / "asyncapi.yaml"
    broken.write_text(text.replace(good_ref, "$ref: '#/channels/no_such_topic'\n", 1), encoding="utf-8")
    result = _validate(node_validator, broken)
    assert result.returncode == 1
    assert "no_such_topic" in result.stderr
