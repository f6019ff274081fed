"""Composition root of the console: read-model consumers, the API, the live stream and the web app."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from contracts.reference import load_reference_data
from contracts.topics import TOPICS
from services.console.auth import TokenIssuer, principal_dependency
from services.console.handlers import ChangeSignal, Projection, Upstream, api_router
from services.console.repository import metadata
from services.console.settings import ConsoleSettings
from services.runtime.clock import Clock
from services.runtime.host import ServiceRuntime

STATIC_DIR = Path(__file__).parent / "static"


def create_app(
    settings: ConsoleSettings, clock: Clock | None = None, upstream_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """Build the console app; nothing connects until its lifespan starts (tests may fake the upstream HTTP)."""
    runtime = ServiceRuntime("console", settings, metadata, clock)
    city = load_reference_data(settings.reference_data)
    signal = ChangeSignal()
    projection = Projection(runtime, city, signal)
    for spec, handlers in projection.handlers_by_topic(TOPICS):
        runtime.subscribe(spec, handlers, purpose=spec.name.rsplit(".", 1)[-1])
    issuer = TokenIssuer(settings.token_secret, settings.token_max_age_seconds)
    current = principal_dependency(issuer, city, settings.supervisors, settings.admins)
    router = api_router(runtime, settings, city, signal, issuer, current, Upstream(settings, upstream_transport))
    app = runtime.http_app(title="gridwhistle console", routers=[router])
    app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="web")
    return app
