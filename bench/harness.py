"""What every benchmark shares: the real infrastructure, result rows, percentiles, process figures.

Results go to `.bench/latest.jsonl` (one JSON object per line, the fields of `Result`) and a
short Markdown table `.bench/summary.md`. Kafka and PostgreSQL are the ones named by
`KAFKA_BOOTSTRAP_SERVERS` / `TEST_POSTGRES_URL`, or a local broker (Maven jars) and a
throwaway cluster started here.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from infra.local import DEFAULT_KAFKA_VERSION, REPO_ROOT, LocalKafka, LocalPostgres, ensure_kafka_jars, free_port

RESULTS_DIR = REPO_ROOT / ".bench"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    """One measured figure; p50..max are in `unit` (null when the figure is a rate or a single number)."""

    bench: str
    variant: str
    n: int
    seconds: float
    rate: float | None = None
    p50: float | None = None
    p99: float | None = None
    p999: float | None = None
    max: float | None = None
    cpu_seconds: float | None = None
    # Filled by the baseline benchmarks (raw aiokafka) once they exist: ours / baseline.
    ratio: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    unit: str = "ms"
    # Checks that must hold for the figure to count (early = 0, duplicates = 0, ...).
    checks: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def percentiles(values: Iterable[float]) -> dict[str, float | None]:
    """p50, p99, p99.9 and max of the values (None when there are none)."""
    data = sorted(values)
    if not data:
        return {"p50": None, "p99": None, "p999": None, "max": None}
    if len(data) == 1:
        return {"p50": round(data[0], 3), "p99": round(data[0], 3), "p999": round(data[0], 3), "max": round(data[0], 3)}
    cuts = statistics.quantiles(data, n=1000, method="inclusive")
    return {"p50": round(cuts[499], 3), "p99": round(cuts[989], 3), "p999": round(cuts[998], 3), "max": round(data[-1], 3)}


def sequence_check(received: Iterable[int], sent: int) -> dict[str, int]:
    """Gaps (sent sequence numbers never received), duplicates and unexpected numbers among `received`."""
    counts: dict[int, int] = {}
    for seq in received:
        counts[seq] = counts.get(seq, 0) + 1
    expected = range(sent)
    return {
        "gaps": sum(1 for seq in expected if seq not in counts),
        "duplicates": sum(c - 1 for seq, c in counts.items() if c > 1),
        "unexpected": sum(1 for seq in counts if seq not in expected),
    }


def sequence_failures(checks: dict[str, int]) -> list[str]:
    """The names of the sequence checks that failed (a run with any of them does not count)."""
    return [name for name in ("gaps", "duplicates", "unexpected") if checks.get(name)]


def intended_send_times(start: float, rate: float, count: int) -> list[float]:
    """When each of `count` messages is due at a fixed `rate` from `start`: latency counts from these,
    not from the actual send, so a stalled sender cannot hide its own delay (coordinated omission)."""
    return [start + i / rate for i in range(count)]


def spread(values: Iterable[float]) -> str:
    """min–max of repeated figures, for the note of a summary row."""
    data = sorted(values)
    return f"{data[0]:,.1f}–{data[-1]:,.1f}" if data else "n/a"


def versions(**extra: str) -> dict[str, str]:
    """Versions of what the figures depend on."""
    found = {
        "python": platform.python_version(),
        "machine": f"{platform.machine()} x{os.cpu_count()}",
        # Other work on the machine moves every figure; the 1-minute load when the result was taken.
        "load_1min": f"{os.getloadavg()[0]:.1f}",
    }
    for package in ("faststream", "aiokafka", "sqlalchemy", "asyncpg"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "missing"
    return {**found, **extra}


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by process `pid` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def process_rss_mib(pid: int) -> float:
    """Resident memory of process `pid` in MiB (Linux /proc)."""
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else float("nan")


@dataclass
class Infrastructure:
    """The broker and database server the benchmarks run against."""

    bootstrap: str
    postgres: LocalPostgres | None
    admin_url: str | None
    kafka_version: str
    postgres_version: str

    def create_database(self) -> str:
        """A new empty database; its SQLAlchemy (asyncpg) URL."""
        name = f"bench_{uuid.uuid4().hex[:10]}"
        if self.postgres is not None:
            return self.postgres.create_database(name)
        assert self.admin_url is not None
        import asyncio

        import asyncpg

        async def create() -> None:
            conn = await asyncpg.connect(self.admin_url.replace("postgresql+asyncpg", "postgresql"))
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        return self.admin_url.rsplit("/", 1)[0] + f"/{name}"


def _postgres_version(local: LocalPostgres | None) -> str:
    if local is None:
        return "external"
    out = subprocess.run([str(local.bindir / "postgres"), "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"\d+(\.\d+)+", out.stdout)  # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    return match.group(0) if match else "unknown"


@contextmanager
def infrastructure() -> Iterator[Infrastructure]:
    """Kafka and PostgreSQL for the run: the ones named in the environment, else local throwaway ones."""
    kafka_version = DEFAULT_KAFKA_VERSION
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as work:
        kafka: LocalKafka | None = None
        local_pg: LocalPostgres | None = None
        try:
            bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
            if not bootstrap:
                ensure_kafka_jars(kafka_version)
                kafka = LocalKafka(Path(work) / "kafka", port=free_port(), heap="1g", version=kafka_version)
                kafka.start().wait_ready(timeout=120)
                bootstrap = kafka.bootstrap
            admin_url = os.environ.get("TEST_POSTGRES_URL")
            if not admin_url:
                local_pg = LocalPostgres().start()  # its own directory, traversable by the postgres user
            yield Infrastructure(bootstrap, local_pg, admin_url, kafka_version, _postgres_version(local_pg))
        finally:
            if local_pg is not None:
                local_pg.stop()
                local_pg.cleanup()
            if kafka is not None:
                kafka.stop()


def write_results(results: list[Result], directory: Path = RESULTS_DIR) -> Path:
    """Write `latest.jsonl` (one line per result) and `summary.md`; return the summary's path."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "latest.jsonl", "w", encoding="utf-8") as out:
        for result in results:
            out.write(json.dumps(asdict(result), ensure_ascii=False) + "\n")
    lines = [
        "# Benchmark results",
        "",
        "| bench | variant | n | seconds | rate /s | p50 | p99 | p99.9 | max | unit | cpu s | checks |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]

    def cell(value: Any) -> str:
        return "" if value is None else f"{value:,.1f}" if isinstance(value, float) else str(value)

    for r in results:
        checks = ", ".join(f"{k}={v}" for k, v in r.checks.items())
        lines.append(
            f"| {r.bench} | {r.variant} | {r.n:,} | {r.seconds:.2f} | {cell(r.rate)} | {cell(r.p50)} | {cell(r.p99)} "
            f"| {cell(r.p999)} | {cell(r.max)} | {r.unit} | {cell(r.cpu_seconds)} | {checks} |"
        )
    if results:
        lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in results[0].versions.items())]
    notes = [f"- {r.variant}: {r.note}" for r in results if r.note]
    if notes:
        lines += ["", "Notes:", *notes]
    summary = directory / "summary.md"
    summary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary
