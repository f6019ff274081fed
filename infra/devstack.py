"""Run the whole gridwhistle stack locally: Kafka, the topic catalogue, every service.

``make run`` calls ``python -m infra.devstack``. Without KAFKA_BOOTSTRAP_SERVERS
it starts a local broker (data in .run/kafka, port GRIDWHISTLE_KAFKA_PORT or
9092); GRIDWHISTLE_SERVICES=intake,routing runs only those services; each service gets a SQLite
database in .run/data and a log in .run/logs (GRIDWHISTLE_RUN_DIR moves .run, and
GRIDWHISTLE_PORT_OFFSET moves every HTTP port, e.g. for a second stack beside the first).
Ctrl-C or SIGTERM stops everything; a service that dies stops everything too,
with a nonzero exit. The services run in development access mode (GW_AUTH_DEV_MODE=1):
they accept tokens signed with the development secret and the demo Open311 key.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from infra.local import (
    REPO_ROOT,
    TOPIC_CATALOGUE,
    LocalKafka,
    ServiceProcess,
    create_topics_sync,
    port_open,
    raise_keyboard_interrupt,
)

# The one list of services and their HTTP ports; start order is this order.
SERVICES: tuple[tuple[str, int], ...] = (
    ("intake", 8000),
    ("classification", 8001),
    ("routing", 8002),
    ("sla_timer", 8003),
    ("closure", 8004),
    ("console", 8080),
)

# Where the stack keeps its state, and how far its HTTP ports are moved from the defaults above:
# both exist so a test can run a second stack beside a developer's own.
RUN_DIR = Path(os.environ.get("GRIDWHISTLE_RUN_DIR", str(REPO_ROOT / ".run")))
PORT_OFFSET = int(os.environ.get("GRIDWHISTLE_PORT_OFFSET", "0"))
KAFKA_DATA_DIR = RUN_DIR / "kafka"
DATA_DIR = RUN_DIR / "data"
LOG_DIR = RUN_DIR / "logs"

# Grid G0001 of the demo city, reported by its grid worker W0001 (the token's user).
EXAMPLE_INCIDENT = (
    '{"grid_id": "G0001", "description": "楼下有人打架，有人流血", '
    '"location": {"latitude": 28.10795, "longitude": 112.932143, "address": "幸福路8号"}}'
)
DEMO_ACTORS = (
    ("grid worker of G0001 (reporter, verifies)", "W0001"),
    ("community officer of G0001, unit U-POL-P0001", "P0001"),
    ("health department D01, unit U-HEALTH-D01", "health-D01-1"),
    ("station duty desk, unit U-DESK-S0101", "desk-S0101-1"),
    ("district command centre, unit U-CMD-D01", "cmd-D01-1"),
    ("supervisor", "sup-1"),
    ("admin", "admin"),
)


def _say(message: str) -> None:
    print(f"[devstack] {message}", file=sys.stderr, flush=True)


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def service_env(name: str, port: int, bootstrap: str) -> dict[str, str]:
    """The environment one service gets in the dev stack."""
    prefix = f"GW_{name.upper()}_"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        prefix + "DATABASE_URL": f"sqlite+aiosqlite:///{DATA_DIR / f'{name}.db'}",
        prefix + "HTTP_PORT": str(port),
        # A laptop: the development token secret and the demo Open311 key are accepted.
        "GW_AUTH_DEV_MODE": os.environ.get("GW_AUTH_DEV_MODE", "1"),
    }
    if name == "console":
        # The console forwards actions to the owners' HTTP APIs, wherever this stack put them.
        for backend, default_port in SERVICES:
            if backend != "console":
                env[f"GW_CONSOLE_{backend.upper()}_URL"] = f"http://127.0.0.1:{default_port + PORT_OFFSET}"
    return env


def selected_services() -> list[tuple[str, int]]:
    """SERVICES, or the subset named in GRIDWHISTLE_SERVICES (comma-separated)."""
    wanted = [n.strip() for n in os.environ.get("GRIDWHISTLE_SERVICES", "").split(",") if n.strip()]
    known = dict(SERVICES)
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"GRIDWHISTLE_SERVICES names unknown services {unknown}; known: {list(known)}")
    return [(name, port + PORT_OFFSET) for name, port in SERVICES if not wanted or name in wanted]


def available_services() -> tuple[list[tuple[str, int]], list[str]]:
    """Split the selected services into those whose package exists and the names of those that don't."""
    present, missing = [], []
    for name, port in selected_services():
        if (REPO_ROOT / "services" / name / "__main__.py").is_file():
            present.append((name, port))
        else:
            missing.append(name)
    return present, missing


def banner(bootstrap: str, broker: LocalKafka | None, services: list[ServiceProcess], missing: list[str]) -> str:
    """The text printed once everything is up."""
    rule = "=" * 72
    lines = [rule, "gridwhistle dev stack is up", rule]
    where = f"log {_rel(broker.server_log)}" if broker else "external cluster (KAFKA_BOOTSTRAP_SERVERS)"
    lines.append(f"  {'kafka':<15} {bootstrap:<26} {where}")
    for svc in services:
        lines.append(f"  {svc.name:<15} {svc.url:<26} log {_rel(svc.log_path)}")
    for name in missing:
        lines.append(f"  {name:<15} {'(not started)':<26} services/{name}/__main__.py does not exist yet")
    if any(svc.name == "intake" for svc in services):
        intake = next(svc for svc in services if svc.name == "intake")
        python = _rel(Path(sys.executable))
        lines += [
            "",
            "Report an incident as the grid worker W0001 (every /api call needs a token):",
            f"  TOKEN=$({python} -m services.runtime.auth token W0001)",
            f"  curl -X POST {intake.url}/api/v1/incidents -H \"Authorization: Bearer $TOKEN\" \\",
            "    -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' \\",
            f"    -d '{EXAMPLE_INCIDENT}'",
            f"  curl -H \"Authorization: Bearer $TOKEN\" {intake.url}/api/v1/incidents/<incident_id>"
            "    # dispatched within a second or two",
            "",
            "Demo users: a token from the command above, or the console's sign-in (password gridwhistle);",
            "the actor is the token's user (see README, Access):",
            *(f"  {actor:<14} {who}" for who, actor in DEMO_ACTORS),
        ]
    lines += ["", f"Databases: {_rel(DATA_DIR)}/<service>.db    Ctrl-C stops everything.", rule]
    return "\n".join(lines)


def run() -> int:
    """Start the stack, watch it until Ctrl-C/SIGTERM or a crash, then stop it all."""
    broker: LocalKafka | None = None
    started: list[ServiceProcess] = []
    exit_code = 0
    # Explicit, because a shell starting us in the background leaves SIGINT
    # ignored, and Python then never installs its Ctrl-C handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
        if bootstrap:
            _say(f"using the Kafka cluster at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS)")
        else:
            port = int(os.environ.get("GRIDWHISTLE_KAFKA_PORT", "9092"))
            broker = LocalKafka(KAFKA_DATA_DIR, port=port)
            _say(f"starting Kafka on 127.0.0.1:{port} (data in {_rel(KAFKA_DATA_DIR)})")
            started_at = time.monotonic()
            broker.start()
            broker.wait_ready(timeout=90)
            bootstrap = broker.bootstrap
            _say(f"Kafka ready in {time.monotonic() - started_at:.1f}s")

        topics = create_topics_sync(bootstrap, TOPIC_CATALOGUE)
        _say(f"{len(topics)} topics ready (from {_rel(TOPIC_CATALOGUE)})")

        present, missing = available_services()
        for name in missing:
            _say(f"WARNING: skipping {name}: services/{name}/__main__.py does not exist yet")
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        for name, port in present:
            if port_open("127.0.0.1", port):
                raise RuntimeError(f"port {port} for {name} is already in use (another dev stack running?)")
        for name, port in present:
            svc = ServiceProcess(name, service_env(name, port, bootstrap), port, LOG_DIR / f"{name}.log")
            started.append(svc)  # before start(): an interrupt in between must still stop it
            svc.start()
            _say(f"started {name} (pid {svc.pid}) on port {port}")
        # Started all at once, then waited on, so their startups overlap.
        for svc in started:
            svc.wait_healthy(timeout=90)
        print(banner(bootstrap, broker, started, missing), flush=True)

        while True:
            time.sleep(0.5)
            for svc in started:
                if not svc.is_running:
                    raise RuntimeError(
                        f"service {svc.name} DIED (exit code {svc.returncode}); "
                        f"last lines of {_rel(svc.log_path)}:\n{svc.log_tail()}"
                    )
            if broker is not None and not broker.is_running:
                raise RuntimeError(f"Kafka DIED; last lines of {_rel(broker.server_log)}:\n{broker._log_tails()}")
    except KeyboardInterrupt:
        _say("stopping")
    except Exception as exc:
        print("\n" + "!" * 72, file=sys.stderr)
        print(f"[devstack] FAILED: {exc}", file=sys.stderr)
        print("!" * 72, file=sys.stderr, flush=True)
        exit_code = 1
    finally:
        # A second Ctrl-C must not interrupt the shutdown and leave orphans.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for svc in reversed(started):
            code = svc.terminate(timeout=15)
            _say(f"stopped {svc.name} (exit {code})")
        if broker is not None:
            broker.stop()
            _say("stopped Kafka")
    return exit_code


if __name__ == "__main__":
    sys.exit(run())
