"""The verify_chain command catches a timeline row edited, or rows cut off the end, directly in closure's SQLite file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from contracts.vocabulary import HandoffRole
from tests.component.test_closure_service import Incident, make_app
from tests.support import running

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_checker(database_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.closure.verify_chain", "--database-url", database_url, *extra],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_an_edited_timeline_row_is_named_by_the_checker(tmp_path):
    app, clock = make_app(tmp_path)
    async with running(app):
        incident = Incident(app, clock)
        await incident.report()
        await incident.dispatch("lead")
        await incident.dispatch("co", HandoffRole.CO_OPERATING)
        await incident.resolve("lead")
        await incident.resolve("co", HandoffRole.CO_OPERATING)
        other = Incident(app, clock)
        await other.report()
    url = f"sqlite+aiosqlite:///{tmp_path}/closure.db"

    intact = run_checker(url)
    assert intact.returncode == 0, intact.stderr
    assert "2 timeline(s) verified" in intact.stdout

    with sqlite3.connect(tmp_path / "closure.db") as db:
        seq = db.execute(
            "SELECT seq FROM timeline WHERE incident_id = ? AND event_type = 'HandoffResolved' ORDER BY seq LIMIT 1",
            (incident.id,),
        ).fetchone()[0]
        # Someone rewrites history: the lead "found it unfounded" instead of resolving it.
        db.execute(
            "UPDATE timeline SET summary = json_set(summary, '$.disposition', 'unfounded') "
            "WHERE incident_id = ? AND seq = ?",
            (incident.id, seq),
        )

    broken = run_checker(url)
    assert broken.returncode == 1
    assert f"incident {incident.id} seq {seq}" in broken.stderr
    assert run_checker(url, "--incident", other.id).returncode == 0
    assert run_checker(url, "--incident", incident.id).returncode == 1
    missing = run_checker(url, "--incident", "no-such-incident")
    assert missing.returncode == 1 and "no timeline entries" in missing.stderr


async def test_entries_deleted_from_the_end_are_caught_by_the_anchored_head(tmp_path):
    app, clock = make_app(tmp_path)
    async with running(app) as client:
        incident = Incident(app, clock)
        await incident.resolved_by_the_lead()  # reported, classified, dispatched, resolved, IncidentResolved
        other = Incident(app, clock)
        await other.report()
        head = (await client.get(f"/api/v1/incidents/{incident.id}/timeline")).json()["head"]
        assert head["length"] == 5
    url = f"sqlite+aiosqlite:///{tmp_path}/closure.db"
    assert run_checker(url).returncode == 0

    with sqlite3.connect(tmp_path / "closure.db") as db:
        # Someone hides that the incident was ever resolved: the last two entries go.
        db.execute("DELETE FROM timeline WHERE incident_id = ? AND seq > 3", (incident.id,))
        db.execute("DELETE FROM timeline WHERE incident_id = ?", (other.id,))

    broken = run_checker(url, "--incident", incident.id)
    assert broken.returncode == 1
    assert f"incident {incident.id} seq 4: truncated: the head records 5 entries, 3 remain" in broken.stderr
    wiped = run_checker(url, "--incident", other.id)
    assert wiped.returncode == 1 and "truncated" in wiped.stderr
    assert run_checker(url).returncode == 1

    with sqlite3.connect(tmp_path / "closure.db") as db:
        db.execute("DELETE FROM timeline_heads WHERE incident_id = ?", (incident.id,))  # and the anchor too
    headless = run_checker(url, "--incident", incident.id)
    assert headless.returncode == 1 and "no anchored head" in headless.stderr
