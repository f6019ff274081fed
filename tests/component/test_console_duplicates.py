"""A probable duplicate (DuplicateLinked from intake) shows on the dispatcher's queue item, its detail and its timeline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from contracts.events import DuplicateLinked
from services.runtime.clock import FakeClock
from tests.component.test_console_api import HOME_GRID, Harness, running_console

DESK = "desk-S0101-1"  # dispatcher of station S0101, which HOME_GRID belongs to
REASON = "same grid G0001, same category violence (classified), 4 min earlier"


@pytest.fixture
async def console(tmp_path) -> AsyncIterator[Harness]:
    async with running_console(tmp_path, clock=FakeClock()) as harness:
        yield harness


async def test_a_duplicate_link_shows_on_the_dispatchers_item_and_in_its_timeline(console: Harness):
    original, _ = await console.whistle(HOME_GRID)
    console.clock.advance(timedelta(minutes=4))
    repeat, _ = await console.whistle(HOME_GRID)
    await console.publish(DuplicateLinked(incident_id=repeat, original_incident_id=original, reason=REASON), repeat)

    desk = await console.as_user(DESK)
    items = {item["incident_id"]: item for item in (await console.http.get("/api/v1/queue", headers=desk)).json()["items"]}
    assert items[repeat]["duplicate_of"] == original
    assert items[original]["duplicate_of"] is None
    # Still its own incident with its own handoffs: linked, not merged.
    assert items[repeat]["status"] == "dispatched" and len(items[repeat]["handoffs"]) == 1

    detail = (await console.http.get(f"/api/v1/incidents/{repeat}", headers=desk)).json()
    assert detail["duplicate_of"] == original
    (entry,) = [e for e in detail["timeline"] if e["event_type"] == "DuplicateLinked"]
    assert entry["detail"] == {"original_incident_id": original, "reason": REASON}
    assert [e["event_type"] for e in detail["timeline"]][-1] == "DuplicateLinked"
    original_detail = (await console.http.get(f"/api/v1/incidents/{original}", headers=desk)).json()
    assert original_detail["duplicate_of"] is None
    assert "DuplicateLinked" not in [e["event_type"] for e in original_detail["timeline"]]


async def test_a_duplicate_link_shows_to_everyone_who_may_see_the_incident_only(console: Harness):
    original, _ = await console.whistle(HOME_GRID)
    repeat, _ = await console.whistle(HOME_GRID)
    await console.publish(DuplicateLinked(incident_id=repeat, original_incident_id=original, reason=REASON), repeat)
    for user in ("W0001", "P0001", "cmd-D01-1", "sup-1"):
        headers = await console.as_user(user)
        detail = (await console.http.get(f"/api/v1/incidents/{repeat}", headers=headers)).json()
        assert detail["duplicate_of"] == original, user
    stranger = await console.as_user("desk-S0102-1")
    assert (await console.http.get(f"/api/v1/incidents/{repeat}", headers=stranger)).status_code == 404
