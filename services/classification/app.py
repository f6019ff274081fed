"""Composition root of classification: the only place that wires its parts together."""

from __future__ import annotations

from fastapi import FastAPI

from contracts.topics import INTAKE_INCIDENTS
from services.classification.handlers import command_router, event_handlers
from services.classification.model import load_classifier
from services.classification.repository import metadata
from services.classification.settings import ClassificationSettings
from services.runtime.clock import Clock
from services.runtime.host import ServiceRuntime


def create_app(settings: ClassificationSettings, clock: Clock | None = None) -> FastAPI:
    """Build the classification app; nothing connects until its lifespan starts."""
    runtime = ServiceRuntime("classification", settings, metadata, clock)
    classifier = load_classifier(settings.taxonomy_path, settings.corpus_path, settings.review_threshold)
    runtime.subscribe(INTAKE_INCIDENTS, event_handlers(runtime, classifier))
    return runtime.http_app(title="gridwhistle classification", routers=[command_router(runtime)])
