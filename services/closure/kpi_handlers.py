"""The KPI projection's wiring: its consumers, the HTTP API (JSON and CSV) and the Prometheus gauges.

The projection has consumer groups of its own (`closure.kpi-*`), so it can lag, fail or be
rebuilt without touching the closure state machine, and it reads closure's own outcomes topic
like anyone else's: the live figures and a rebuild from offset zero see the same events.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Gauge

from contracts.envelope import Envelope, Event
from contracts.events import (
    DeadlineBreached,
    DeadlineBreachWithdrawn,
    FeedbackGiven,
    HandoffAcknowledged,
    HandoffDeclined,
    HandoffDispatched,
    HandoffReassigned,
    HandoffReleased,
    HandoffResolved,
    IncidentClassified,
    IncidentClosed,
    IncidentReclassified,
    IncidentReopened,
    IncidentReported,
    IncidentResolved,
)
from contracts.reference import ReferenceData
from contracts.topics import (
    CLASSIFICATION_DECISIONS,
    CLOSURE_OUTCOMES,
    INTAKE_INCIDENTS,
    ROUTING_HANDOFFS,
    SLA_DEADLINES,
    TopicSpec,
)
from services.closure import kpi_store
from services.closure.kpi import (
    BREACH_KINDS,
    Dimension,
    GridArea,
    KpiRow,
    compute_kpis,
    flat_columns,
    flat_row,
    row_as_dict,
    time_to_report_histogram,
)
from services.closure.settings import ClosureSettings
from services.runtime.access import STAFF, require_role
from services.runtime.auth import Principal
from services.runtime.host import ServiceRuntime
from services.runtime.outbox import UnitOfWork

# What the KPI projection reads, per topic; the rebuild replays exactly these.
KPI_SOURCES: tuple[tuple[TopicSpec, str, tuple[type[Event], ...]], ...] = (
    (INTAKE_INCIDENTS, "kpi-intake", (IncidentReported,)),
    (CLASSIFICATION_DECISIONS, "kpi-classification", (IncidentClassified, IncidentReclassified)),
    (
        ROUTING_HANDOFFS,
        "kpi-routing",
        (
            HandoffDispatched,
            HandoffAcknowledged,
            HandoffDeclined,
            HandoffReassigned,
            HandoffReleased,
            HandoffResolved,
        ),
    ),
    (SLA_DEADLINES, "kpi-sla", (DeadlineBreached, DeadlineBreachWithdrawn)),
    (CLOSURE_OUTCOMES, "kpi-closure", (IncidentResolved, IncidentReopened, FeedbackGiven, IncidentClosed)),
)

# The headline rates on /metrics, with their help text.
HEADLINE_RATIOS = {
    "on_time_report": "Share of owed reports (报到) made by the report deadline.",
    "response": "Share of owed reports made at all.",
    "resolution": "Share of closed incidents closed as resolved.",
    "satisfaction": "Share of feedback that was satisfied or basically satisfied.",
    "bounce": "Share of dispatched handoffs that were declined.",
    "reopen": "Share of incidents that reached verification and were reopened.",
}
GAUGE_DIMENSIONS = (Dimension.ALL, Dimension.DEPARTMENT, Dimension.DISTRICT)


async def on_kpi_fact(uow: UnitOfWork, envelope: Envelope) -> None:
    """Consumer handler: merge the event into the KPI facts."""
    await kpi_store.record_fact(uow.conn, envelope)


class KpiReader:
    """Loads the facts and computes figures with the settings' time zone and the grid areas."""

    def __init__(self, runtime: ServiceRuntime, settings: ClosureSettings, areas: dict[str, GridArea]) -> None:
        self.runtime = runtime
        self.areas = areas
        self.day_offset = timedelta(hours=settings.kpi_utc_offset_hours)

    def as_instant(self, value: datetime | None) -> datetime | None:
        """A query bound; a bound without a zone is local time."""
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=timezone(self.day_offset))

    async def rows(self, dimension: Dimension, start: datetime | None, end: datetime | None) -> list[KpiRow]:
        """Figures per group of `dimension` over [start, end), as of now."""
        return (await self.rows_by_dimension((dimension,), start, end))[dimension]

    async def time_to_report(self, start: datetime | None, end: datetime | None) -> list[dict[str, int | None]]:
        """The time-to-report distribution of handoffs dispatched in [start, end)."""
        async with self.runtime.engine.connect() as conn:
            facts = await kpi_store.load_facts(conn)
        return time_to_report_histogram(facts, start=start, end=end)

    async def rows_by_dimension(
        self, dimensions: tuple[Dimension, ...], start: datetime | None, end: datetime | None
    ) -> dict[Dimension, list[KpiRow]]:
        """Figures for several dimensions from one read of the facts."""
        async with self.runtime.engine.connect() as conn:
            facts = await kpi_store.load_facts(conn)
        as_of = self.runtime.clock.now()
        return {
            dimension: compute_kpis(
                facts,
                dimension=dimension,
                as_of=as_of,
                areas=self.areas,
                start=start,
                end=end,
                day_offset=self.day_offset,
            )
            for dimension in dimensions
        }


def kpi_router(reader: KpiReader) -> APIRouter:
    """HTTP: the figures as JSON and as CSV for Excel (supervisors and admins)."""

    async def staff_only(principal: Principal = Depends(reader.runtime.auth.principal)) -> None:
        require_role(principal, STAFF, "the KPIs")

    router = APIRouter(prefix="/api/v1", tags=["kpis"], dependencies=[Depends(staff_only)])

    async def figures(dimension: Dimension, start: datetime | None, end: datetime | None) -> list[KpiRow]:
        return await reader.rows(dimension, reader.as_instant(start), reader.as_instant(end))

    @router.get("/kpis", summary="The three rates and companions per dimension over [from, to)")
    async def kpis(
        dimension: Dimension = Dimension.ALL,
        start: datetime | None = Query(None, alias="from"),
        end: datetime | None = Query(None, alias="to"),
    ) -> dict[str, Any]:
        rows = await figures(dimension, start, end)
        return {
            "dimension": dimension.value,
            "from": reader.as_instant(start),
            "to": reader.as_instant(end),
            "as_of": reader.runtime.clock.now(),
            "rows": [row_as_dict(row) for row in rows],
        }

    @router.get("/kpis/time-to-report", summary="Distribution of dispatch → report (报到) over [from, to)")
    async def kpis_time_to_report(
        start: datetime | None = Query(None, alias="from"),
        end: datetime | None = Query(None, alias="to"),
    ) -> dict[str, Any]:
        start, end = reader.as_instant(start), reader.as_instant(end)
        return {"from": start, "to": end, "buckets": await reader.time_to_report(start, end)}

    @router.get("/kpis.csv", summary="The same figures as CSV (UTF-8 with BOM, for Excel)")
    async def kpis_csv(
        dimension: Dimension = Dimension.ALL,
        start: datetime | None = Query(None, alias="from"),
        end: datetime | None = Query(None, alias="to"),
    ) -> Response:
        rows = await figures(dimension, start, end)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["dimension", *flat_columns()], lineterminator="\r\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({"dimension": dimension.value, **flat_row(row)})
        # Excel only reads a CSV as UTF-8 when it starts with a byte order mark.
        return Response(
            content="\ufeff" + buffer.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="gridwhistle-kpis-{dimension.value}.csv"'},
        )

    return router


class KpiGauges:
    """Headline figures as gauges, overall and per department and district (closed label sets)."""

    def __init__(self, registry: CollectorRegistry, reference: ReferenceData) -> None:
        labels = ["dimension", "group"]
        self.ratios = {
            name: Gauge(f"gridwhistle_closure_kpi_{name}_ratio", help_text, labels, registry=registry)
            for name, help_text in HEADLINE_RATIOS.items()
        }
        self.breaches = Gauge(
            "gridwhistle_closure_kpi_report_breaches", "Report deadlines breached in the window.", labels, registry=registry
        )
        self.breaches_by_kind = Gauge(
            "gridwhistle_closure_kpi_breaches",
            "Deadlines breached in the window, per clock kind (report, on_scene, resolution, verification).",
            [*labels, "kind"],
            registry=registry,
        )
        self.time_to_report_p90 = Gauge(
            "gridwhistle_closure_kpi_time_to_report_p90_seconds",
            "90th percentile of dispatch → report (报到) in the window.",
            labels,
            registry=registry,
        )
        # Only groups named by the reference data become labels, so the series stay bounded.
        self.known = {
            Dimension.ALL: {"all"},
            Dimension.DEPARTMENT: {d.code for d in reference.departments},
            Dimension.DISTRICT: {d.id for d in reference.districts},
        }

    def show(self, rows_by_dimension: dict[Dimension, list[KpiRow]]) -> None:
        """Replace every series with the given figures (a 0/0 rate has no series)."""
        for gauge in (*self.ratios.values(), self.breaches, self.breaches_by_kind, self.time_to_report_p90):
            gauge.clear()
        for dimension, rows in rows_by_dimension.items():
            for row in rows:
                if row.group not in self.known[dimension]:
                    continue
                labels = (dimension.value, row.group)
                for name, gauge in self.ratios.items():
                    rate = getattr(row, name).rate
                    if rate is not None:
                        gauge.labels(*labels).set(rate)
                self.breaches.labels(*labels).set(row.report_breaches)
                for kind in BREACH_KINDS:
                    self.breaches_by_kind.labels(*labels, kind).set(row.breaches[kind])
                if row.time_to_report.p90_seconds is not None:
                    self.time_to_report_p90.labels(*labels).set(row.time_to_report.p90_seconds)


def gauge_refresher(reader: KpiReader, gauges: KpiGauges, settings: ClosureSettings) -> Callable[[], Any]:
    """A background task recomputing the gauges over the recent window every few seconds."""

    async def refresh_forever() -> None:
        while True:
            now = reader.runtime.clock.now()
            start = now - timedelta(days=settings.kpi_gauge_window_days)
            gauges.show(await reader.rows_by_dimension(GAUGE_DIMENSIONS, start, None))
            await asyncio.sleep(settings.kpi_refresh_seconds)

    return refresh_forever
