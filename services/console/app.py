"""Composition root of the console: read-model consumers, the API, the live stream and the web app."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from contracts.reference import load_reference_data
from contracts.topics import TOPICS
from services.console.auth import principal_dependency
from services.console.handlers import ChangeSignal, Projection, Upstream, api_router
from services.console.repository import metadata
from services.console.settings import ConsoleSettings
from services.runtime.access import Areas
from services.runtime.clock import Clock
from services.runtime.host import ServiceRuntime

STATIC_DIR = Path(__file__).parent / "static"


def create_app(
    settings: ConsoleSettings, clock: Clock | None = None, upstream_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """Build the console app; nothing connects until its lifespan starts (tests may fake the upstream HTTP)."""
    runtime = ServiceRuntime("console", settings, metadata, clock)
    city = load_reference_data(settings.reference_data)
    runtime.use_reference(Areas(city))
    signal = ChangeSignal()
    projection = Projection(runtime, city, signal)
    for spec, handlers in projection.handlers_by_topic(TOPICS):
        runtime.subscribe(spec, handlers, purpose=spec.name.rsplit(".", 1)[-1])
    current = principal_dependency(runtime.auth)
    router = api_router(runtime, settings, city, signal, current, Upstream(settings, upstream_transport))
    # The console's router signs users in and takes the token from a cookie as well as the header.
    app = runtime.http_app(title="gridwhistle console", self_authenticating=[router])
    app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="web")
    return app
