"""Every route of every service asks for credentials, except the few that are open on purpose."""

from __future__ import annotations

import re

import pytest

from services.classification.app import create_app as create_classification
from services.classification.settings import ClassificationSettings
from services.closure.app import create_app as create_closure
from services.closure.settings import ClosureSettings
from services.console.app import create_app as create_console
from services.console.settings import ConsoleSettings
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.routing.app import create_app as create_routing
from services.routing.settings import RoutingSettings
from services.sla_timer.app import create_app as create_sla_timer
from services.sla_timer.settings import SlaTimerSettings
from tests.support import running

SERVICES = {
    "intake": (create_intake, IntakeSettings),
    "classification": (create_classification, ClassificationSettings),
    "routing": (create_routing, RoutingSettings),
    "sla_timer": (create_sla_timer, SlaTimerSettings),
    "closure": (create_closure, ClosureSettings),
    "console": (create_console, ConsoleSettings),
}
# Probes and Prometheus inside the cluster (no personal data; keep them off the public ingress),
# the API documentation, signing in and out, and GeoReport's public service catalogue.
OPEN = {
    ("GET", "/live"),
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("POST", "/api/v1/login"),
    ("POST", "/api/v1/logout"),
    ("GET", "/open311/v2/services.json"),
    ("GET", "/open311/v2/services/{service_code}.json"),
}


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


@pytest.mark.parametrize("service", SERVICES)
async def test_every_route_but_the_open_ones_answers_401_without_credentials(tmp_path, service):
    create, settings_class = SERVICES[service]
    app = create(settings_class(database_url=f"sqlite+aiosqlite:///{tmp_path}/{service}.db", log_json=False))
    # The OpenAPI document lists every route, including those of included routers.
    routes = [(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops]
    protected = [(m, p) for m, p in routes if (m, p) not in OPEN]
    assert len(protected) >= 3, routes
    async with running(app, signed=False) as client:
        for method, path in protected:
            answer = await client.request(method, concrete(path))
            assert answer.status_code == 401, (service, method, path, answer.status_code, answer.text)
            assert "www-authenticate" in answer.headers or path.startswith("/open311/"), (method, path)
        for method, path in OPEN & set(routes):
            if method == "GET":
                assert (await client.get(concrete(path).replace("/x.json", "/fire.json"))).status_code in (200, 503)
    documented = app.openapi()["components"].get("securitySchemes", {})
    if service != "console":  # the console's routes read the cookie or the header themselves
        assert documented.get("bearer", {}).get("scheme") == "bearer"
