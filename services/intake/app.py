"""Composition root of intake: the only place that wires its parts together."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Histogram

from contracts.events import HandoffDispatched, IncidentClassified, IncidentReclassified
from contracts.reference import load_reference_data
from services.intake.duplicates import DuplicateLinker
from services.intake.handlers import api_router, linking_duplicates, observing_report_to_dispatch, projection_handlers
from services.intake.open311 import PREFIX as OPEN311_PREFIX
from services.intake.open311 import open311_error, open311_router
from services.intake.reporting import IncidentReader, ReportDesk
from services.intake.repository import metadata
from services.intake.settings import IntakeSettings
from services.runtime.access import Areas
from services.runtime.auth import ApiKeys
from services.runtime.clock import Clock
from services.runtime.host import ServiceRuntime


def create_app(settings: IntakeSettings, clock: Clock | None = None) -> FastAPI:
    """Build the intake app; nothing connects until its lifespan starts."""
    reference = load_reference_data(settings.reference_data)
    runtime = ServiceRuntime("intake", settings, metadata, clock)
    report_to_dispatch = Histogram(
        "gridwhistle_intake_report_to_dispatch_seconds",
        "Report received to the first lead unit dispatched, per incident (SLO: within 5 s).",
        buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
        registry=runtime.metrics.registry,
    )
    duplicates = DuplicateLinker(runtime, settings)
    for spec, purpose, handlers in projection_handlers():
        if HandoffDispatched.event_type in handlers:
            project = handlers[HandoffDispatched.event_type]
            handlers = {**handlers, HandoffDispatched.event_type: observing_report_to_dispatch(project, report_to_dispatch)}
        for decided in (IncidentClassified.event_type, IncidentReclassified.event_type):
            if decided in handlers:
                handlers = {**handlers, decided: linking_duplicates(handlers[decided], duplicates)}
        runtime.subscribe(spec, handlers, purpose=purpose)
    runtime.use_reference(Areas(reference))
    desk = ReportDesk(runtime, settings, reference, duplicates)
    reader = IncidentReader(runtime, reference)
    keys = ApiKeys(settings.open311_api_keys, dev_mode=settings.auth_dev_mode)
    app = runtime.http_app(
        title="gridwhistle intake",
        routers=[api_router(runtime, desk, reader)],
        # Open311 authenticates with the GeoReport api_key (or a staff token for reads) itself.
        self_authenticating=[open311_router(desk, reader, reference, keys, runtime.auth)],
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    return app


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with field errors, except that unparsable JSON is a 400 that says so."""
    errors = list(exc.errors())
    broken_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if request.url.path.startswith(OPEN311_PREFIX):
        return open311_error(400, "; ".join(str(e.get("msg")) for e in errors))
    if broken_json is not None:
        reason = (broken_json.get("ctx") or {}).get("error", "")
        message = f"request body is not valid JSON: {reason}".rstrip(": ")
        return JSONResponse({"detail": [{"loc": ["body"], "msg": message, "type": "json_invalid"}]}, status_code=400)
    return JSONResponse({"detail": _json_safe(jsonable_encoder(errors))}, status_code=422)


def _json_safe(value: Any) -> Any:
    """Non-finite floats as text: an error echoing a NaN input must not fail to render itself."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value
