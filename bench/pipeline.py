"""The pipeline against raw aiokafka in the same run: one service hop, the full report → deadline-armed
path at fixed rates, and a step load for the sustained maximum.

Ours: intake, classification, routing and sla_timer as OS processes (default settings, each with
its own PostgreSQL database) under a fresh topic prefix. Baseline: `bench.raw_chain` processes
doing the same per-hop work with plain aiokafka + asyncpg (one hop; four hops). Each figure is
taken in interleaved pairs (ours, raw, ours, raw, ...) so drift on the machine hits both sides.
Every message carries a sequence number (in its incident id, or the intake answer's id mapped
back to it); a run with a gap, a duplicate or an unknown number does not count and fails the
benchmark. Latency is open loop: messages are due at a fixed rate and measured from when they
were due, not from when the sender got round to them. The first `warmup` messages are discarded.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.harness import (
    RESULTS_DIR,
    Infrastructure,
    Result,
    intended_send_times,
    percentiles,
    process_cpu_seconds,
    sequence_check,
    sequence_failures,
    spread,
    versions,
)
from contracts.envelope import HEADER_ID, HEADER_TYPE, Envelope, correlation_for, make_envelope
from contracts.events import IncidentReported, Location
from contracts.reference import demo_city
from contracts.topics import CLASSIFICATION_DECISIONS, INTAKE_INCIDENTS, SLA_DEADLINES
from infra.local import REPO_ROOT, ServiceProcess, create_topics, free_port

BENCH = "pipeline"
SERVICES = ("intake", "classification", "routing", "sla_timer")
GRID = demo_city().grids[0]


@dataclass(frozen=True)
class Profile:
    """Sizes of one run."""

    pairs: int  # interleaved (ours, raw) repetitions of each latency figure
    seconds: float  # length of one fixed-rate run
    warmup: int  # messages discarded at the start of each run
    rates: tuple[float, ...]  # full-pipeline fixed rates, incidents/s
    hop_rate: float  # one-hop fixed rate, messages/s
    steps: tuple[float, ...]  # step load, incidents/s; stops at the first step that does not keep up
    step_seconds: float
    metrics_rate: float  # metrics on/off: fixed rate of the throughput runs, incidents/s
    metrics_count: int  # reports per throughput run


PROFILES = {
    "short": Profile(pairs=3, seconds=10, warmup=50, rates=(14, 50), hop_rate=50, steps=(100, 200, 400, 600),
                     step_seconds=8, metrics_rate=200, metrics_count=1_600),
    "long": Profile(pairs=5, seconds=30, warmup=200, rates=(14, 50), hop_rate=50,
                    steps=(100, 200, 300, 400, 500, 600, 800), step_seconds=20, metrics_rate=300, metrics_count=6_000),
}
# A step keeps up when everything sent arrives within this long after its due time.
STEP_MAX_LAG_SECONDS = 2.0


# --- observing an output topic ------------------------------------------------------------------


@dataclass
class Watcher:
    """Reads one topic from its current end; first arrival per key (monotonic seconds) and record copies."""

    bootstrap: str
    topic: str
    event_type: str | None = None
    first_seen: dict[str, float] = field(default_factory=dict)
    copies: dict[str, int] = field(default_factory=dict)  # event id -> records seen
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task | None = None

    async def start(self) -> Watcher:
        """Subscribe to every partition at its end, then read in the background."""
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self._consumer.start()
        await self._consumer._client.force_metadata_update()  # noqa: SLF001 - the first metadata fetch is lazy
        partitions = [TopicPartition(self.topic, p) for p in self._consumer.partitions_for_topic(self.topic) or ()]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for partition in partitions:
            await self._consumer.position(partition)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=50)
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    headers = {k: v.decode() for k, v in record.headers}
                    if self.event_type and headers.get(HEADER_TYPE) != self.event_type:
                        continue
                    event_id = headers.get(HEADER_ID, f"{record.partition}:{record.offset}")
                    self.copies[event_id] = self.copies.get(event_id, 0) + 1
                    self.first_seen.setdefault(record.key.decode(), now)

    async def wait_for(self, keys: list[str], timeout: float) -> None:
        """Until every key has arrived or `timeout` seconds passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(k not in self.first_seen for k in keys):
            await asyncio.sleep(0.05)

    def duplicate_records(self) -> int:
        """Copies of one event beyond the first (a duplicate publish)."""
        return sum(c - 1 for c in self.copies.values() if c > 1)

    async def stop(self) -> None:
        """Stop reading."""
        if self._task:
            self._task.cancel()
        if self._consumer:
            await self._consumer.stop()


# --- what is measured -------------------------------------------------------------------------


def report_envelope(incident_id: str) -> Envelope:
    """An IncidentReported as intake would publish it, for the one-hop figure."""
    now = datetime.now(UTC)
    event = IncidentReported(
        incident_id=incident_id, grid_id=GRID.id, reporter_id=GRID.grid_worker_ids[0],
        description="楼下有人打架，有人流血，请民警快来", location=Location(latitude=GRID.latitude, longitude=GRID.longitude),
        reported_at=now,
    )
    return make_envelope(event, source="bench", subject=incident_id, occurred_at=now, correlation_id=correlation_for(incident_id))


def encoded_report(incident_id: str) -> bytes:
    """The record value of `report_envelope`."""
    return report_envelope(incident_id).encode()


@dataclass
class Sample:
    """One fixed-rate run's outcome."""

    latencies_ms: list[float]
    checks: dict[str, int]
    seconds: float
    cpu_seconds: float
    sent: int
    span_seconds: float = 0.0  # first due time → last arrival


async def open_loop(rate: float, count: int, send: Callable[[int], Awaitable[str]]) -> tuple[list[float], list[str | None]]:
    """Start send(i) at each due time (never waiting for earlier sends); the due times and each send's key."""
    start = time.monotonic() + 0.2
    due = intended_send_times(start, rate, count)
    keys: list[str | None] = [None] * count

    async def one(i: int) -> None:
        try:
            keys[i] = await send(i)
        except Exception as error:  # a failed send is a gap; say why once
            print(f"[bench] send {i} failed: {error!r}", flush=True)

    tasks = []
    for i, at in enumerate(due):
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return due, keys


async def measure(rate: float, count: int, warmup: int, send: Callable[[int], Awaitable[str]], watcher: Watcher,
                  pids: list[int], wait: float = 120.0) -> Sample:
    """One fixed-rate run: send, wait for every key, and check the sequence."""
    cpu_before = sum(process_cpu_seconds(p) for p in pids)
    started = time.monotonic()
    copies_before = watcher.duplicate_records()
    due, keys = await open_loop(rate, count, send)
    sent_keys = [k for k in keys if k is not None]
    await watcher.wait_for(sent_keys, wait)
    seconds = time.monotonic() - started
    seq_of = {k: i for i, k in enumerate(keys) if k is not None}
    received = [seq_of[k] for k in sent_keys if k in watcher.first_seen]
    checks = sequence_check(received, count)
    if checks["gaps"]:
        missing = [i for i, k in enumerate(keys) if k is None or k not in watcher.first_seen]
        print(f"[bench] {watcher.topic}: {len(missing)} never arrived within {wait:g} s, first {missing[:10]}", flush=True)
    checks["duplicate_records"] = watcher.duplicate_records() - copies_before
    latencies = [(watcher.first_seen[k] - due[i]) * 1000 for i, k in enumerate(keys)
                 if i >= warmup and k is not None and k in watcher.first_seen]
    cpu = sum(process_cpu_seconds(p) for p in pids) - cpu_before
    arrivals = [watcher.first_seen[k] for k in sent_keys if k in watcher.first_seen]
    return Sample(latencies, checks, seconds, cpu, count, (max(arrivals) - due[0]) if arrivals else 0.0)


# --- the two systems ----------------------------------------------------------------------------


def service_process(name: str, bootstrap: str, prefix: str, database_url: str, log_dir: Path, **settings: str) -> ServiceProcess:
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
    return ServiceProcess(name, env, port, log_dir / f"{name}.log", cwd=REPO_ROOT)


@dataclass
class RawChain:
    """A `bench.raw_chain` process over its own topics."""

    topics: list[str]
    proc: subprocess.Popen

    @classmethod
    async def start(cls, infra: Infrastructure, prefix: str, hops: int, log_dir: Path) -> RawChain:
        """Create the topics (6 partitions, like ours), start the process, wait for 'ready'."""
        topics = [f"{prefix}raw{hops}.t{i}" for i in range(hops + 1)]
        admin = AIOKafkaAdminClient(bootstrap_servers=infra.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t, num_partitions=6, replication_factor=1) for t in topics])
        finally:
            await admin.close()
        log = open(log_dir / f"raw_chain_{hops}.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.raw_chain", "--bootstrap", infra.bootstrap, "--database-url",
             infra.create_database(), "--topics", *topics],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
        )
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=90)
        if line.strip() != "ready":
            raise RuntimeError(f"raw chain did not start (see {log.name})")
        return cls(topics, proc)

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@dataclass
class Run:
    """Everything one benchmark run shares."""

    infra: Infrastructure
    profile: Profile
    prefix: str
    services: dict[str, ServiceProcess]
    producer: AIOKafkaProducer
    http: httpx.AsyncClient
    raw_hop: RawChain
    raw_chain: RawChain
    results: list[Result] = field(default_factory=list)

    def pids(self, names: tuple[str, ...]) -> list[int]:
        return [self.services[n].pid for n in names if self.services[n].pid]

    def kafka_sender(self, topic: str, tag: str, payload: Callable[[str], bytes]) -> Callable[[int], Awaitable[str]]:
        """send(i): produce message i keyed by its incident id `<tag>-<i>`; returns the key once acknowledged."""

        async def send(i: int) -> str:
            key = f"{tag}-{i:07d}"
            await (await self.producer.send(topic, payload(key), key=key.encode()))
            return key

        return send

    async def report(self, i: int) -> str:
        """POST one report to intake; the incident id it answers with."""
        body = {
            "grid_id": GRID.id, "reporter_id": GRID.grid_worker_ids[0],
            "description": f"楼下有人打架，有人流血，请民警快来 #{i}",
            "location": {"latitude": GRID.latitude, "longitude": GRID.longitude},
        }
        response = await self.http.post(f"{self.services['intake'].url}/api/v1/incidents", json=body,
                                        headers={"Idempotency-Key": str(uuid.uuid4())})
        response.raise_for_status()
        return response.json()["incident_id"]

    def add(self, variant: str, rate: float, samples: list[Sample], note: str = "") -> Result:
        """One row per side: pooled latencies of all pairs; the spread of p99 across pairs in the note."""
        for sample in samples:
            failed = sequence_failures(sample.checks) or (["duplicate_records"] if sample.checks["duplicate_records"] else [])
            if failed:
                raise AssertionError(f"{variant}: sequence check failed: {sample.checks}")
        pooled = [x for s in samples for x in s.latencies_ms]
        p99s = [percentiles(s.latencies_ms)["p99"] or 0.0 for s in samples]
        checks = {k: sum(s.checks[k] for s in samples) for k in samples[0].checks}
        result = Result(
            bench=BENCH, variant=variant, n=sum(s.sent for s in samples), seconds=round(sum(s.seconds for s in samples), 2),
            rate=rate, **percentiles(pooled), cpu_seconds=round(sum(s.cpu_seconds for s in samples), 2),
            versions=versions(kafka=self.infra.kafka_version, postgresql=self.infra.postgres_version),
            checks={**checks, "pairs": len(samples)}, note=f"p99 per run {spread(p99s)} ms. {note}".strip(),
        )
        self.results.append(result)
        return result

    async def paired(self, name: str, rate: float, ours: Callable[[int], Awaitable[Sample]],
                     raw: Callable[[int], Awaitable[Sample]], note: str = "") -> None:
        """Interleave ours and raw `pairs` times; two rows, ours with ratio = our p99 / raw p99."""
        mine, theirs = [], []
        for pair in range(self.profile.pairs):
            mine.append(await ours(pair))
            theirs.append(await raw(pair))
        base = self.add(f"{name} raw-aiokafka", rate, theirs)
        row = self.add(f"{name} ours", rate, mine, note)
        if base.p99 and row.p99:
            row.ratio = round(row.p99 / base.p99, 2)
        print(f"[bench] {name}: ours p99 {row.p99} ms, raw p99 {base.p99} ms", flush=True)

    async def prime(self, send: Callable[[int], Awaitable[str]], watcher: Watcher, timeout: float = 90) -> None:
        """Until one message gets through: a consumer group that has just joined may start at the end
        of its partitions, so messages sent before it was assigned are never read (not the system's loss)."""
        deadline = time.monotonic() + timeout
        for i in range(10**6):
            key = await send(i)
            await watcher.wait_for([key], 3)
            if key in watcher.first_seen:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing arrives on {watcher.topic}")

    # --- figures ----------------------------------------------------------------------------

    async def one_hop(self) -> None:
        """Classification alone (IncidentReported → IncidentClassified) vs one raw hop."""
        p = self.profile
        count = int(p.hop_rate * p.seconds)
        watch_ours = await Watcher(self.infra.bootstrap, self.prefix + CLASSIFICATION_DECISIONS.name, "IncidentClassified").start()
        watch_raw = await Watcher(self.infra.bootstrap, self.raw_hop.topics[-1]).start()
        try:
            await self.prime(self.kafka_sender(self.prefix + INTAKE_INCIDENTS.name, "prime", encoded_report), watch_ours)
            await self.prime(self.kafka_sender(self.raw_hop.topics[0], "prime", encoded_report), watch_raw)

            def ours(pair: int) -> Awaitable[Sample]:
                send = self.kafka_sender(self.prefix + INTAKE_INCIDENTS.name, f"hop{pair}-{uuid.uuid4().hex[:6]}",
                                         encoded_report)
                return measure(p.hop_rate, count, p.warmup, send, watch_ours, self.pids(("classification",)))

            def raw(pair: int) -> Awaitable[Sample]:
                send = self.kafka_sender(self.raw_hop.topics[0], f"raw{pair}-{uuid.uuid4().hex[:6]}",
                                         encoded_report)
                return measure(p.hop_rate, count, p.warmup, send, watch_raw, [self.raw_hop.proc.pid])

            await self.paired("one hop", p.hop_rate, ours, raw,
                              "ours = classification (validate, classify, state + outbox, relay publish).")
        finally:
            await watch_ours.stop()
            await watch_raw.stop()

    async def full(self) -> None:
        """Report over HTTP → DeadlineArmed, at each fixed rate; raw = four hops from a Kafka produce."""
        p = self.profile
        watch_ours = await Watcher(self.infra.bootstrap, self.prefix + SLA_DEADLINES.name, "DeadlineArmed").start()
        watch_raw = await Watcher(self.infra.bootstrap, self.raw_chain.topics[-1]).start()
        try:
            await self.prime(self.report, watch_ours)
            await self.prime(self.kafka_sender(self.raw_chain.topics[0], "prime", encoded_report), watch_raw)
            for rate in p.rates:
                count = int(rate * p.seconds)
                warmup = min(p.warmup, count // 5)

                def ours(pair: int, rate: float = rate, count: int = count, warmup: int = warmup) -> Awaitable[Sample]:
                    return measure(rate, count, warmup, self.report, watch_ours, self.pids(SERVICES))

                def raw(pair: int, rate: float = rate, count: int = count, warmup: int = warmup) -> Awaitable[Sample]:
                    send = self.kafka_sender(self.raw_chain.topics[0], f"chain{pair}-{uuid.uuid4().hex[:6]}",
                                             encoded_report)
                    return measure(rate, count, warmup, send, watch_raw, [self.raw_chain.proc.pid])

                await self.paired(f"full pipeline @{rate:g}/s", rate, ours, raw,
                                  "ours starts at the HTTP POST to intake; raw at a Kafka produce.")
            await self.step_load(watch_ours, watch_raw)
        finally:
            await watch_ours.stop()
            await watch_raw.stop()

    async def step_load(self, watch_ours: Watcher, watch_raw: Watcher) -> None:
        """Raise the fixed rate step by step; the highest rate whose every message arrived within
        STEP_MAX_LAG_SECONDS of its due time is the sustained maximum (ratio = ours / raw)."""
        p = self.profile
        best: dict[str, float] = {}
        for side in ("ours", "raw"):
            for rate in p.steps:
                count = int(rate * p.step_seconds)
                if side == "ours":
                    sample = await measure(rate, count, 0, self.report, watch_ours, self.pids(SERVICES), wait=STEP_MAX_LAG_SECONDS * 5)
                else:
                    send = self.kafka_sender(self.raw_chain.topics[0], f"step-{uuid.uuid4().hex[:6]}",
                                             encoded_report)
                    sample = await measure(rate, count, 0, send, watch_raw, [self.raw_chain.proc.pid],
                                           wait=STEP_MAX_LAG_SECONDS * 5)
                lat = percentiles(sample.latencies_ms)
                kept_up = not sample.checks["gaps"] and (lat["max"] or 0) <= STEP_MAX_LAG_SECONDS * 1000
                print(f"[bench] step {side} {rate:g}/s: kept up={kept_up} p99={lat['p99']} max={lat['max']} "
                      f"gaps={sample.checks['gaps']} cpu={sample.cpu_seconds:.1f}s", flush=True)
                self.results.append(Result(
                    bench=BENCH, variant=f"step {side} @{rate:g}/s", n=count, seconds=round(sample.seconds, 2), rate=rate,
                    **lat, cpu_seconds=round(sample.cpu_seconds, 2), checks={**sample.checks, "kept_up": kept_up},
                    versions=versions(kafka=self.infra.kafka_version, postgresql=self.infra.postgres_version),
                ))
                if not kept_up:
                    break
                best[side] = rate
        ours, raw = best.get("ours", 0.0), best.get("raw", 0.0)
        self.results.append(Result(
            bench=BENCH, variant="sustained maximum ours", n=0, seconds=0.0, rate=ours, unit="incidents/s",
            ratio=round(ours / raw, 2) if raw else None,
            note=f"raw sustained {raw:g}/s; highest step with every message within {STEP_MAX_LAG_SECONDS:g} s "
                 f"of its due time (steps {', '.join(f'{s:g}' for s in p.steps)}); a lower bound: the steps are coarse.",
        ))


async def metrics_overhead(run: Run) -> None:
    """Throughput with instrumentation on vs off: the services restarted with GW_<SVC>_METRICS_ENABLED,
    interleaved on/off `pairs` times; throughput = reports / (first due → last DeadlineArmed)."""
    p = run.profile
    watcher = await Watcher(run.infra.bootstrap, run.prefix + SLA_DEADLINES.name, "DeadlineArmed").start()
    rates: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, float] = {True: 0.0, False: 0.0}
    try:
        for _ in range(p.pairs):
            for enabled in (True, False):
                for name, proc in run.services.items():
                    proc.terminate()
                    proc.env[f"GW_{name.upper()}_METRICS_ENABLED"] = str(enabled).lower()
                    proc.start()
                for proc in run.services.values():
                    await asyncio.to_thread(proc.wait_healthy, 120)
                await run.prime(run.report, watcher)
                sample = await measure(p.metrics_rate, p.metrics_count, 0, run.report, watcher, run.pids(SERVICES))
                if sequence_failures(sample.checks) or sample.checks["duplicate_records"]:
                    raise AssertionError(f"metrics {enabled}: sequence check failed: {sample.checks}")
                rates[enabled].append(p.metrics_count / sample.span_seconds)
                cpu[enabled] += sample.cpu_seconds
                print(f"[bench] metrics {'on' if enabled else 'off'}: {rates[enabled][-1]:.1f}/s, cpu {sample.cpu_seconds:.1f}s",
                      flush=True)
    finally:
        await watcher.stop()
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    for enabled, value in ((True, on), (False, off)):
        run.results.append(Result(
            bench=BENCH, variant=f"metrics {'on' if enabled else 'off'} throughput", n=p.metrics_count * p.pairs,
            seconds=0.0, rate=round(value, 1), unit="incidents/s", cpu_seconds=round(cpu[enabled], 2),
            ratio=round(on / off, 3) if enabled else None, checks={"pairs": p.pairs},
            versions=versions(kafka=run.infra.kafka_version, postgresql=run.infra.postgres_version),
            note=f"offered {p.metrics_rate:g}/s; median of runs, spread {spread(rates[enabled])}/s"
                 + ("; ratio = on / off (goal ≥ 0.97)" if enabled else ""),
        ))


async def _run(infra: Infrastructure, profile: Profile, log_dir: Path) -> list[Result]:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    await create_topics(infra.bootstrap, prefix=prefix)
    services = {name: service_process(name, infra.bootstrap, prefix, infra.create_database(), log_dir) for name in SERVICES}
    raw_hop = raw_chain = None
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all", enable_idempotence=True, linger_ms=1)
    try:
        for proc in services.values():
            proc.start()
        for proc in services.values():
            await asyncio.to_thread(proc.wait_healthy, 120)
        raw_hop = await RawChain.start(infra, prefix, 1, log_dir)
        raw_chain = await RawChain.start(infra, prefix, 4, log_dir)
        await producer.start()
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            run = Run(infra, profile, prefix, services, producer, http, raw_hop, raw_chain)
            await run.one_hop()
            await run.full()
            await metrics_overhead(run)
            return run.results
    finally:
        await producer.stop()
        for chain in (raw_hop, raw_chain):
            if chain:
                chain.stop()
        for proc in services.values():
            proc.terminate()


def run(infra: Infrastructure, profile: str) -> list[Result]:
    """Run the pipeline benchmark with the named profile."""
    log_dir = RESULTS_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_run(infra, PROFILES[profile], log_dir))
