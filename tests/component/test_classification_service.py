"""Classification as a service: consumes reports, emits decisions once, accepts reclassification."""

from __future__ import annotations

from contracts.events import IncidentClassified, IncidentReclassified
from contracts.vocabulary import Urgency
from services.classification.app import create_app
from services.classification.model import load_classifier
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
    async with running(app, user="cmd-D01-1") as client:
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
    async with running(app, user="cmd-D01-1") as client:
        missing = await client.post(
            "/api/v1/incidents/nope/reclassify",
            json={"actor_id": "cmd-D01-1", "category": "fire", "urgency": "urgent", "reason": "r"},
        )
        assert missing.status_code == 404
        no_reason = await client.post(
            "/api/v1/incidents/nope/reclassify", json={"category": "fire", "urgency": "urgent"}
        )
        assert no_reason.status_code == 422
        assert no_reason.json()["detail"][0]["loc"] == ["body", "reason"]


async def test_classified_event_is_stamped_with_taxonomy_and_model_versions(tmp_path):
    app = make_app(tmp_path)
    async with running(app):
        await publish(app, reported("厨房着火了"))
        decision = (await wait_for(lambda: outbox_envelopes(app)))[0].data
        assert decision.classifier_version == load_classifier().version
        assert "+model-" in decision.classifier_version
        assert any(r.startswith("model:") for r in decision.rules_fired)


async def test_unclear_report_waits_in_the_review_queue_until_a_dispatcher_decides(tmp_path):
    app = make_app(tmp_path)
    async with running(app, user="cmd-D01-1") as client:
        unclear, clear = reported("快"), reported("小区垃圾堆放很臭")
        await publish(app, unclear)
        await publish(app, clear)
        await wait_for(lambda: _outbox_with(app, 2))
        queue = (await client.get("/api/v1/review-queue")).json()["incidents"]
        assert [row["incident_id"] for row in queue] == [unclear.subject]
        assert queue[0]["needs_review"] is True and queue[0]["urgency"] == "urgent"

        response = await client.post(
            f"/api/v1/incidents/{unclear.subject}/reclassify",
            json={"actor_id": "cmd-D01-1", "category": "other", "urgency": "general", "reason": "路人误报"},
        )
        assert response.status_code == 202
        assert (await client.get("/api/v1/review-queue")).json()["incidents"] == []


async def test_confirming_the_machine_decision_clears_review_without_a_new_event(tmp_path):
    app = make_app(tmp_path)
    async with running(app, user="cmd-D01-1") as client:
        unclear = reported("快")
        await publish(app, unclear)
        first = (await wait_for(lambda: outbox_envelopes(app)))[0].data
        response = await client.post(
            f"/api/v1/incidents/{unclear.subject}/reclassify",
            json={"actor_id": "cmd-D01-1", "category": first.category.value, "urgency": first.urgency.value, "reason": "确认"},
        )
        assert response.json()["changed"] is False
        assert (await client.get("/api/v1/review-queue")).json()["incidents"] == []
        assert len(await outbox_envelopes(app)) == 1


async def _outbox_with(app, n):
    envelopes = await outbox_envelopes(app)
    return envelopes if len(envelopes) >= n else None
