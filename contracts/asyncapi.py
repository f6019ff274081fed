"""The system's AsyncAPI 3.0 document: every topic, its messages, who sends and who receives.

Who receives what is read from the services themselves: each service's app is built (nothing
connects) and FastStream's AsyncAPI output for its broker gives the topics it subscribes to; the
runtime's consumers give the group id and the event types handled. FastStream cannot describe
the rest, because our subscribers take raw bytes (its payload is an empty schema) and events
leave through the outbox rather than through declared publishers; so payloads, headers, keys and
senders come from the catalogue (`contracts/topics.py`, the models and their JSON Schemas).
"""

from __future__ import annotations

import importlib
import json
import warnings
from dataclasses import dataclass
from typing import Any

from contracts.envelope import HEADER_CORRELATION, HEADER_ID, HEADER_TYPE, HEADER_VERSION, Event
from contracts.events import CATALOGUE
from contracts.examples import example_envelope
from contracts.topics import TOPICS, TopicSpec

SERVICES = ("intake", "classification", "routing", "sla_timer", "closure", "console")
KAFKA_BINDING_VERSION = "0.5.0"
DEAD_LETTER_MESSAGE = "DeadLetter"


@dataclass(frozen=True)
class Subscription:
    """One consumer group of one service on one topic, as the running service registers it."""

    service: str
    topic: TopicSpec
    group_id: str
    event_types: tuple[str, ...]

    @property
    def name(self) -> str:
        """A short unique name: the service and the group's purpose (one service may have several groups)."""
        return f"{self.service}_{self.group_id.rsplit('.', 1)[-1]}"


def service_subscriptions() -> list[Subscription]:
    """Every subscription of every service, read from its FastStream broker and runtime."""
    from faststream.specification import AsyncAPI

    by_name = {spec.name: spec for spec in TOPICS}
    found: dict[str, Subscription] = {}
    for service in SERVICES:
        runtime = _build_app(service).state.runtime
        with warnings.catch_warnings():
            # Expected when a service has two groups on one topic; see the merge below.
            warnings.filterwarnings("ignore", message="Overwrite channel handler", category=RuntimeWarning)
            document = AsyncAPI(runtime.broker, schema_version="3.0.0").to_specification().to_jsonable()
        channels = document.get("channels", {})
        for operation in document.get("operations", {}).values():
            if operation["action"] != "receive":
                continue
            channel_id = operation["channel"]["$ref"].rsplit("/", 1)[-1]
            spec = by_name[channels[channel_id]["address"]]
            # FastStream merges subscribers of one service on one topic into one channel, so the
            # consumer groups behind it come from the runtime.
            for consumer in runtime.consumers:
                if consumer.dead_letter_topic == spec.dead_letter:
                    found[consumer.name] = Subscription(service, spec, consumer.name, consumer.event_types)
    return sorted(found.values(), key=lambda s: (s.topic.name, s.service, s.group_id))


def _build_app(service: str) -> Any:
    """Build a service's app with settings that do not depend on the caller's environment."""
    settings_module = importlib.import_module(f"services.{service}.settings")
    settings_class = getattr(settings_module, "".join(p.title() for p in service.split("_")) + "Settings")
    settings = settings_class(
        topic_prefix="",
        kafka_bootstrap_servers="127.0.0.1:9092",
        database_url="sqlite+aiosqlite:///:memory:",
        log_json=True,
    )
    return importlib.import_module(f"services.{service}.app").create_app(settings)


def channel_id(spec: TopicSpec, *, dead_letter: bool = False) -> str:
    """The AsyncAPI channel id of a topic (or of its dead-letter twin)."""
    base = spec.name.removeprefix("gridwhistle.").replace(".", "_")
    return f"{base}_dlq" if dead_letter else base


def message_id(model: type[Event]) -> str:
    """The AsyncAPI message id of one event version."""
    return f"{model.event_type}_v{model.version}"


def asyncapi_document(subscriptions: list[Subscription], payload_schemas: dict[type[Event], dict]) -> dict:
    """The whole document from the subscriptions and each event version's JSON Schema."""
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {DEAD_LETTER_MESSAGE: _dead_letter_message()}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    events_by_type = {m.event_type: m for m in CATALOGUE.models()}
    for model, schema in payload_schemas.items():
        schemas[message_id(model)] = _hoist_definitions(schema, schemas)
        messages[message_id(model)] = _message(model)
    for spec in TOPICS:
        cid, dlq = channel_id(spec), channel_id(spec, dead_letter=True)
        models = [m for m in CATALOGUE.models() if m.event_type in spec.events]
        channels[cid] = {
            "address": spec.name,
            "title": spec.name,
            "description": f"{spec.description} Owner: {spec.owner}. Key: {spec.key}.",
            "messages": {message_id(m): {"$ref": f"#/components/messages/{message_id(m)}"} for m in models},
            "bindings": {"kafka": _topic_binding(spec.name, spec.partitions, spec.retention_ms, spec.cleanup_policy)},
        }
        channels[dlq] = {
            "address": spec.dead_letter,
            "title": spec.dead_letter,
            "description": f"Records of {spec.name} its consumers could never process, with the reason in headers.",
            "messages": {DEAD_LETTER_MESSAGE: {"$ref": f"#/components/messages/{DEAD_LETTER_MESSAGE}"}},
            "bindings": {
                "kafka": _topic_binding(
                    spec.dead_letter, spec.dead_letter_partitions, spec.dead_letter_retention_ms, "delete"
                )
            },
        }
        operations[f"{spec.owner}_sends_{cid}"] = {
            "action": "send",
            "title": f"{spec.owner} publishes {spec.name}",
            "summary": f"Published by {spec.owner} through its transactional outbox, keyed by {spec.key}.",
            "channel": {"$ref": f"#/channels/{cid}"},
            "messages": [{"$ref": f"#/channels/{cid}/messages/{message_id(m)}"} for m in models],
        }
    for sub in subscriptions:
        cid, dlq = channel_id(sub.topic), channel_id(sub.topic, dead_letter=True)
        operations[f"{sub.name}_receives_{cid}"] = {
            "action": "receive",
            "title": f"{sub.service} consumes {sub.topic.name}",
            "summary": f"Consumer group {sub.group_id}; other event types on the topic are ignored.",
            "channel": {"$ref": f"#/channels/{cid}"},
            "messages": [
                {"$ref": f"#/channels/{cid}/messages/{message_id(events_by_type[t])}"} for t in sub.event_types
            ],
            "bindings": {
                "kafka": {
                    "groupId": {"type": "string", "enum": [sub.group_id]},
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        }
        operations[f"{sub.name}_dead_letters_{cid}"] = {
            "action": "send",
            "title": f"{sub.service} dead-letters {sub.topic.name}",
            "summary": f"Poison records of consumer group {sub.group_id}.",
            "channel": {"$ref": f"#/channels/{dlq}"},
            "messages": [{"$ref": f"#/channels/{dlq}/messages/{DEAD_LETTER_MESSAGE}"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "gridwhistle",
            "version": "1.0.0",
            "description": (
                "Event-driven dispatch for the grid whistle, police report practice (网格吹哨、民警报到). "
                "Generated by `python -m contracts.generate`; do not edit by hand."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "The single-node broker `make run` starts; topics may carry a deployment prefix.",
            }
        },
        "channels": channels,
        "operations": dict(sorted(operations.items())),
        "components": {"schemas": dict(sorted(schemas.items())), "messages": messages},
    }


def _message(model: type[Event]) -> dict:
    example = example_envelope(model)
    return {
        "name": model.event_type,
        "title": f"{model.event_type} v{model.version}",
        "summary": (model.__doc__ or "").strip().splitlines()[0],
        "contentType": "application/json",
        "correlationId": {"location": f"$message.header#/{HEADER_CORRELATION}"},
        "headers": {
            "type": "object",
            "required": [HEADER_TYPE, HEADER_VERSION, HEADER_ID, HEADER_CORRELATION],
            "properties": {
                HEADER_TYPE: {"type": "string", "const": model.event_type},
                HEADER_VERSION: {"type": "string", "const": str(model.version)},
                HEADER_ID: {"type": "string", "format": "uuid", "description": "The envelope id."},
                HEADER_CORRELATION: {"type": "string", "format": "uuid"},
            },
        },
        "payload": {"$ref": f"#/components/schemas/{message_id(model)}"},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The incident id (the envelope's subject)."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
        "examples": [
            {
                "name": "example",
                "headers": example.headers(),
                "payload": json.loads(example.encode()),
            }
        ],
    }


def _dead_letter_message() -> dict:
    from services.runtime.consumer import HEADER_DLQ_DETAIL, HEADER_DLQ_REASON

    text = {"type": "string"}
    return {
        "name": DEAD_LETTER_MESSAGE,
        "title": "Dead letter",
        "summary": "The original record, byte for byte, with the original headers plus why it was rejected.",
        "headers": {
            "type": "object",
            "required": [HEADER_DLQ_REASON, "gw-dlq-consumer", "gw-dlq-source-topic"],
            "properties": {
                HEADER_DLQ_REASON: {
                    **text,
                    "description": "not_json, unknown_type, unknown_version, invalid_schema, handler_failed, …",
                },
                HEADER_DLQ_DETAIL: text,
                "gw-dlq-consumer": {**text, "description": "The consumer group that rejected the record."},
                "gw-dlq-source-topic": text,
                "gw-dlq-source-partition": text,
                "gw-dlq-source-offset": text,
            },
        },
        "payload": {"description": "The rejected record value, unchanged (it may not be JSON)."},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The original record's key."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _topic_binding(name: str, partitions: int, retention_ms: int, cleanup_policy: str) -> dict:
    return {
        "topic": name,
        "partitions": partitions,
        "topicConfiguration": {"cleanup.policy": [cleanup_policy], "retention.ms": retention_ms},
        "bindingVersion": KAFKA_BINDING_VERSION,
    }


def _hoist_definitions(schema: dict, shared: dict[str, Any]) -> dict:
    """Move a JSON Schema's $defs into the shared components, rewriting its references."""
    schema = json.loads(json.dumps(schema).replace('"#/$defs/', '"#/components/schemas/'))
    for name, definition in schema.pop("$defs", {}).items():
        if shared.setdefault(name, definition) != definition:
            raise ValueError(f"two event schemas define {name!r} differently; rename one of the models")
    for keyword in ("$id", "$schema"):
        schema.pop(keyword, None)
    return schema
