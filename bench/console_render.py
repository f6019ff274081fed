"""How the dispatcher's console copes with a long queue: first render, and event-to-screen latency.

Standalone: `.venv/bin/python -m bench.console_render [--incidents 500] [--loads 5] [--updates 20]`.
The console runs in this process (uvicorn on a loopback port, SQLite read model, the in-memory
broker); its consumer is fed the facts of N open incidents of district D01, and headless Chromium
(Debian chromium + chromedriver) signs in as the district command centre (cmd-D01-1), who sees
all of them. Prints one JSON line per figure:

- `first_render_500`: from navigation start (performance.timeOrigin) to the queue list drawn with
  every item (`window.__queueRenderedAt`, set by the app after it drew the list) and to the next
  frame after that (`painted_ms`), over `--loads` page loads with a warm session cookie;
- `event_to_screen`: from just before one `HandoffAcknowledged` is handed to the console's
  consumer to the moment a MutationObserver in the page sees that handoff's chip change state.
  Both instants are epoch milliseconds of the same machine's clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from faststream.kafka import TestKafkaBroker

from bench.harness import Result, percentiles, versions
from contracts.envelope import Event, correlation_for, make_envelope
from contracts.events import HandoffAcknowledged, HandoffDispatched, IncidentClassified, IncidentReported, Location
from contracts.reference import demo_city
from contracts.topics import topic_for_event
from contracts.vocabulary import Category, HandoffRole, Urgency
from infra.local import free_port
from services.console.app import create_app
from services.console.domain import grid_area
from services.console.settings import ConsoleSettings

DISPATCHER = "cmd-D01-1"
DISTRICT = "D01"
PASSWORD = "gridwhistle"


class ConsoleServer:
    """The console app with its in-memory broker and lifespan, served by uvicorn on its own event loop."""

    def __init__(self, workdir: Path) -> None:
        settings = ConsoleSettings(
            database_url=f"sqlite+aiosqlite:///{workdir / 'console.db'}", topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
            log_json=False, log_level="WARNING", metrics_enabled=False, demo_password=PASSWORD,
            auth_dev_mode=True,  # one process on a laptop: the sign-in's tokens use the development secret
        )
        self.app = create_app(settings)
        self.runtime = self.app.state.runtime
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._serve(),), daemon=True)

    @property
    def base(self) -> str:
        """The console's URL."""
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with TestKafkaBroker(self.runtime.broker), self.app.router.lifespan_context(self.app):
            config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, lifespan="off", log_config=None)
            server = uvicorn.Server(config)
            task = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.02)
            self._ready.set()
            await self._stop.wait()
            server.should_exit = True
            await task

    def start(self) -> None:
        """Serve until stop()."""
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the console did not start within 60 s")

    def stop(self) -> None:
        """Shut the server and lifespan down."""
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        future: Future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(120)

    async def feed(self, event: Event, incident_id: str) -> None:
        """Hand one fact to the console's consumer (returns once it is projected and committed)."""
        envelope = make_envelope(
            event, source="bench", subject=incident_id, occurred_at=datetime.now(UTC),
            correlation_id=correlation_for(incident_id),
        )
        spec = topic_for_event(envelope.type)
        await self.runtime.broker.publish(
            envelope.encode(), self.runtime.topic(spec), key=envelope.key(), headers=envelope.headers()
        )


async def seed(server: ConsoleServer, count: int) -> list[tuple[str, str]]:
    """`count` open incidents in the district, each with one unreported handoff; (incident, handoff) ids."""
    city = demo_city()
    grids = [g.id for g in city.grids if grid_area(city, g.id)[0] == DISTRICT]
    now = datetime.now(UTC)
    opened = []
    for n in range(count):
        incident_id, handoff_id, grid_id = str(uuid.uuid4()), str(uuid.uuid4()), grids[n % len(grids)]
        urgency = Urgency.URGENT if n % 5 == 0 else Urgency.GENERAL
        due = now + timedelta(minutes=15 if urgency is Urgency.URGENT else 120) + timedelta(seconds=n)
        await server.feed(IncidentReported(
            incident_id=incident_id, grid_id=grid_id, reporter_id="W0001", description=f"压测事件 {n}",
            location=Location(address=f"幸福路{n}号"), reported_at=now,
        ), incident_id)
        await server.feed(IncidentClassified(
            incident_id=incident_id, grid_id=grid_id, category=Category.ENVIRONMENT, urgency=urgency, priority=2,
            confidence=0.9, classifier_version="bench",
        ), incident_id)
        await server.feed(HandoffDispatched(
            incident_id=incident_id, handoff_id=handoff_id, unit_id="U-URBAN_MANAGEMENT-D01",
            department="urban_management", role=HandoffRole.LEAD, category=Category.ENVIRONMENT, urgency=urgency,
            grid_id=grid_id, dispatched_at=now, report_due_at=due,
        ), incident_id)
        opened.append((incident_id, handoff_id))
    return opened


def open_browser():  # noqa: ANN201 - a selenium WebDriver
    """Headless Chromium that returns from get() once the DOM is parsed (the live stream never 'loads')."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1366,900"):
        options.add_argument(arg)
    options.page_load_strategy = "eager"
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    return driver


def wait_for(driver, script: str, timeout: float = 60) -> Any:  # noqa: ANN001
    """Poll a JavaScript expression until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {script};")
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"page never satisfied: {script}")


def sign_in(driver, base: str) -> None:  # noqa: ANN001
    """Sign in through the page's own API call, so the HttpOnly cookie is set for the origin."""
    driver.get(base + "/")
    status = driver.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch('/api/v1/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
          body: JSON.stringify({user_id: arguments[0], password: arguments[1]})}).then(r => done(r.status), e => done(String(e)));""",
        DISPATCHER, PASSWORD,
    )
    if status != 200:
        raise RuntimeError(f"sign-in failed: {status}")


def first_render(driver, base: str, count: int) -> dict[str, float]:  # noqa: ANN001
    """One page load: milliseconds from navigation start to the full queue drawn, and to the next frame."""
    driver.get(base + "/")
    wait_for(driver, f"window.__queueRenderedItems >= {count} && window.__queuePaintedAt")
    marks = driver.execute_script(
        """const q = performance.getEntriesByType('resource').find(e => e.name.includes('/api/v1/queue'));
        return {rendered: window.__queueRenderedAt, painted: window.__queuePaintedAt,
                queue_response: q ? q.responseEnd - q.requestStart : null, items: document.querySelectorAll('#queue .item').length};"""
    )
    if marks["items"] < count:
        raise RuntimeError(f"only {marks['items']} of {count} items drawn")
    return marks


def event_to_screen(driver, server: ConsoleServer, incident_id: str, handoff_id: str) -> float:  # noqa: ANN001
    """Milliseconds from handing one acknowledgement to the consumer until the page shows it."""
    driver.execute_script(
        """const id = arguments[0];
        window.__seenAt = null;
        const shown = () => document.querySelector(`#queue [data-handoff="${id}"][data-state="acknowledged"]`);
        const observer = new MutationObserver(() => {
          if (shown()) { window.__seenAt = performance.timeOrigin + performance.now(); observer.disconnect(); }
        });
        observer.observe(document.getElementById('queue'), {childList: true, subtree: true, attributes: true});""",
        handoff_id,
    )
    sent_at = time.time() * 1000
    server.run(server.feed(HandoffAcknowledged(
        incident_id=incident_id, handoff_id=handoff_id, unit_id="U-URBAN_MANAGEMENT-D01",
        actor_id="urban_management-D01-1", acknowledged_at=datetime.now(UTC), late=False,
    ), incident_id))
    seen_at = wait_for(driver, "window.__seenAt", timeout=30)
    return seen_at - sent_at


def summary(values: list[float]) -> dict[str, float]:
    """p50, p95 and max in milliseconds, rounded."""
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered), 1), "p95_ms": round(p95, 1), "max_ms": round(ordered[-1], 1)}


def missing_browser() -> str | None:
    """Why the browser cannot run here (None when it can)."""
    if not (shutil.which("chromium") or shutil.which("chromium-browser")) or not shutil.which("chromedriver"):
        return "needs the Debian packages chromium and chromium-driver (chromium and chromedriver on PATH)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs selenium (pip install -e '.[dev]')"
    return None


def measure_console(incidents: int, loads: int, updates: int) -> dict[str, Any]:
    """Seed the console, then time `loads` first renders and `updates` event-to-screen updates."""
    with tempfile.TemporaryDirectory() as workdir:
        server = ConsoleServer(Path(workdir))
        server.start()
        driver = None
        try:
            started = time.monotonic()
            opened = server.run(seed(server, incidents))
            seeded_seconds = time.monotonic() - started
            driver = open_browser()
            sign_in(driver, server.base)
            marks = [first_render(driver, server.base, incidents) for _ in range(loads)]
            latencies = [event_to_screen(driver, server, *opened[i % len(opened)]) for i in range(updates)]
            return {"loads": marks, "latencies": latencies, "seed_seconds": seeded_seconds}
        finally:
            if driver is not None:
                driver.quit()
            server.stop()


def main(argv: list[str] | None = None) -> int:
    """Run both measurements and print them as JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=500)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--updates", type=int, default=20)
    args = parser.parse_args(argv)
    if why := missing_browser():
        print(why, file=sys.stderr)
        return 2
    found = measure_console(args.incidents, args.loads, args.updates)
    loads, latencies = found["loads"], found["latencies"]
    print(json.dumps({
        "bench": "console", "variant": f"first_render_{args.incidents}", "n": len(loads),
        "items": loads[-1]["items"], "dispatcher": DISPATCHER,
        "rendered": summary([m["rendered"] for m in loads]),
        "painted": summary([m["painted"] for m in loads]),
        "queue_api": summary([m["queue_response"] for m in loads if m["queue_response"] is not None]),
        "seed_seconds": round(found["seed_seconds"], 1),
    }))
    print(json.dumps({
        "bench": "console", "variant": "event_to_screen", "n": len(latencies),
        "queue_items": args.incidents, **summary(latencies),
    }))
    return 0


# (incidents, page loads, updates) per profile of `python -m bench`.
PROFILES = {"short": (500, 3, 10), "long": (500, 10, 50)}


def run(infra: object, profile: str) -> list[Result]:
    """The registry's entry (optional): skips with a message, and no result, when Chromium is missing.

    The console runs in this process on SQLite with the in-memory broker (not the run's Kafka):
    the figures are the console's own read path and the browser's drawing.
    """
    if why := missing_browser():
        print(f"[bench] console_render skipped: {why}", flush=True)
        return []
    incidents, loads, updates = PROFILES[profile]
    found = measure_console(incidents, loads, updates)
    marks = found["loads"]
    figures = [
        (f"first render, {incidents} queue items drawn", [m["rendered"] for m in marks],
         f"navigation start → every item in the DOM; {loads} page loads; seeding took {found['seed_seconds']:.1f} s"),
        (f"first render, {incidents} items, next frame", [m["painted"] for m in marks], "navigation start → the frame after"),
        (f"GET /api/v1/queue, {incidents} items", [m["queue_response"] for m in marks if m["queue_response"] is not None],
         "request → response end, inside the page load"),
        (f"event to screen, {incidents} items", found["latencies"],
         "HandoffAcknowledged handed to the console's consumer → the chip changed on screen"),
    ]
    return [
        Result(bench="console", variant=variant, n=len(values), seconds=0.0, **percentiles(values),
               versions=versions(), note=f"{note}; in-process console (SQLite, in-memory broker), headless Chromium")
        for variant, values, note in figures
    ]


if __name__ == "__main__":
    sys.exit(main())
