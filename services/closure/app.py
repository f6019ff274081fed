"""Composition root of closure: the only place that wires its parts together."""

from __future__ import annotations

from fastapi import FastAPI

from contracts.reference import load_reference_data
from services.closure.handlers import CONSUMED, command_router, fact_handler
from services.closure.kpi import grid_areas
from services.closure.kpi_handlers import KPI_SOURCES, KpiGauges, KpiReader, gauge_refresher, kpi_router, on_kpi_fact
from services.closure.metrics import ClosureMetrics
from services.closure.repository import metadata
from services.closure.settings import ClosureSettings
from services.runtime.access import Areas
from services.runtime.clock import Clock
from services.runtime.host import ServiceRuntime


def create_app(settings: ClosureSettings, clock: Clock | None = None) -> FastAPI:
    """Build the closure app; nothing connects until its lifespan starts."""
    runtime = ServiceRuntime("closure", settings, metadata, clock)
    reference = load_reference_data(settings.reference_data)
    runtime.use_reference(Areas(reference))
    on_fact = fact_handler(runtime)
    for spec, purpose, event_types in CONSUMED:
        runtime.subscribe(spec, {t.event_type: on_fact for t in event_types}, purpose=purpose)
    for spec, purpose, event_types in KPI_SOURCES:
        runtime.subscribe(spec, {t.event_type: on_kpi_fact for t in event_types}, purpose=purpose)
    metrics = ClosureMetrics(runtime.metrics.registry)
    kpis = KpiReader(runtime, settings, grid_areas(reference))
    runtime.add_background("kpi-gauges", gauge_refresher(kpis, KpiGauges(runtime.metrics.registry, reference), settings))
    routers = [command_router(runtime, settings, reference, metrics), kpi_router(kpis)]
    return runtime.http_app(title="gridwhistle closure", routers=routers)
