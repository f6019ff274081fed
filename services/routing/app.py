"""Composition root of routing: the only place that wires its parts together."""

from __future__ import annotations

from fastapi import FastAPI

from contracts.deadline_policy import load_policy
from contracts.reference import load_reference_data
from contracts.topics import CLASSIFICATION_DECISIONS, CLOSURE_OUTCOMES, SLA_DEADLINES
from services.routing.domain import RoutingIndex
from services.routing.handlers import Routing, command_router, event_handlers
from services.routing.metrics import RoutingMetrics
from services.routing.repository import metadata
from services.routing.settings import RoutingSettings
from services.runtime.access import Areas
from services.runtime.clock import Clock
from services.runtime.host import ServiceRuntime


def create_app(settings: RoutingSettings, clock: Clock | None = None) -> FastAPI:
    """Build the routing app; bad reference data or policy fails here, before anything connects."""
    reference = load_reference_data(settings.reference_data)
    index = RoutingIndex(reference, settings.default_command_centre_unit_id)
    policy = load_policy(settings.deadline_policy)
    runtime = ServiceRuntime("routing", settings, metadata, clock)
    runtime.use_reference(Areas(reference))
    routing = Routing(runtime, settings, index, policy, RoutingMetrics(runtime.metrics.registry))
    handlers = event_handlers(routing)
    runtime.subscribe(CLASSIFICATION_DECISIONS, handlers["decisions"], purpose="decisions")
    runtime.subscribe(SLA_DEADLINES, handlers["deadlines"], purpose="deadlines")
    runtime.subscribe(CLOSURE_OUTCOMES, handlers["outcomes"], purpose="outcomes")
    app = runtime.http_app(title="gridwhistle routing", routers=[command_router(routing)])
    app.state.routing = routing
    return app
