"""Composition root of the SLA timer: the only place that wires its parts together."""

from __future__ import annotations

from fastapi import FastAPI

from contracts.deadline_policy import load_policy
from contracts.reference import load_reference_data
from contracts.topics import CLOSURE_OUTCOMES, ROUTING_HANDOFFS
from services.runtime.access import Areas
from services.runtime.clock import Clock
from services.runtime.host import ServiceRuntime
from services.runtime.watermarks import ConsumedView
from services.sla_timer.handlers import DeadlineKeeper, command_router
from services.sla_timer.metrics import SlaTimerMetrics
from services.sla_timer.repository import metadata
from services.sla_timer.scheduler import DeadlineScheduler
from services.sla_timer.settings import SlaTimerSettings


def create_app(settings: SlaTimerSettings, clock: Clock | None = None) -> FastAPI:
    """Build the SLA timer app; nothing connects until its lifespan starts."""
    runtime = ServiceRuntime("sla_timer", settings, metadata, clock)
    policy = load_policy(settings.deadline_policy)
    reference = load_reference_data(settings.reference_data)
    runtime.use_reference(Areas(reference))
    metrics = SlaTimerMetrics(runtime.metrics.registry)
    scheduler = DeadlineScheduler(runtime, settings, policy, metrics)
    keeper = DeadlineKeeper(runtime, policy, scheduler, metrics)
    handoffs = runtime.subscribe(
        ROUTING_HANDOFFS, keeper.routing_handlers(), purpose="handoffs", batch_handlers=keeper.routing_batch_handlers()
    )
    outcomes = runtime.subscribe(CLOSURE_OUTCOMES, keeper.closure_handlers(), purpose="closure")
    if settings.wait_for_consumed_view:
        scheduler.use_view(
            ConsumedView(
                {runtime.topic(ROUTING_HANDOFFS): handoffs, runtime.topic(CLOSURE_OUTCOMES): outcomes},
                runtime.clock,
                settle_seconds=settings.view_settle_seconds,
                hold_max_seconds=settings.view_hold_max_seconds,
                on_forced=lambda topic: metrics.forced_fires.labels(topic).inc(),
            )
        )
    if settings.scheduler_enabled:
        runtime.add_background("deadline-scheduler", scheduler.run)
        runtime.add_background("pending-gauge", scheduler.watch_pending)
    app = runtime.http_app(title="gridwhistle sla_timer", routers=[command_router(runtime, scheduler, reference)])
    app.state.scheduler = scheduler
    # The scheduler's core, for tests that move a FakeClock by hand: `await app.state.fire_due(now)`.
    app.state.fire_due = scheduler.fire_due
    return app
