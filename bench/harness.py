"""What every benchmark shares: the real infrastructure, result rows, goals, sequence checks, CPU per process.

Results go to `.bench/latest.jsonl` (one JSON object per line, the fields of `Result`) and a
short Markdown summary `.bench/summary.md`. Kafka and PostgreSQL are the ones named by
`KAFKA_BOOTSTRAP_SERVERS` / `TEST_POSTGRES_URL`, or a local broker (Maven jars) and a
throwaway cluster started here.

Correctness fails a run (a lost, doubled or unknown message: `CorrectnessError`); a missed
performance goal never does, it is reported (`goal`, `goal_met`) and listed first in the summary.
"""

from __future__ import annotations

import asyncio
import functools
import json
import operator
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from infra.local import (
    DEFAULT_KAFKA_VERSION,
    REPO_ROOT,
    LocalKafka,
    LocalPostgres,
    ServiceProcess,
    ensure_kafka_jars,
    free_port,
)

RESULTS_DIR = REPO_ROOT / ".bench"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NO_GOAL = "none set"
BASELINE = "none (baseline)"


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
    # CPU seconds of the measured side's own processes (see cpu_per_process for every process).
    cpu_seconds: float | None = None
    # ours / the raw-aiokafka baseline of the same work in the same run (what it divides: see bench/README.md).
    ratio: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    unit: str = "ms"
    # Checks that must hold for the figure to count (gaps = 0, duplicates = 0, ...).
    checks: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    # What the figure should reach, as conditions on its fields or checks ("p99 <= 50 ms; ratio <= 3"),
    # or "none set" / "none (baseline)"; goal_met: True / False, None when there is no goal or no figure.
    goal: str = ""
    goal_met: bool | None = None
    # CPU seconds per process over the measurement: the services, the raw client, the broker's JVM
    # ("kafka") and PostgreSQL's backends ("postgres[<database owner>]") when /proc shows them.
    cpu_per_process: dict[str, float] = field(default_factory=dict)


class CorrectnessError(AssertionError):
    """A run lost, doubled or invented a message: its figures do not count and the run fails."""

    def __init__(self, failures: list[str], results: list[Result] | None = None) -> None:
        super().__init__("; ".join(failures))
        self.failures = failures
        self.results = results or []


# --- goals --------------------------------------------------------------------------------------

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq,
}
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w]*)\s*(<=|>=|==|<|>)\s*([-\d.,_]+)\s*(.*?)\s*$")
_RESULT_FIELDS = {f.name for f in fields(Result)}

# Goals of the figures of modules that do not set their own (matched on bench and variant).
DEFAULT_GOALS: list[tuple[str, str, str]] = [
    ("sla_timer", r"^lateness fired_at-due_at", "p99 <= 100 ms; max <= 1000 ms"),
    ("sla_timer", r"^burst:.*fired_at-due_at", "max <= 2000 ms"),
    ("sla_timer", r"^(arm|cancel) rate", "rate >= 5000 /s"),
    ("classification", r"^pipeline$", "p99 < 5 ms"),
]


def goal_met(result: Result, goal: str) -> bool | None:
    """Whether `result` meets every condition of `goal`; None when there is no goal or a figure is missing.

    A condition is `<name> <op> <number> [unit]`, separated by ';'; the name is a Result field
    (p50, p99, max, rate, ratio, cpu_seconds, ...) or a key of its checks.
    """
    if not goal or goal.startswith("none"):
        return None
    verdicts = []
    for part in goal.split(";"):
        match = _CONDITION.match(part)
        if not match:
            raise ValueError(f"cannot read goal condition {part!r} of {result.variant!r}")
        name, op, number, _unit = match.groups()
        value = getattr(result, name) if name in _RESULT_FIELDS else result.checks.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        verdicts.append(_OPERATORS[op](value, float(number.replace(",", "").replace("_", ""))))
    return all(verdicts)


def apply_goals(results: Iterable[Result]) -> None:
    """Give every result a goal (its own, else DEFAULT_GOALS, else "none set") and judge it."""
    for result in results:
        if not result.goal:
            result.goal = next(
                (goal for bench, pattern, goal in DEFAULT_GOALS if bench == result.bench and re.search(pattern, result.variant)),
                NO_GOAL,
            )
        result.goal_met = goal_met(result, result.goal)


# --- figures ------------------------------------------------------------------------------------


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


SEQUENCE_FAILURES = ("gaps", "duplicates", "unexpected", "duplicate_records")


def sequence_failures(checks: Mapping[str, Any]) -> list[str]:
    """The names of the sequence checks that failed (a run with any of them does not count)."""
    return [name for name in SEQUENCE_FAILURES if checks.get(name)]


@dataclass(frozen=True)
class Arrival:
    """One record seen on an output topic."""

    key: str
    # The logical message: the key when one input yields one output; e.g. the deadline id when one
    # incident yields a DeadlineArmed per summoned unit. Two events with one identity are a duplicate.
    identity: str
    event_id: str
    at: float


@dataclass
class ArrivalLedger:
    """Every event id and logical message seen on one topic so far, across runs."""

    events: set[str] = field(default_factory=set)
    identities: set[str] = field(default_factory=set)
    # Keys sent by any earlier run or priming: a late arrival of one is not "unexpected".
    issued: set[str] = field(default_factory=set)


def arrival_checks(arrivals: Iterable[Arrival], seq_of: Mapping[str, int], ledger: ArrivalLedger) -> dict[str, int]:
    """Sequence checks of one run from what actually arrived (not from what was sent).

    `seq_of` maps each key this run sent (and the sender saw accepted) to its sequence number.
    gaps: sent numbers that never arrived; duplicates: a second event for one logical message;
    duplicate_records: a second copy of one event id; unexpected: a key nobody sent. The ledger
    carries what earlier runs saw, so a copy arriving one run late still counts.
    """
    received: set[int] = set()
    duplicates = duplicate_records = unexpected = 0
    for arrival in arrivals:
        if arrival.event_id in ledger.events:
            duplicate_records += 1
            continue
        ledger.events.add(arrival.event_id)
        if arrival.identity in ledger.identities:
            duplicates += 1
        else:
            ledger.identities.add(arrival.identity)
        if arrival.key in seq_of:
            received.add(seq_of[arrival.key])
        elif arrival.key not in ledger.issued:
            unexpected += 1
    ledger.issued.update(seq_of)
    return {
        "gaps": sum(1 for seq in set(seq_of.values()) if seq not in received),
        "duplicates": duplicates,
        "duplicate_records": duplicate_records,
        "unexpected": unexpected,
    }


def seq_of_keys(keys: Iterable[str], tag: str) -> dict[str, int]:
    """Keys `<tag>-<number>` with their sequence number (others are left out)."""
    prefix = f"{tag}-"
    return {k: int(k[len(prefix):]) for k in keys if k.startswith(prefix) and k[len(prefix):].isdigit()}


def intended_send_times(start: float, rate: float, count: int) -> list[float]:
    """When each of `count` messages is due at a fixed `rate` from `start`: latency counts from these,
    not from the actual send, so a stalled sender cannot hide its own delay (coordinated omission)."""
    return [start + i / rate for i in range(count)]


def spread(values: Iterable[float]) -> str:
    """min–max of repeated figures, for the note of a summary row."""
    data = sorted(values)
    return f"{data[0]:,.1f}–{data[-1]:,.1f}" if data else "n/a"


@functools.cache
def _git_revision() -> dict[str, str]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        return out.stdout if out.returncode == 0 else ""

    revision = git("rev-parse", "--short=12", "HEAD").strip() or "unknown"
    # Uncommitted changes in the code measured (the services, contracts, infra and the benchmarks).
    status = git("status", "--porcelain", "--", "services", "contracts", "infra", "bench")
    dirty = [line[3:] for line in status.splitlines() if len(line) > 3]
    return {"git": revision, "git_dirty": str(len(dirty)) + (f" ({', '.join(dirty[:5])}{', …' if len(dirty) > 5 else ''})" if dirty else "")}


def versions(**extra: str) -> dict[str, str]:
    """Versions of what the figures depend on, with the git revision of the code measured."""
    found = {
        **_git_revision(),
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


# --- processes ----------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by process `pid` (Linux /proc)."""
    fields_ = _stat_fields(pid)
    return (int(fields_[11]) + int(fields_[12])) / _CLOCK_TICKS


def process_rss_mib(pid: int) -> float:
    """Resident memory of process `pid` in MiB (Linux /proc)."""
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else float("nan")


def postgres_processes(postmaster: int) -> dict[int, tuple[str | None, float]]:
    """PostgreSQL's processes now: pid -> (database of a backend or None, CPU seconds so far).

    The postmaster's entry (pid `postmaster`) counts its own time plus that of its exited children
    (a backend that closed its connection), so the total of two snapshots' difference is exact.
    """
    found: dict[int, tuple[str | None, float]] = {}
    try:
        fields_ = _stat_fields(postmaster)
    except OSError:
        return found
    found[postmaster] = (None, sum(int(x) for x in fields_[11:15]) / _CLOCK_TICKS)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            fields_ = _stat_fields(pid)
            if int(fields_[1]) != postmaster:
                continue
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
        except (OSError, IndexError, ValueError):
            continue
        # A backend's title: "postgres: <user> <database> <client> <state>"; others: "postgres: checkpointer".
        database = title[2] if len(title) >= 4 and title[0] == "postgres:" and "(" in title[3] else None
        found[pid] = (database, (int(fields_[11]) + int(fields_[12])) / _CLOCK_TICKS)
    return found


class CpuMeter:
    """CPU seconds per named process between two snapshots, with the broker's JVM and PostgreSQL.

    `processes()` names the pids to follow (asked at each snapshot: a restarted service has a new
    pid); `databases` names the owners of PostgreSQL databases, so backends are reported as
    `postgres[<owner>]` (others `postgres[other]`; server processes and exited backends
    `postgres[server]`).
    """

    def __init__(self, infra: Infrastructure | None, processes: Callable[[], Mapping[str, int | None]],
                 databases: Mapping[str, str] | None = None) -> None:
        self._infra = infra
        self._processes = processes
        self._databases = dict(databases or {})

    def name_database(self, url_or_name: str, owner: str) -> None:
        """Report the backends of this database (a URL or a name) as postgres[owner]."""
        self._databases[url_or_name.rsplit("/", 1)[-1]] = owner

    def snapshot(self) -> dict[tuple[str, int], float]:
        """(name, pid) -> CPU seconds so far."""
        found: dict[tuple[str, int], float] = {}
        for name, pid in self._processes().items():
            if pid:
                try:
                    found[(name, pid)] = process_cpu_seconds(pid)
                except OSError:
                    pass
        if self._infra is not None:
            if self._infra.kafka_pid:
                try:
                    found[("kafka", self._infra.kafka_pid)] = process_cpu_seconds(self._infra.kafka_pid)
                except OSError:
                    pass
            postmaster = self._infra.postmaster_pid()
            if postmaster:
                for pid, (database, cpu) in postgres_processes(postmaster).items():
                    owner = "server" if database is None else self._databases.get(database, "other")
                    found[(f"postgres[{owner}]", pid)] = cpu
        return found

    @staticmethod
    def delta(before: Mapping[tuple[str, int], float], after: Mapping[tuple[str, int], float]) -> dict[str, float]:
        """CPU seconds per name between two snapshots (a process new in `after` counts from zero)."""
        per_name: dict[str, float] = {}
        for (name, pid), cpu in after.items():
            per_name[name] = per_name.get(name, 0.0) + cpu - before.get((name, pid), 0.0)
        return {name: round(max(cpu, 0.0), 2) for name, cpu in sorted(per_name.items())}


def add_cpu(total: dict[str, float], more: Mapping[str, float]) -> dict[str, float]:
    """Sum CPU-per-process dicts (for rows that pool several runs)."""
    for name, cpu in more.items():
        total[name] = round(total.get(name, 0.0) + cpu, 2)
    return total


# --- infrastructure -----------------------------------------------------------------------------


@dataclass
class Infrastructure:
    """The broker and database server the benchmarks run against."""

    bootstrap: str
    postgres: LocalPostgres | None
    admin_url: str | None
    kafka_version: str
    postgres_version: str
    # The broker JVM's pid when this run started it (an external broker's CPU is not visible).
    kafka_pid: int | None = None
    # Scratch directory of the run (the local broker's data), removed at the end.
    work_dir: Path | None = None

    def postmaster_pid(self) -> int | None:
        """The local PostgreSQL server's pid (None for an external server)."""
        if self.postgres is None:
            return None
        try:
            return int((self.postgres.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

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
    # The services refuse the development token secret; the processes started here inherit this one.
    os.environ.setdefault("GW_AUTH_TOKEN_SECRET", secrets.token_urlsafe(48))
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
            yield Infrastructure(bootstrap, local_pg, admin_url, kafka_version, _postgres_version(local_pg),
                                 kafka_pid=kafka.pid if kafka else None, work_dir=Path(work))
        finally:
            if local_pg is not None:
                local_pg.stop()
                local_pg.cleanup()
            if kafka is not None:
                kafka.stop()


# --- output -------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:,.1f}" if isinstance(value, float) else str(value)


def _pretty_goal(goal: str) -> str:
    return goal.replace("<=", "≤").replace(">=", "≥").replace(";", " and")


def _met(result: Result) -> str:
    return {True: "met", False: "**MISSED**", None: "—"}[result.goal_met]


def write_results(results: list[Result], directory: Path = RESULTS_DIR, failures: Iterable[str] = ()) -> Path:
    """Write `latest.jsonl` (one line per result) and `summary.md`; return the summary's path.

    The summary opens with what failed (correctness: the run does not count) and the goals missed.
    """
    apply_goals(results)
    failures = list(failures)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "latest.jsonl", "w", encoding="utf-8") as out:
        for result in results:
            out.write(json.dumps(asdict(result), ensure_ascii=False) + "\n")
    lines = ["# Benchmark results", ""]
    if failures:
        lines += ["## FAILED: correctness or crash (these runs do not count)", "", *[f"- {f}" for f in failures], ""]
    missed = [r for r in results if r.goal_met is False]
    if missed:
        lines += [f"## Goals missed: {len(missed)} of {sum(1 for r in results if r.goal_met is not None)}", ""]
        for r in missed:
            named = [m.group(1) for part in r.goal.split(";") if (m := _CONDITION.match(part))]
            figures = ", ".join(
                f"{name} {_cell(value)}" for name in dict.fromkeys([*named, "p99", "rate"])
                if (value := getattr(r, name) if name in _RESULT_FIELDS else r.checks.get(name)) is not None
            )
            lines.append(f"- **{r.bench} / {r.variant}**: goal {_pretty_goal(r.goal)}; measured {figures}")
        lines.append("")
    elif results:
        lines += [f"All {sum(1 for r in results if r.goal_met is not None)} goals met.", ""]
    lines += [
        "| bench | variant | n | seconds | rate /s | p50 | p99 | p99.9 | max | unit | cpu s | ratio | goal | met | checks |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|---|",
    ]
    for r in results:
        checks = ", ".join(f"{k}={v}" for k, v in r.checks.items())
        lines.append(
            f"| {r.bench} | {r.variant} | {r.n:,} | {r.seconds:.2f} | {_cell(r.rate)} | {_cell(r.p50)} | {_cell(r.p99)} "
            f"| {_cell(r.p999)} | {_cell(r.max)} | {r.unit} | {_cell(r.cpu_seconds)} | {_cell(r.ratio)} "
            f"| {_pretty_goal(r.goal)} | {_met(r)} | {checks} |"
        )
    if results:
        lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in results[0].versions.items())]
    cpu = [f"- {r.bench} / {r.variant}: " + ", ".join(f"{k} {v:,.1f}" for k, v in r.cpu_per_process.items() if v >= 0.05)
           for r in results if r.cpu_per_process]
    if cpu:
        lines += ["", "CPU seconds per process (under 0.05 s left out; every figure in latest.jsonl):", *cpu]
    notes = [f"- {r.bench} / {r.variant}: {r.note}" for r in results if r.note]
    if notes:
        lines += ["", "Notes:", *notes]
    summary = directory / "summary.md"
    summary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary


def service_process(
    name: str, bootstrap: str, prefix: str, database_url: str, log_dir: Path, log_name: str | None = None, **settings: str
) -> ServiceProcess:
    """One service as an OS process with this run's broker, topic prefix and database."""
    upper = name.upper()
    port = free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "GW_TOPIC_PREFIX": prefix,
        f"GW_{upper}_DATABASE_URL": database_url,
        f"GW_{upper}_HTTP_PORT": str(port),
        f"GW_{upper}_LOG_LEVEL": "WARNING",
        **{f"GW_{upper}_{k.upper()}": v for k, v in settings.items()},
    }
    return ServiceProcess(name, env, port, log_dir / f"{log_name or name}.log", cwd=REPO_ROOT)


async def start_baseline(module: str, args: list[str], log_path: Path) -> subprocess.Popen:
    """Start a raw baseline (`python -m module args`) and wait for the "ready" it prints; kill it if none comes."""
    with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, text=True
        )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=90)
    except TimeoutError:
        line = ""
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"{module} did not start (see {log_path})")
    return proc


def stop_baseline(proc: subprocess.Popen) -> None:
    """SIGTERM a baseline process and wait; SIGKILL it if it does not stop within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
