"""Produce and consume paths of the shared runtime (services/runtime) against raw aiokafka, in interleaved pairs.

- produce: `OutboxRelay` (the real loop, `ServiceRuntime`'s publish: FastStream, acks=all,
  idempotent) draining N committed outbox rows vs a raw `AIOKafkaProducer` (acks=all,
  idempotent, linger 1 ms) sending the same N records, every send issued before awaiting the
  acknowledgements. Rate = N / (first round → all rows marked published, or all acknowledged).
- consume: `ServiceRuntime.subscribe` with a trivial handler (one upsert into a state table; the
  runtime adds the idempotent claim in processed_events, same transaction) on N records already
  in the topic vs a raw `AIOKafkaConsumer` that decodes the JSON and does the same claim + upsert
  in one asyncpg transaction per record and commits offsets once per fetched batch after it is
  processed. Rate = (N − 1) / (first → last record's transaction committed).

Each side runs in its own process (`python -m bench.runtime_paths worker ...`), so its CPU
seconds are its own; each run has a fresh topic and database. Regressions the figures catch
beyond the ratio: `max_in_flight` (sends not yet acknowledged at once: 1 means every publish is
awaited) and `commits_per_1000` (offset commits per 1,000 records: 1,000 means a commit per record),
and `uncommitted` (records whose offsets were not committed when the consumer stopped).
Every record carries its sequence number in its key; what reached the topic (produce) or the
handler (consume) is checked for gaps, duplicates and strangers, and any fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.harness import (
    BASELINE,
    RESULTS_DIR,
    Arrival,
    ArrivalLedger,
    CorrectnessError,
    CpuMeter,
    Infrastructure,
    Result,
    add_cpu,
    arrival_checks,
    seq_of_keys,
    sequence_failures,
    spread,
    versions,
)
from contracts.envelope import HEADER_ID
from contracts.topics import INTAKE_INCIDENTS
from infra.local import REPO_ROOT

BENCH = "runtime_paths"
RUNTIME_NAME = "benchpaths"
GOAL_PRODUCE = "max_in_flight >= 50"
GOAL_CONSUME = "commits_per_1000 <= 100; uncommitted == 0"
READY_TIMEOUT = 120.0
RUN_TIMEOUT = 300.0


@dataclass(frozen=True)
class Profile:
    """Sizes of one run."""

    pairs: int
    produce: int  # outbox rows / records per produce run
    consume: int  # records per consume run


PROFILES = {
    "short": Profile(pairs=3, produce=10_000, consume=3_000),
    "long": Profile(pairs=5, produce=50_000, consume=20_000),
}


# --- the measured side (a worker process) -------------------------------------------------------


def records(tag: str, n: int) -> list[tuple[str, bytes, dict[str, str]]]:
    """N IncidentReported records keyed `<tag>-<seq>`: (key, value, headers)."""
    from bench.pipeline import report_envelope

    out = []
    for i in range(n):
        key = f"{tag}-{i:07d}"
        envelope = report_envelope(key)
        out.append((key, envelope.encode(), envelope.headers()))
    return out


@dataclass
class Counters:
    """What the worker watches on the client classes, whoever calls them (the runtime or raw code)."""

    sends: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    commits: int = 0

    def install(self) -> None:
        """Wrap AIOKafkaProducer.send and AIOKafkaConsumer.commit (this process only)."""
        send, commit = AIOKafkaProducer.send, AIOKafkaConsumer.commit
        counters = self

        def acknowledged(_future: Any) -> None:
            counters.in_flight -= 1

        async def counted_send(producer: AIOKafkaProducer, *args: Any, **kwargs: Any) -> Any:
            future = await send(producer, *args, **kwargs)
            counters.sends += 1
            counters.in_flight += 1
            counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)
            future.add_done_callback(acknowledged)
            return future

        async def counted_commit(consumer: AIOKafkaConsumer, *args: Any, **kwargs: Any) -> Any:
            counters.commits += 1
            return await commit(consumer, *args, **kwargs)

        AIOKafkaProducer.send = counted_send  # type: ignore[method-assign]
        AIOKafkaConsumer.commit = counted_commit  # type: ignore[method-assign]


def cpu_now() -> float:
    """CPU seconds of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Progress:
    """First and last finished record (time and CPU) and the keys finished, in order."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.keys: list[str] = []
        self.first: tuple[float, float] | None = None
        self.last: tuple[float, float] | None = None
        self.done = asyncio.Event()

    def finished(self, key: str) -> None:
        self.keys.append(key)
        if self.first is None:
            self.first = (time.perf_counter(), cpu_now())
        if len(self.keys) >= self.n and not self.done.is_set():
            self.last = (time.perf_counter(), cpu_now())
            self.done.set()

    def window(self) -> tuple[float, float]:
        """Seconds and CPU seconds from the first to the last finished record."""
        assert self.first and self.last
        return self.last[0] - self.first[0], self.last[1] - self.first[1]


def runtime_settings(spec: dict[str, Any]) -> Any:
    from services.runtime.settings import ServiceSettings

    return ServiceSettings(kafka_bootstrap_servers=spec["bootstrap"], database_url=spec["database_url"],
                           topic_prefix=spec.get("prefix", ""), log_level="WARNING", log_json=False)


async def produce_ours(spec: dict[str, Any], driver: Driver) -> dict[str, Any]:
    """Commit N outbox rows, then run the relay until every one is marked published."""
    from sqlalchemy import MetaData

    from contracts.envelope import HEADER_TYPE
    from services.runtime.db import create_schema
    from services.runtime.host import ServiceRuntime

    n = spec["n"]
    runtime = ServiceRuntime(RUNTIME_NAME, runtime_settings(spec), MetaData(), configure_logs=False)
    await create_schema(runtime.engine, runtime.metadata)
    outbox = runtime.tables[0]
    now = runtime.clock.now()
    rows = [{"event_id": headers[HEADER_ID], "event_type": headers[HEADER_TYPE], "topic": spec["topic"], "key": key,
             "payload": value, "headers": headers, "created_at": now} for key, value, headers in records(spec["tag"], n)]
    async with runtime.engine.begin() as conn:
        for i in range(0, n, 1_000):
            await conn.execute(outbox.insert(), rows[i:i + 1_000])
    await runtime.broker.start()
    relay = runtime.relay
    drained = 0
    done = asyncio.Event()
    drain_once = relay.drain_once

    async def counted_drain() -> int:
        nonlocal drained
        published = await drain_once()
        drained += published
        if drained >= n:
            done.set()
        return published

    relay.drain_once = counted_drain  # type: ignore[method-assign]
    await driver.ready()
    started, cpu0 = time.perf_counter(), cpu_now()
    task = asyncio.create_task(relay.run())
    relay.notify()  # as a committing transaction does
    await asyncio.wait_for(done.wait(), RUN_TIMEOUT)
    seconds, cpu = time.perf_counter() - started, cpu_now() - cpu0
    driver.measured()
    await relay.stop()
    await asyncio.wait_for(task, 30)
    await runtime.broker.stop()
    await runtime.engine.dispose()
    return {"seconds": seconds, "cpu_seconds": cpu, "done": drained}


async def produce_raw(spec: dict[str, Any], driver: Driver) -> dict[str, Any]:
    """Send N records with every send issued first, then await all acknowledgements."""
    data = [(key.encode(), value, [(k, v.encode()) for k, v in headers.items()])
            for key, value, headers in records(spec["tag"], spec["n"])]
    producer = AIOKafkaProducer(bootstrap_servers=spec["bootstrap"], acks="all", enable_idempotence=True, linger_ms=1)
    await producer.start()
    await producer.client.force_metadata_update()
    await driver.ready()
    started, cpu0 = time.perf_counter(), cpu_now()
    futures = [await producer.send(spec["topic"], value, key=key, headers=headers) for key, value, headers in data]
    await asyncio.wait_for(asyncio.gather(*futures), RUN_TIMEOUT)
    seconds, cpu = time.perf_counter() - started, cpu_now() - cpu0
    driver.measured()
    await producer.stop()
    return {"seconds": seconds, "cpu_seconds": cpu, "done": len(futures)}


async def consume_ours(spec: dict[str, Any], driver: Driver) -> dict[str, Any]:
    """ServiceRuntime with one subscriber whose handler upserts one state row."""
    from sqlalchemy import Column, Integer, MetaData, String, Table
    from sqlalchemy.dialects.postgresql import insert

    from contracts.envelope import Envelope
    from services.runtime import host
    from services.runtime.db import create_schema
    from services.runtime.outbox import UnitOfWork

    async def create_tables(engine: Any, _service: str, metadata: MetaData) -> None:
        await create_schema(engine, metadata)  # a bench service has no Alembic history

    host.migrate = create_tables  # type: ignore[assignment]
    metadata = MetaData()
    state = Table("bench_state", metadata, Column("id", String(64), primary_key=True), Column("seq", Integer),
                  Column("grid_id", String(32)))
    runtime = host.ServiceRuntime(RUNTIME_NAME, runtime_settings(spec), metadata, configure_logs=False)
    progress = Progress(spec["n"])

    async def handle(uow: UnitOfWork, envelope: Envelope) -> None:
        key = envelope.subject
        stmt = insert(state).values(id=key, seq=int(key.rsplit("-", 1)[1]), grid_id=envelope.data.grid_id)
        await uow.conn.execute(stmt.on_conflict_do_update(index_elements=[state.c.id], set_={"grid_id": stmt.excluded.grid_id}))
        uow.after_commit(lambda: progress.finished(key))

    consumer = runtime.subscribe(INTAKE_INCIDENTS, {"IncidentReported": handle}, purpose="bench")
    await driver.ready()
    await runtime.start()
    await asyncio.wait_for(progress.done.wait(), RUN_TIMEOUT)
    seconds, cpu = progress.window()
    driver.measured()
    await runtime.stop()
    # Records the runtime processed, by outcome: "duplicate" is a redelivery its claim caught.
    outcomes: dict[str, float] = {}
    for metric in runtime.metrics.consumed.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                outcome = sample.labels["outcome"]
                outcomes[outcome] = outcomes.get(outcome, 0) + sample.value
    return {"seconds": seconds, "cpu_seconds": cpu, "done": len(progress.keys), "keys": progress.keys,
            "group": consumer.name, "redelivered": int(outcomes.get("duplicate", 0))}


RAW_SCHEMA = """
CREATE TABLE IF NOT EXISTS processed_events (consumer text, event_id text, processed_at timestamptz NOT NULL,
                                             PRIMARY KEY (consumer, event_id));
CREATE TABLE IF NOT EXISTS bench_state (id text PRIMARY KEY, seq int, grid_id text);
"""


async def consume_raw(spec: dict[str, Any], driver: Driver) -> dict[str, Any]:
    """Plain aiokafka + asyncpg: claim + upsert per record, offsets committed once per fetched batch."""
    import asyncpg

    group = f"{spec['prefix']}raw-consume"
    pool = await asyncpg.create_pool(spec["database_url"].replace("postgresql+asyncpg", "postgresql"), min_size=2, max_size=4)
    async with pool.acquire() as conn:
        await conn.execute(RAW_SCHEMA)
    consumer = AIOKafkaConsumer(spec["topic"], bootstrap_servers=spec["bootstrap"], group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    progress = Progress(spec["n"])
    await driver.ready()

    redelivered = 0

    async def consume() -> None:
        nonlocal redelivered
        while not progress.done.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
            for batch in batches.values():
                for record in batch:
                    key = record.key.decode()
                    event_id = dict(record.headers)[HEADER_ID].decode()
                    grid_id = json.loads(record.value)["data"]["grid_id"]
                    async with pool.acquire() as conn, conn.transaction():
                        claimed = await conn.execute(
                            "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, now()) "
                            "ON CONFLICT DO NOTHING", group, event_id,
                        )
                        if claimed.endswith(" 1"):
                            await conn.execute(
                                "INSERT INTO bench_state (id, seq, grid_id) VALUES ($1, $2, $3) "
                                "ON CONFLICT (id) DO UPDATE SET grid_id = excluded.grid_id",
                                key, int(key.rsplit("-", 1)[1]), grid_id,
                            )
                    if claimed.endswith(" 1"):
                        progress.finished(key)
                    else:
                        redelivered += 1
            if batches:
                await consumer.commit()

    await asyncio.wait_for(consume(), RUN_TIMEOUT)
    seconds, cpu = progress.window()
    driver.measured()
    await consumer.stop()
    await pool.close()
    return {"seconds": seconds, "cpu_seconds": cpu, "done": len(progress.keys), "keys": progress.keys, "group": group,
            "redelivered": redelivered}


WORKERS = {("ours", "produce"): produce_ours, ("raw", "produce"): produce_raw,
           ("ours", "consume"): consume_ours, ("raw", "consume"): consume_raw}


class Driver:
    """The worker's side of the protocol: 'ready' (setup done), wait for 'go', 'measured', then one JSON line.

    With BENCH_CPROFILE_DIR set, the measured part runs under cProfile and its stats are written
    there (<path>_<side>.pstats): slower, but it shows where the time goes.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.protocol = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)  # anything else written to stdout goes to the log, not into the protocol
        self.counters = Counters()
        self.counters.install()
        self._profiler: Any = None

    async def ready(self) -> None:
        """Setup is done: say so, wait for the go, then start counting."""
        self.protocol.write("ready\n")
        line = await asyncio.to_thread(sys.stdin.readline)
        if line.strip() != "go":
            raise SystemExit("no go")
        self.counters.sends = self.counters.commits = self.counters.max_in_flight = 0
        if os.environ.get("BENCH_CPROFILE_DIR"):
            import cProfile

            self._profiler = cProfile.Profile()
            self._profiler.enable()

    def measured(self) -> None:
        """The measured part is over (the driver takes its CPU snapshot now, before cleanup)."""
        if self._profiler is not None:
            self._profiler.disable()
            directory = Path(os.environ["BENCH_CPROFILE_DIR"])
            directory.mkdir(parents=True, exist_ok=True)
            self._profiler.dump_stats(directory / f"{self.spec['path']}_{self.spec['side']}.pstats")
        self.protocol.write("measured\n")

    def result(self, outcome: dict[str, Any]) -> None:
        """The last line: the outcome with the client counters."""
        c = self.counters
        self.protocol.write(json.dumps({**outcome, "sends": c.sends, "max_in_flight": c.max_in_flight,
                                        "commits": c.commits}) + "\n")


def worker_main(spec: dict[str, Any]) -> int:
    """Run one side: set up, 'ready', wait for 'go', measure, 'measured', clean up, print the outcome."""
    driver = Driver(spec)
    driver.result(asyncio.run(WORKERS[(spec["side"], spec["path"])](spec, driver)))
    return 0


# --- the driver ---------------------------------------------------------------------------------


@dataclass
class PathRun:
    """One measured run of one side."""

    side: str
    path: str
    n: int
    seconds: float
    cpu_seconds: float
    checks: dict[str, int]
    cpu_per_process: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Records per second (consume: n - 1 intervals between the first and the last record)."""
        done = self.n - 1 if self.path == "consume" else self.n
        return done / self.seconds if self.seconds > 0 else 0.0


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def produce_records(bootstrap: str, topic: str, data: list[tuple[str, bytes, dict[str, str]]]) -> None:
    """Put the consume run's records in its topic before the consumer starts."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key.encode(), headers=[(k, v.encode()) for k, v in h.items()])
                   for key, value, h in data]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, timeout: float = 60) -> list[Arrival]:
    """Every record of the topic, from the beginning to its current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - the first metadata fetch is lazy
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[Arrival] = []
        deadline = time.monotonic() + timeout

        async def behind() -> bool:
            return any([await consumer.position(tp) < end for tp, end in ends.items()])

        while await behind() and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200, max_records=5_000)).values():
                for record in batch:
                    key = record.key.decode() if record.key else f"<no key {record.partition}:{record.offset}>"
                    event_id = dict(record.headers).get(HEADER_ID, f"{record.partition}:{record.offset}".encode())
                    found.append(Arrival(key, key, event_id.decode() if isinstance(event_id, bytes) else event_id, 0.0))
        return found
    finally:
        await consumer.stop()


async def uncommitted(bootstrap: str, topic: str, group: str) -> int:
    """Records of the topic beyond the group's committed offsets (redelivered after a restart)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        await consumer._client.force_metadata_update()  # noqa: SLF001
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(partitions)
        return sum(end - max(committed[tp].offset, 0) if tp in committed else end for tp, end in ends.items())
    finally:
        await consumer.stop()
        await admin.close()


async def measure_one(infra: Infrastructure, side: str, path: str, pair: int, n: int, log_dir: Path) -> PathRun:
    """One run of one side in its own worker process; the sequence check of what it did."""
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench{run_id}.{path}.{side}{pair}."
    topic = prefix + INTAKE_INCIDENTS.name
    tag = f"{path}{pair}{side}-{run_id}"
    await create_topic(infra.bootstrap, topic, INTAKE_INCIDENTS.partitions)
    database_url = await asyncio.to_thread(infra.create_database)
    if path == "consume":
        await produce_records(infra.bootstrap, topic, records(tag, n))
    spec = {"side": side, "path": path, "bootstrap": infra.bootstrap, "database_url": database_url, "topic": topic,
            "prefix": prefix, "tag": tag, "n": n}
    log = open(log_dir / f"runtime_paths_{path}_{side}_{pair}.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "bench.runtime_paths", "worker", json.dumps(spec)], cwd=REPO_ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
    meter = CpuMeter(infra, lambda: {f"{side} worker": proc.pid}, {database_url.rsplit("/", 1)[-1]: f"{side} worker"})
    try:
        async def line(timeout: float) -> str:
            try:
                return (await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout)).strip()
            except TimeoutError:
                return ""

        if await line(READY_TIMEOUT) != "ready":
            raise RuntimeError(f"{path} {side} worker did not get ready (see {log.name})")
        before = meter.snapshot()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        if await line(RUN_TIMEOUT + 60) != "measured":
            raise RuntimeError(f"{path} {side} worker did not finish (see {log.name})")
        cpu = CpuMeter.delta(before, meter.snapshot())
        answer = await line(60)
        if not answer:
            raise RuntimeError(f"{path} {side} worker gave no result (see {log.name})")
        outcome = json.loads(answer)
        await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    keys = [f"{tag}-{i:07d}" for i in range(n)]
    seq_of = seq_of_keys(keys, tag)
    if path == "produce":
        arrivals = await read_topic(infra.bootstrap, topic)
        checks = arrival_checks(arrivals, seq_of, ArrivalLedger())
        checks["max_in_flight"] = outcome["max_in_flight"]
    else:
        arrivals = [Arrival(k, k, f"{k}#{i}", 0.0) for i, k in enumerate(outcome["keys"])]
        checks = arrival_checks(arrivals, seq_of, ArrivalLedger())
        checks["commits_per_1000"] = round(outcome["commits"] * 1000 / max(outcome["done"], 1), 1)
        checks["uncommitted"] = await uncommitted(infra.bootstrap, topic, outcome["group"])
        # Records handed to the consumer again after it had processed them (its claim made them no-ops).
        checks["redelivered"] = outcome.get("redelivered", 0)
    run = PathRun(side, path, n, outcome["seconds"], outcome["cpu_seconds"], checks, cpu)
    print(f"[bench] {path} {side} run {pair + 1}: {run.rate:,.0f}/s in {run.seconds:.2f} s, cpu {run.cpu_seconds:.2f} s, "
          f"{checks}", flush=True)
    return run


def summarise(path: str, side: str, runs: list[PathRun], infra: Infrastructure, note: str, goal: str) -> Result:
    """One row per side: median rate of its runs, their spread, summed checks and CPU."""
    rates = [r.rate for r in runs]
    checks: dict[str, Any] = {k: sum(r.checks[k] for r in runs) for k in ("gaps", "duplicates", "duplicate_records", "unexpected")}
    if path == "produce":
        checks["max_in_flight"] = min(r.checks["max_in_flight"] for r in runs)
    else:
        checks["commits_per_1000"] = max(r.checks["commits_per_1000"] for r in runs)
        checks["uncommitted"] = sum(r.checks["uncommitted"] for r in runs)
        checks["redelivered"] = sum(r.checks["redelivered"] for r in runs)
    checks["pairs"] = len(runs)
    cpu: dict[str, float] = {}
    for r in runs:
        add_cpu(cpu, r.cpu_per_process)
    n = sum(r.n for r in runs)
    cpu_seconds = sum(r.cpu_seconds for r in runs)
    return Result(
        bench=BENCH, variant=f"{path} {side}", n=n, seconds=round(sum(r.seconds for r in runs), 2),
        rate=round(statistics.median(rates), 1), unit="records/s", cpu_seconds=round(cpu_seconds, 2),
        versions=versions(kafka=infra.kafka_version, postgresql=infra.postgres_version), checks=checks,
        cpu_per_process=cpu, goal=goal,
        note=f"rate per run {spread(rates)}/s; {cpu_seconds * 1e6 / n:,.0f} µs CPU per record (the {side} process). {note}".strip(),
    )


async def _run(infra: Infrastructure, profile: Profile, log_dir: Path) -> list[Result]:
    results: list[Result] = []
    failures: list[str] = []
    descriptions = {
        ("produce", "ours"): "OutboxRelay.run draining committed outbox rows (select, publish via FastStream, mark published)",
        ("produce", "raw"): "AIOKafkaProducer, acks=all, idempotent: all sends, then all acknowledgements",
        ("consume", "ours"): "ServiceRuntime.subscribe: decode, claim + upsert in one transaction, bulk offset commits",
        ("consume", "raw"): "AIOKafkaConsumer + asyncpg: claim + upsert per record, commit per fetched batch",
    }
    for path, n in (("produce", profile.produce), ("consume", profile.consume)):
        runs: dict[str, list[PathRun]] = {"ours": [], "raw": []}
        for pair in range(profile.pairs):
            for side in ("ours", "raw"):
                run = await measure_one(infra, side, path, pair, n, log_dir)
                if sequence_failures(run.checks):
                    failures.append(f"{path} {side} run {pair + 1}: {run.checks}")
                runs[side].append(run)
        base = summarise(path, "raw-aiokafka", runs["raw"], infra, descriptions[(path, "raw")], BASELINE)
        ours = summarise(path, "ours", runs["ours"], infra, descriptions[(path, "ours")] + "; ratio = ours / raw rate",
                         GOAL_PRODUCE if path == "produce" else GOAL_CONSUME)
        if base.rate:
            ours.ratio = round((ours.rate or 0.0) / base.rate, 3)
        results += [base, ours]
        print(f"[bench] {path}: ours {ours.rate:,.0f}/s, raw {base.rate:,.0f}/s, ratio {ours.ratio}", flush=True)
    if failures:
        raise CorrectnessError(failures, results)
    return results


def run(infra: Infrastructure, profile: str) -> list[Result]:
    """Run the produce and consume path figures with the named profile."""
    log_dir = RESULTS_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_run(infra, PROFILES[profile], log_dir))


def main(argv: list[str] | None = None) -> int:
    """`worker SPEC` (used by the driver); the driver itself runs through `python -m bench --only runtime_paths`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="one measured side (driven over stdin/stdout)")
    worker.add_argument("spec")
    args = parser.parse_args(argv)
    return worker_main(json.loads(args.spec))


if __name__ == "__main__":
    sys.exit(main())
