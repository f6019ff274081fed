"""Open311 GeoReport v2 (JSON) over the same report desk, so city apps can file and follow reports.

Our categories are the services. A request names its grid and reporter as extra attributes
(`grid_id` or `attribute[grid_id]`); without a grid, the grid whose centre is nearest to
lat/long is used. Errors use the GeoReport shape `[{"code": 400, "description": "..."}]`.

Access: filing a request needs the GeoReport `api_key` (a query or body parameter) of a
configured city app (GW_INTAKE_OPEN311_API_KEYS), which files as that integration principal and
is trusted to name the reporter. Reading requests (they carry descriptions and addresses) needs
such a key or a supervisor's or admin's bearer token. The service list and definitions are open:
they are the public catalogue GeoReport clients discover first. An `Idempotency-Key` header is
the city app's own: another app (or a grid worker) using the same key never meets its requests.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import ValidationError

from contracts.reference import ReferenceData
from contracts.vocabulary import Category
from services.intake.domain import (
    GridCentre,
    canonical_body_hash,
    describe_service,
    nearest_grid,
    open311_status,
)
from services.intake.reporting import (
    IdempotencyConflict,
    IncidentReader,
    ReportDesk,
    ReportIncident,
    ReportRejected,
    key_scope_of_client,
)
from services.runtime import audit
from services.runtime.access import STAFF
from services.runtime.auth import AccessError, ApiKeys, Authenticator, Principal

PREFIX = "/open311/v2"
MAX_LIST = 200
DEFAULT_LIST = 50


def open311_error(status: int, description: str) -> JSONResponse:
    """A GeoReport v2 error response."""
    return JSONResponse([{"code": status, "description": description}], status_code=status)


def _describe_errors(errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(parts)


def service_list() -> list[dict[str, Any]]:
    """Every category as an Open311 service."""
    services = []
    for category in Category:
        described = describe_service(category)
        services.append(
            {
                "service_code": category.value,
                "service_name": f"{described.name_zh} / {described.name_en}",
                "description": described.name_en,
                "metadata": True,
                "type": "realtime",
                "keywords": category.value.replace("_", " "),
                "group": described.group,
            }
        )
    return services


def service_definition(category: Category) -> dict[str, Any]:
    """The extra attributes a request for a service may carry."""
    attributes = [
        ("grid_id", "Grid id (网格编号); derived from lat/long when missing", False, 1),
        ("reporter_id", "Id of the grid worker filing the report", True, 2),
    ]
    return {
        "service_code": category.value,
        "attributes": [
            {
                "variable": True,
                "code": code,
                "datatype": "string",
                "required": required,
                "datatype_description": text,
                "order": order,
                "description": text,
            }
            for code, text, required, order in attributes
        ],
    }


async def _request_fields(request: Request) -> dict[str, Any]:
    """The posted fields, from a form-encoded or a JSON body."""
    raw = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            document = json.loads(raw or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"request body is not valid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise ValueError("request body must be a JSON object")
        return document
    try:
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError as exc:
        raise ValueError("form body is not valid UTF-8") from exc


def _attribute(fields: dict[str, Any], name: str) -> Any:
    nested = fields.get("attribute")
    if isinstance(nested, dict) and nested.get(name) not in (None, ""):
        return nested[name]
    for key in (name, f"attribute[{name}]"):
        if fields.get(key) not in (None, ""):
            return fields[key]
    return None


def _coordinate(fields: dict[str, Any], name: str) -> float | None:
    value = fields.get(name)
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def to_report(fields: dict[str, Any], reference: ReferenceData) -> dict[str, Any]:
    """Translate GeoReport fields into the body of our own report (raises ValueError with a reason)."""
    code = fields.get("service_code")
    if code in (None, ""):
        raise ValueError("service_code is required (see services.json)")
    if code not in {c.value for c in Category}:
        raise ValueError(f"unknown service_code {code!r} (see services.json)")
    latitude, longitude = _coordinate(fields, "lat"), _coordinate(fields, "long")
    grid_id = _attribute(fields, "grid_id")
    if grid_id is None and latitude is not None and longitude is not None:
        centres = (GridCentre(g.id, g.latitude, g.longitude) for g in reference.grids)
        nearest = nearest_grid(latitude, longitude, centres)
        grid_id = nearest.grid_id if nearest else None
    if grid_id is None:
        raise ValueError("grid_id is required (as grid_id or attribute[grid_id]) when lat/long are not given")
    reporter_id = _attribute(fields, "reporter_id") or fields.get("account_id") or None
    if reporter_id is None:
        raise ValueError("reporter_id is required (as reporter_id or attribute[reporter_id])")
    location: dict[str, Any] = {}
    if latitude is not None or longitude is not None:
        location.update(latitude=latitude, longitude=longitude)
    if fields.get("address_string"):
        location["address"] = fields["address_string"]
    report: dict[str, Any] = {
        "grid_id": grid_id,
        "reporter_id": reporter_id,
        "description": fields.get("description") or "",
        "location": location,
        "category_hint": code,
    }
    if fields.get("media_url"):
        report["media"] = [fields["media_url"]]
    return report


def request_view(view: dict[str, Any]) -> dict[str, Any]:
    """Our incident view as a GeoReport service request."""
    code = view["category"] or view["category_hint"]
    described = describe_service(Category(code)) if code else None
    return {
        "service_request_id": view["incident_id"],
        "status": open311_status(view["status"]),
        "status_notes": view["status"],
        "service_name": described.name_en if described else None,
        "service_code": code,
        "description": view["description"],
        "agency_responsible": view["agency_responsible"],
        "service_notice": "",
        "requested_datetime": view["reported_at"],
        "updated_datetime": view["updated_at"],
        "address": view["location"]["address"],
        "lat": view["location"]["latitude"],
        "long": view["location"]["longitude"],
        "media_url": view["media"][0] if view["media"] else None,
    }


def _parse_time(name: str, value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 date-time, got {value!r}") from None
    if instant.tzinfo is None:
        raise ValueError(f"{name} must carry a time zone (e.g. 2026-01-01T08:00:00Z)")
    return instant


def _limit(value: str | None) -> int:
    """The list's page size: a whole number from 1; larger than MAX_LIST is served as MAX_LIST."""
    if value in (None, ""):
        return DEFAULT_LIST
    try:
        limit = int(value)
    except ValueError:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LIST}, got {value!r}") from None
    if limit < 1:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LIST}, got {limit}")
    # GeoReport clients ask for "all" with big numbers; capping answers them instead of refusing.
    return min(limit, MAX_LIST)


def _csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


class Open311Refused(Exception):
    """No acceptable credentials for an Open311 call; answered in the GeoReport error shape."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status, self.description = status, description

    def response(self) -> JSONResponse:
        """The GeoReport error, noted as the audit row's reason."""
        audit.note(reason=self.description)
        return open311_error(self.status, self.description)


def integration(keys: ApiKeys, api_key: str | None) -> Principal:
    """The city app an api_key belongs to; 401 without a key, 403 for an unknown one (GeoReport: invalid api_key)."""
    if not api_key:
        raise Open311Refused(401, "api_key is required to file a request (GeoReport v2)")
    principal = keys.principal_for(api_key)
    if principal is None:
        raise Open311Refused(403, "invalid api_key")
    return principal


def reader_of(keys: ApiKeys, auth: Authenticator, request: Request) -> Principal:
    """Who may read requests: a city app's api_key, or a supervisor's or admin's bearer token."""
    api_key = request.query_params.get("api_key")
    if api_key:
        return integration(keys, api_key)
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    if scheme.lower() != "bearer" or not token:
        raise Open311Refused(401, "reading requests needs an api_key or a bearer token")
    try:
        principal = auth.principal_of(token)
    except AccessError as exc:
        raise Open311Refused(exc.status, exc.message) from None
    if principal.role not in STAFF:
        raise Open311Refused(403, f"{principal.user_id} ({principal.role.value}) may not read every request; use /api/v1/incidents")
    return principal


def open311_router(
    desk: ReportDesk, reader: IncidentReader, reference: ReferenceData, keys: ApiKeys, auth: Authenticator
) -> APIRouter:
    """GeoReport v2: services, create request, list and get requests."""
    router = APIRouter(prefix=PREFIX, tags=["open311"])

    @router.get("/services.json", summary="Our categories as Open311 services")
    async def services() -> list[dict[str, Any]]:
        return service_list()

    @router.get("/services/{service_code}.json", summary="Extra attributes of a service")
    async def service(service_code: str) -> Any:
        if service_code not in {c.value for c in Category}:
            return open311_error(404, f"unknown service_code {service_code!r}")
        return service_definition(Category(service_code))

    @router.post("/requests.json", status_code=201, summary="File a service request (form or JSON; api_key required)")
    async def create_request(request: Request) -> Any:
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 128:
            return open311_error(400, "Idempotency-Key must be 1 to 128 characters")
        try:
            fields = await _request_fields(request)
        except ValueError as exc:
            return open311_error(400, str(exc))
        api_key = fields.pop("api_key", None) or request.query_params.get("api_key")
        try:
            client = integration(keys, api_key if isinstance(api_key, str) else None)
        except Open311Refused as refused:
            return refused.response()
        try:
            body = to_report(fields, reference)
            report = ReportIncident.model_validate(body)
        except ValidationError as exc:
            return open311_error(400, _describe_errors([dict(e) for e in exc.errors()]))
        except ValueError as exc:
            return open311_error(400, str(exc))
        try:
            submission = await desk.submit(
                # The client is part of what the key stands for: another app's retry never replays this one.
                report, body_hash=canonical_body_hash({**fields, "api_client": client.user_id}), idempotency_key=key,
                key_scope=key_scope_of_client(client.user_id), channel="open311",
            )
        except ReportRejected as rejected:
            return open311_error(400, _describe_errors(rejected.errors))
        except IdempotencyConflict as conflict:
            return open311_error(409, str(conflict))
        headers = {"Idempotent-Replayed": "true"} if submission.replayed else {}
        return JSONResponse([{"service_request_id": submission.incident_id}], status_code=201, headers=headers)

    @router.get("/requests.json", summary="Service requests, newest first (api_key, or a supervisor's or admin's token)")
    async def list_requests(request: Request) -> Any:
        try:
            reader_of(keys, auth, request)
        except Open311Refused as refused:
            return refused.response()
        params = request.query_params
        try:
            since = _parse_time("start_date", params.get("start_date"))
            until = _parse_time("end_date", params.get("end_date"))
            limit = _limit(params.get("limit"))
        except ValueError as exc:
            return open311_error(400, str(exc))
        if since is not None and until is not None and until < since:
            return open311_error(400, "end_date must not be before start_date")
        statuses = set(_csv(params.get("status")))
        if statuses - {"open", "closed"}:
            return open311_error(400, "status must be open, closed or both (comma-separated)")
        codes = _csv(params.get("service_code"))
        unknown = [c for c in codes if c not in {cat.value for cat in Category}]
        if unknown:
            return open311_error(400, f"unknown service_code {', '.join(unknown)}")
        closed = None if len(statuses) != 1 else statuses == {"closed"}
        views = await reader.summaries(
            categories=codes or None,
            since=since,
            until=until,
            incident_ids=_csv(params.get("service_request_id")) or None,
            closed=closed,
            limit=limit,
        )
        return [request_view(v) for v in views]

    @router.get("/requests/{request_id}.json", summary="One service request (api_key, or a supervisor's or admin's token)")
    async def get_request(request: Request, request_id: str) -> Any:
        try:
            reader_of(keys, auth, request)
        except Open311Refused as refused:
            return refused.response()
        view = await reader.detail(request_id)
        if view is None:
            return open311_error(404, f"service request {request_id!r} not found")
        return [request_view(view)]

    return router
