"""The SLA timer's Prometheus metrics, scraped from /metrics as Prometheus would."""

from __future__ import annotations

from datetime import timedelta

from services.runtime.clock import FakeClock
from tests.component.test_sla_timer_harness import acknowledged, dispatched, new_ids, running, settings_for


async def test_metrics_scrape_counts_every_clock_kind_and_signal(tmp_path):
    clock = FakeClock()
    async with running(settings_for(tmp_path / "sla.db"), clock) as sla:
        incident, handoff = new_ids()
        await sla.publish(dispatched(incident, handoff, clock.now()), incident_id=incident)
        clock.advance(timedelta(minutes=8))
        await sla.fire_due()  # the 50 % warning of the report clock
        await sla.publish(acknowledged(incident, handoff, clock.now()), incident_id=incident)
        clock.advance(timedelta(hours=1))
        await sla.fire_due()  # the on-scene clock (30 min) breaches; warnings of others may fire
        await sla.app.state.scheduler.refresh_pending_gauge()
        text = (await sla.http.get("/metrics")).text

    p = "gridwhistle_sla_timer"
    for kind in ("report", "on_scene", "resolution"):
        assert f'{p}_deadlines_armed_total{{kind="{kind}",urgency="urgent"}} 1.0' in text
    assert f'{p}_deadlines_cancelled_total{{kind="report",urgency="urgent"}} 1.0' in text
    assert f'{p}_deadlines_breached_total{{kind="on_scene",urgency="urgent"}} 1.0' in text
    assert f'{p}_signals_fired_total{{kind="on_scene",signal="breach",urgency="urgent"}} 1.0' in text
    assert f'{p}_signals_fired_total{{kind="report",signal="warning",urgency="urgent"}} 1.0' in text
    assert f'{p}_breach_lateness_seconds_count{{urgency="urgent"}} 1.0' in text
    # The 50 % warning of the 15-minute report clock was due at 7.5 min and sent at 8 min: 30 s late.
    [warning_sum] = [line for line in text.splitlines() if line.startswith(f'{p}_warning_lateness_seconds_sum{{urgency="urgent"}}')]
    assert float(warning_sum.split()[-1]) >= 30.0
    assert f'{p}_deadlines_pending{{state="armed",urgency="urgent"}} 1.0' in text  # resolution still runs
