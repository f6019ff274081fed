"""The envelope every event travels in, and the one codec that turns it into Kafka records.

Wire format: the record value is the JSON envelope; the record key is the subject (the incident
id) so that one incident's events stay ordered in one partition; the type, version and id are
mirrored in headers so that routers and dead-letter tooling can act without parsing the body.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
)

HEADER_TYPE = "gw-type"
HEADER_VERSION = "gw-version"
HEADER_ID = "gw-id"
HEADER_CORRELATION = "gw-correlation-id"

MAX_MESSAGE_BYTES = 1_000_000


class Event(BaseModel):
    """Base of every event payload: an immutable fact named in the past tense."""

    # Consumers ignore fields they do not know, so adding an optional field keeps the version.
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    version: ClassVar[int] = 1


class Command(Event):
    """Base of a command that crosses services: an imperative, validated strictly."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Envelope(BaseModel):
    """CloudEvents-like metadata around one payload."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    type: str
    version: int = Field(ge=1)
    source: str
    occurred_at: AwareDatetime
    subject: str = Field(min_length=1, description="The incident id; also the Kafka key.")
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    policy_version: str | None = None
    data: SerializeAsAny[Event]

    @field_validator("occurred_at")
    @classmethod
    def _must_be_utc(cls, value: datetime) -> datetime:
        if value.utcoffset() is None or value.utcoffset().total_seconds() != 0:
            raise ValueError("occurred_at must be an aware UTC datetime")
        return value

    def headers(self) -> dict[str, str]:
        """Kafka headers mirroring type, version, id and correlation."""
        return {
            HEADER_TYPE: self.type,
            HEADER_VERSION: str(self.version),
            HEADER_ID: str(self.id),
            HEADER_CORRELATION: str(self.correlation_id),
        }

    def key(self) -> bytes:
        """The Kafka key: the subject, so one incident stays in one partition."""
        return self.subject.encode()

    def encode(self) -> bytes:
        """Serialise to the JSON record value."""
        return self.model_dump_json().encode()


class PoisonMessage(Exception):
    """A record that can never be processed: it belongs in the dead-letter twin."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


E = TypeVar("E", bound=Event)
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class Catalogue:
    """Registry of every event type and version the system understands, plus upcasters."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, int], type[Event]] = {}
        # Newest version per type, kept on register: decoding asks for it on every record.
        self._latest: dict[str, type[Event]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, model: type[E]) -> type[E]:
        """Register a payload model (usable as a class decorator)."""
        key = (model.event_type, model.version)
        if key in self._models and self._models[key] is not model:
            raise ValueError(f"event {key} registered twice")
        self._models[key] = model
        newest = self._latest.get(model.event_type)
        if newest is None or newest.version < model.version:
            self._latest[model.event_type] = model
        return model

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register a function that lifts `from_version` data to `from_version + 1`."""

        def decorate(fn: Upcaster) -> Upcaster:
            self._upcasters[(event_type, from_version)] = fn
            return fn

        return decorate

    def has_upcaster(self, event_type: str, from_version: int) -> bool:
        """True when data of `from_version` can be lifted to `from_version + 1`."""
        return (event_type, from_version) in self._upcasters

    def models(self) -> list[type[Event]]:
        """Every registered model, sorted by type then version."""
        return [self._models[k] for k in sorted(self._models)]

    def latest(self, event_type: str) -> type[Event]:
        """The newest registered version of a type."""
        return self._latest[event_type]

    def upcast(self, event_type: str, version: int, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Lift data of an old version to the newest one this process knows."""
        newest = self.latest(event_type).version
        while version < newest:
            step = self._upcasters.get((event_type, version))
            if step is None:
                raise PoisonMessage("no_upcaster", f"{event_type} v{version} -> v{version + 1}")
            data = step(data)
            version += 1
        return version, data

    def decode(self, raw: bytes | None) -> Envelope:
        """Parse and validate one record value; raise PoisonMessage with a reason code."""
        if not raw:
            raise PoisonMessage("empty", "record has no value")
        if len(raw) > MAX_MESSAGE_BYTES:
            raise PoisonMessage("too_large", f"{len(raw)} bytes")
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PoisonMessage("not_json", str(exc)[:200]) from exc
        if not isinstance(document, dict):
            raise PoisonMessage("not_an_object", type(document).__name__)
        event_type, version = document.get("type"), document.get("version")
        if not isinstance(event_type, str) or not isinstance(version, int):
            raise PoisonMessage("missing_type", "type and version are required")
        try:
            latest = self.latest(event_type)
        except KeyError:
            raise PoisonMessage("unknown_type", event_type) from None
        if version > latest.version:
            raise PoisonMessage("unknown_version", f"{event_type} v{version}")
        data = document.get("data")
        if not isinstance(data, dict):
            raise PoisonMessage("invalid_data", "data must be an object")
        version, data = self.upcast(event_type, version, data)
        try:
            payload = latest.model_validate(data)
            return Envelope.model_validate({**document, "version": version, "data": payload})
        except ValidationError as exc:
            raise PoisonMessage("invalid_schema", _short_errors(exc)) from exc


def _short_errors(exc: ValidationError) -> str:
    parts = [f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:5]]
    return "; ".join(parts)[:500]


def make_envelope(
    event: Event,
    *,
    source: str,
    subject: str,
    occurred_at: datetime,
    correlation_id: uuid.UUID,
    causation_id: uuid.UUID | None = None,
    policy_version: str | None = None,
    event_id: uuid.UUID | None = None,
) -> Envelope:
    """Wrap a payload in a fresh envelope."""
    return Envelope(
        id=event_id or uuid.uuid4(),
        type=event.event_type,
        version=event.version,
        source=source,
        occurred_at=occurred_at,
        subject=subject,
        correlation_id=correlation_id,
        causation_id=causation_id,
        policy_version=policy_version,
        data=event,
    )


def follow_up(
    cause: Envelope,
    event: Event,
    *,
    source: str,
    occurred_at: datetime,
    policy_version: str | None = None,
    subject: str | None = None,
) -> Envelope:
    """An envelope for an event caused by `cause`: same subject and correlation."""
    return make_envelope(
        event,
        source=source,
        subject=subject or cause.subject,
        occurred_at=occurred_at,
        correlation_id=cause.correlation_id,
        causation_id=cause.id,
        policy_version=policy_version,
    )


def header_map(headers: Mapping[str, Any] | list[tuple[str, bytes]] | None) -> dict[str, str]:
    """Normalise Kafka headers (aiokafka tuples or a dict) into str -> str."""
    if not headers:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {k: v.decode(errors="replace") if isinstance(v, bytes) else str(v) for k, v in items}


def correlation_for(incident_id: str) -> uuid.UUID:
    """The correlation id of an incident's whole flow: its id when that is a UUID."""
    try:
        return uuid.UUID(incident_id)
    except ValueError:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"gridwhistle:incident:{incident_id}")
