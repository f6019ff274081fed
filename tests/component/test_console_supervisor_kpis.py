"""The supervisor page shows closure's KPIs: one definition, checked on a generated history.

Closure and the console each consume the same generated history on their own in-memory broker; the
console reads closure's KPI API over HTTP (an ASGI transport to the real closure app). The figures
on the supervisor page must equal closure's and the history's own record (`expected_rows`, computed
without `services.closure.kpi`).
"""

from __future__ import annotations

import httpx
import pytest

from contracts.topics import topic_for_event
from services.closure.app import create_app as create_closure
from services.closure.settings import ClosureSettings
from services.runtime.clock import FakeClock
from tests.component.test_closure_kpi_history import AS_OF, expected_rows, generate_history
from tests.component.test_console_api import running_console
from tests.support import publish, running

CLOSURE_PORT = 8004  # the console's default GW_CONSOLE_CLOSURE_URL


class ToClosure(httpx.AsyncBaseTransport):
    """Requests to closure's address go to the closure app; nothing else is expected."""

    def __init__(self, closure_app) -> None:  # noqa: ANN001 - the FastAPI app
        self.closure = httpx.ASGITransport(app=closure_app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert request.url.port == CLOSURE_PORT, f"unexpected upstream call {request.url}"
        return await self.closure.handle_async_request(request)


def ratio(row: dict, name: str) -> dict:
    return row[f"{name}_rate"]


async def test_the_supervisor_page_shows_closures_figures_for_a_generated_history(tmp_path):
    history = generate_history(incidents=40, seed=7)
    closure_app = create_closure(
        ClosureSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'closure.db'}", log_json=False, log_level="WARNING"),
        clock=FakeClock(AS_OF),
    )
    async with running(closure_app) as closure:
        async with running_console(tmp_path, clock=FakeClock(AS_OF), upstream_transport=ToClosure(closure_app)) as console:
            for envelope in history.envelopes:
                await publish(closure_app, envelope)
                spec = topic_for_event(envelope.type)
                await console.runtime.broker.publish(
                    envelope.encode(), console.runtime.topic(spec), key=envelope.key(), headers=envelope.headers()
                )
            page = await console.http.get("/api/v1/supervisor", headers=await console.as_user("sup-1"))
            assert page.status_code == 200, page.text
            body = page.json()
            overall = (await closure.get("/api/v1/kpis")).json()["rows"][0]
            units = {row["group"]: row for row in (await closure.get("/api/v1/kpis", params={"dimension": "unit"})).json()["rows"]}

    expected = expected_rows(history, "all")["all"]
    for name in ("response", "resolution", "satisfaction", "on_time_report"):
        assert body["rates"][name] == ratio(overall, name) == ratio(expected, name), name
        assert body[f"{name}_rate"] == pytest.approx(ratio(expected, name)["rate"]), name
    assert 0 < body["response_rate"] < 1 and 0 < body["resolution_rate"] < 1

    expected_units = expected_rows(history, "unit")
    shown = {u["unit_id"]: u for u in body["units"]}
    assert sorted(shown) == sorted(units) == sorted(expected_units)
    for unit_id, unit in shown.items():
        want = expected_units[unit_id]
        wanted_rate = ratio(want, "on_time_report")["rate"]
        assert unit["on_time_report_rate"] == (None if wanted_rate is None else pytest.approx(wanted_rate)), unit_id
        assert (unit["summoned"], unit["due"], unit["reported"], unit["on_time"], unit["breached"]) == (
            want["handoffs_dispatched"], want["handoffs_due"], ratio(want, "response")["numerator"],
            ratio(want, "on_time_report")["numerator"], want["report_breaches"],
        )
        assert unit["unit_name"]

    assert sum(b["count"] for b in body["time_to_report"]) == expected["time_to_report_seconds"]["count"]
    assert body["breaches_today"] == [] and body["breaches_today_by_kind"] == {}  # the history is weeks old
