"""Classification as a service: consumes reports, emits decisions once, accepts reclassification."""

from __future__ import annotations

from contracts.events import IncidentClassified, IncidentReclassified
from contracts.vocabulary import Urgency
from services.classification.app import create_app
from services.classification.settings import ClassificationSettings
from services.runtime.clock import FakeClock
from tests.support import outbox_envelopes, publish, reported, running, wait_for


def make_app(tmp_path):
    settings = ClassificationSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/classification.db")
    return create_app(settings, clock=FakeClock())


async def test_report_is_classified_once_even_when_delivered_twice(tmp_path):
    app = make_app(tmp_path)
    async with running(app):
        report = reported("楼下有人打架，有人流血")
        await publish(app, report)
        await publish(app, report)
        envelopes = await wait_for(lambda: outbox_envelopes(app))
        assert len(envelopes) == 1
        decision = envelopes[0]
        assert isinstance(decision.data, IncidentClassified)
        assert decision.data.urgency is Urgency.URGENT
        assert decision.causation_id == report.id
        assert decision.correlation_id == report.correlation_id
        assert decision.subject == report.subject


async def test_dispatcher_reclassification_emits_event_with_previous_values(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        report = reported("小区垃圾堆放很臭")
        await publish(app, report)
        await wait_for(lambda: outbox_envelopes(app))
        incident = report.subject
        response = await client.post(
            f"/api/v1/incidents/{incident}/reclassify",
            json={"actor_id": "cmd-D01-1", "category": "safety_hazard", "urgency": "urgent", "reason": "堆放物阻塞消防通道"},
        )
        assert response.status_code == 202, response.text
        last = (await outbox_envelopes(app))[-1]
        assert isinstance(last.data, IncidentReclassified)
        assert (last.data.previous_category.value, last.data.urgency) == ("environment", Urgency.URGENT)
        current = (await client.get(f"/api/v1/incidents/{incident}/classification")).json()
        assert current["category"] == "safety_hazard" and current["decided_by"] == "cmd-D01-1"


async def test_reclassification_without_reason_or_of_unknown_incident_is_refused(tmp_path):
    app = make_app(tmp_path)
    async with running(app) as client:
        missing = await client.post(
            "/api/v1/incidents/nope/reclassify",
            json={"actor_id": "x", "category": "fire", "urgency": "urgent", "reason": "r"},
        )
        assert missing.status_code == 404
        no_reason = await client.post(
            "/api/v1/incidents/nope/reclassify", json={"actor_id": "x", "category": "fire", "urgency": "urgent"}
        )
        assert no_reason.status_code == 422
        assert no_reason.json()["detail"][0]["loc"] == ["body", "reason"]
