"""The service host: wires engine, broker, outbox relay, consumers and the HTTP app of one service.

Each service's `create_app(settings)` builds a ServiceRuntime, registers its subscribers and
routes on it, and returns `runtime.http_app(...)`. Nothing connects before the app's lifespan
starts, so tests can swap the broker for FastStream's in-memory TestKafkaBroker first.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import OutOfOrderSequenceNumber, ProducerFenced
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from faststream._internal.parser import DefaultCodec
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.middlewares import AckPolicy
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import MetaData

from contracts.reference import load_reference_data
from contracts.topics import TopicSpec
from services.runtime.access import Areas
from services.runtime.audit import AuditMiddleware, AuditTrail, add_audit_table
from services.runtime.auth import AccessError, Authenticator, access_error_response, check_access_settings, codec_for
from services.runtime.clock import Clock, SystemClock
from services.runtime.consumer import BatchHandler, EventConsumer, Handler, record_from_kafka
from services.runtime.db import add_runtime_tables, create_engine, ping
from services.runtime.health import ConsumerHealthMonitor, measure_event_loop_lag
from services.runtime.http import (
    DATABASE_BUSY,
    DATABASE_UNREACHABLE,
    LimitRequestBody,
    ShedLoad,
    database_trouble_handler,
)
from services.runtime.kafka_security import kafka_security
from services.runtime.logs import bind_event_context, clear_event_context, configure_logging, get_logger
from services.runtime.metrics import RuntimeMetrics
from services.runtime.migrations import migrate
from services.runtime.offsets import OffsetCommitter
from services.runtime.outbox import OutboxRelay, UnitOfWork
from services.runtime.settings import ServiceSettings

log = get_logger(__name__)

BackgroundTask = Callable[[], Awaitable[None]]


class ServiceRuntime:
    """Everything one service process shares between its handlers, routes and background tasks."""

    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        metadata: MetaData,
        clock: Clock | None = None,
        *,
        configure_logs: bool = True,
    ) -> None:
        self.name = name
        self.settings = settings
        # Before anything else: a service never runs on the development token secret by accident.
        check_access_settings(settings)
        self.clock: Clock = clock or SystemClock()
        self.metadata = metadata
        if configure_logs:
            configure_logging(name, settings.log_level, settings.log_json)
        self.tables = add_runtime_tables(metadata)
        self.engine = create_engine(settings.database_url)
        self.audit = AuditTrail(self.engine, add_audit_table(metadata), self.clock)
        self.auth = Authenticator(codec_for(settings, self.clock))
        self._areas: Areas | None = None
        self.metrics = RuntimeMetrics(name)
        middlewares = []
        if settings.metrics_enabled:
            middlewares.append(
                KafkaPrometheusMiddleware(registry=self.metrics.registry, app_name=f"gridwhistle-{name}")
            )
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            client_id=f"gridwhistle-{name}",
            security=kafka_security(settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=1,
            # Topics come from the catalogue (infra/topics.yaml) with their partition counts and
            # retention; a client auto-creating one would get a single-partition default.
            allow_auto_create_topics=False,
            graceful_timeout=10.0,
            middlewares=middlewares,
            # FastStream's own logger prints coloured text; route it through our JSON handler, and
            # keep its per-message "received/processed" lines at DEBUG so they don't drown the logs.
            logger=logging.getLogger(f"gridwhistle.{name}.broker"),
            log_level=logging.DEBUG,
        )
        self.relay = OutboxRelay(
            self.engine,
            self.tables[0],
            self._publish,
            self.clock,
            self.metrics,
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
            lock_name=f"gridwhistle-outbox-{name}",
        )
        self.consumers: list[EventConsumer] = []
        self.health = ConsumerHealthMonitor(
            self.metrics,
            stall_seconds=settings.consumer_stall_seconds,
            interval_seconds=settings.health_sample_seconds,
        )
        self._committers: list[OffsetCommitter] = []
        self._producer_lock = asyncio.Lock()
        self._renewals: set[asyncio.Task[None]] = set()
        self._background: list[tuple[str, BackgroundTask]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False

    @property
    def areas(self) -> Areas:
        """Where grids and units lie, for access checks (the service's reference data, loaded once)."""
        if self._areas is None:
            self._areas = Areas(load_reference_data(self.settings.reference_data))
        return self._areas

    def use_reference(self, areas: Areas) -> None:
        """Share reference data the service already loaded instead of loading it again."""
        self._areas = areas

    def topic(self, spec: TopicSpec) -> str:
        """The concrete topic name (with this deployment's prefix)."""
        return self.settings.topic_prefix + spec.name

    def unit_of_work(self) -> UnitOfWork:
        """A new transaction whose outbox rows wake the relay on commit."""
        return UnitOfWork(
            self.engine,
            self.tables,
            self.clock,
            topic_prefix=self.settings.topic_prefix,
            on_commit=self.relay.notify,
        )

    def subscribe(
        self,
        spec: TopicSpec,
        handlers: Mapping[str, Handler],
        *,
        purpose: str = "main",
        batch_handlers: Mapping[str, BatchHandler] | None = None,
    ) -> EventConsumer:
        """Consume `spec` in this service's own consumer group, committing only after processing."""
        group_id = f"{self.settings.topic_prefix}gridwhistle.{self.name}.{purpose}"
        consumer = EventConsumer(
            name=group_id,
            dead_letter_topic=self.settings.topic_prefix + spec.dead_letter,
            handlers=handlers,
            batch_handlers=batch_handlers,
            unit_of_work=self.unit_of_work,
            publish_dead_letter=self._publish_confirmed,
            metrics=self.metrics,
            max_attempts=self.settings.handler_max_attempts,
            infra_backoff_seconds=self.settings.infra_retry_backoff_seconds,
        )

        # MANUAL: FastStream neither commits before processing (which loses records) nor after
        # each batch; the committer commits what was processed, in bulk. An exception (only
        # infrastructure failures escape EventConsumer) seeks back so the batch is redelivered.
        # A batch is whatever has been fetched, up to the limit: getmany returns at once when
        # records are waiting, so batching costs no latency, only the idle poll interval.
        subscriber = self.broker.subscriber(
            self.topic(spec),
            group_id=group_id,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            batch=True,
            max_records=self.settings.consumer_batch_max_records,
            batch_timeout_ms=self.settings.consumer_poll_ms,
            # EventConsumer decodes and validates the raw records itself; FastStream's own JSON
            # decoding of every body would be thrown away.
            decoder=_left_undecoded,
            title=f"{self.name}:{spec.name}",
        )
        consumer.kafka_consumer = lambda: getattr(subscriber, "consumer", None)
        committer = OffsetCommitter(
            consumer.kafka_consumer,
            consumer.positions,
            every_records=self.settings.commit_every_records,
            interval_seconds=self.settings.commit_interval_seconds,
        )

        @subscriber
        async def on_batch(msg: KafkaMessage) -> None:
            raw = msg.raw_message if isinstance(msg.raw_message, (tuple, list)) else (msg.raw_message,)
            try:
                await consumer.process_batch([record_from_kafka(r) for r in raw])
            except BaseException:
                await msg.nack()
                raise
            await committer.records_done(len(raw))

        self.consumers.append(consumer)
        self._committers.append(committer)
        self.health.watch(consumer, consumer.kafka_consumer)
        return consumer

    def add_background(self, name: str, task: BackgroundTask) -> None:
        """Run `task` for the life of the app (e.g. the deadline scheduler)."""
        self._background.append((name, task))

    async def _publish(self, topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> Any:
        producer = self._live_producer()
        if producer is None:
            # The in-memory test broker (or none connected): its publish is what runs the subscribers.
            return await self.broker.publish(value, topic, key=key, headers=headers)
        # The relay's rows go to aiokafka directly: FastStream's per-message publish chain
        # (middlewares, message building) cost as much CPU as the send itself. The producer is
        # still the broker's own (acks=all, idempotent), so renewing it after a fatal failure holds.
        sent = await self._renewing(producer, producer.send(topic, value, key=key, headers=_kafka_headers(headers)))
        # The relay awaits the broker's acknowledgements later, together, as the bare futures: a
        # wrapping coroutine would cost gather a task per row. They may fail fatally too, so a
        # failed one hands the producer to the renewal check.
        sent.add_done_callback(lambda ack: self._renew_after_failed_ack(producer, ack))
        return sent

    async def _publish_confirmed(self, topic: str, key: bytes | None, value: bytes | None, headers: dict[str, str]) -> Any:
        producer = self._live_producer()
        return await self._renewing(producer, self.broker.publish(value or b"", topic, key=key, headers=headers))

    async def _renewing(self, producer: Any, step: Awaitable[Any]) -> Any:
        """Await a publish or its acknowledgement; if it failed fatally for `producer`, replace that producer."""
        try:
            return await step
        except Exception as exc:
            await self._renew_if_dead(producer, exc)
            raise

    def _renew_after_failed_ack(self, producer: AIOKafkaProducer, ack: asyncio.Future[Any]) -> None:
        if ack.cancelled() or ack.exception() is None:
            return
        renewal = asyncio.get_running_loop().create_task(self._renew_if_dead(producer, ack.exception()))
        self._renewals.add(renewal)
        renewal.add_done_callback(self._renewal_done)

    def _renewal_done(self, renewal: asyncio.Task[None]) -> None:
        self._renewals.discard(renewal)
        if not renewal.cancelled() and renewal.exception() is not None:
            # The relay's next round retries its sends, and a send that fails renews again.
            log.warning("replacing the Kafka producer failed", error=repr(renewal.exception())[:200])

    def _live_producer(self) -> AIOKafkaProducer | None:
        """The broker's connected aiokafka producer; None on the in-memory test broker or before connecting."""
        state = getattr(self.broker.config.producer, "_producer", None)
        producer = getattr(state, "producer", None) if state else None
        return producer if isinstance(producer, AIOKafkaProducer) else None

    async def _renew_if_dead(self, producer: Any, exc: BaseException) -> None:
        """Replace the Kafka producer a publish failed on if that failure is fatal for it.

        An idempotent aiokafka producer that got OutOfOrderSequenceNumber (after a broker outage)
        or was fenced keeps failing every send to that partition, or every send once its sender
        task died, for the life of the process: the outbox would never drain and dead letters never
        be stored. The caller retries as after any publish failure; the fresh producer (a new
        producer id, so new sequences) publishes from the first pending row on; consumers dedupe.
        """
        sender = getattr(getattr(producer, "_sender", None), "sender_task", None)
        dead = sender is not None and sender.done()
        if producer is None or not (dead or isinstance(exc, OutOfOrderSequenceNumber | ProducerFenced)):
            return
        async with self._producer_lock:
            if self._live_producer() is not producer:
                return  # renewed already by a concurrent failure
            log.error("Kafka producer failed fatally; replacing it", error=repr(exc)[:200])
            config = self.broker.config.broker_config
            try:
                await asyncio.wait_for(config.producer.disconnect(), timeout=10)
            except Exception as failure:  # noqa: BLE001 - a dead producer may not close cleanly
                log.warning("closing the failed producer", error=repr(failure)[:200])
            await config.producer.connect(
                AIOKafkaProducer(**self.broker._connection_kwargs),  # noqa: SLF001 - the broker's producer settings
                serializer=config.fd_config._serializer,  # noqa: SLF001
                codec=config.broker_codec or DefaultCodec(),
            )

    async def start(self) -> None:
        """Migrate the schema, connect the broker, start the relay and background tasks."""
        await migrate(self.engine, self.name, self.metadata)
        await self.broker.start()
        self._tasks.append(asyncio.create_task(self.relay.run(), name=f"{self.name}-outbox-relay"))
        self._tasks.append(asyncio.create_task(_supervised("consumer-health", self.health.run), name=f"{self.name}-consumer-health"))
        self._tasks.append(asyncio.create_task(measure_event_loop_lag(self.metrics), name=f"{self.name}-event-loop-lag"))
        for i, committer in enumerate(self._committers):
            self._tasks.append(asyncio.create_task(_supervised("offset-commits", committer.run), name=f"{self.name}-commits-{i}"))
        for name, task in self._background:
            self._tasks.append(asyncio.create_task(_supervised(name, task), name=f"{self.name}-{name}"))
        self.started = True
        log.info("service started", bootstrap=self.settings.kafka_bootstrap_servers)

    async def stop(self) -> None:
        """Stop consuming, let the relay publish what committed, then release everything."""
        self.started = False
        # What finished is committed while the consumers are still up; a record still in flight
        # is redelivered after a restart and ends as a duplicate.
        await asyncio.gather(*(c.commit() for c in self._committers), return_exceptions=True)
        await self.broker.stop()
        await self.relay.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.engine.dispose()
        log.info("service stopped")

    async def readiness(self) -> dict[str, Any]:
        """Check the dependencies that must answer for this service to do its job."""
        checks: dict[str, Any] = {}
        try:
            await asyncio.wait_for(ping(self.engine), timeout=2)
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            checks["database"] = f"unreachable: {type(exc).__name__}"
        try:
            checks["broker"] = "ok" if await self.broker.ping(timeout=2) else "unreachable"
        except Exception as exc:  # noqa: BLE001
            checks["broker"] = f"unreachable: {type(exc).__name__}"
        checks["outbox_relay"] = "ok" if self.relay.healthy else "failing"
        stuck = self.health.stuck()
        checks["consumers"] = "ok" if not stuck else "; ".join(f"stuck {g}: {why}" for g, why in sorted(stuck.items()))
        checks["ready"] = self.started and all(v == "ok" for k, v in checks.items() if k != "ready")
        return checks

    def http_app(
        self, *, title: str, routers: Iterable[APIRouter] = (), self_authenticating: Iterable[APIRouter] = ()
    ) -> FastAPI:
        """The service's FastAPI app: its routers plus /health, /live and /metrics.

        Every route of `routers` requires a valid bearer token (`self.auth.principal`; 401
        otherwise). `self_authenticating` routers check credentials themselves (Open311's
        api_key, the console's sign-in and session cookie). The ops endpoints stay open: they are
        for probes and Prometheus inside the cluster, and carry no personal data; keep them off
        the public ingress (see README, "Access").
        """

        @asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        app = FastAPI(title=title, lifespan=lifespan, version="1.0", dependencies=[Depends(bind_request_ids)])
        app.state.runtime = self

        @app.get("/live", tags=["ops"], summary="Liveness: the process answers")
        async def live() -> dict[str, str]:
            return {"status": "alive", "service": self.name}

        @app.get("/health", tags=["ops"], summary="Readiness: database and broker answer")
        async def health(response: Response) -> dict[str, Any]:
            checks = await self.readiness()
            response.status_code = 200 if checks["ready"] else 503
            return {"service": self.name, **checks}

        @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
        async def metrics() -> Response:
            return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

        for router in routers:
            app.include_router(router, dependencies=[Depends(self.auth.principal)])
        for router in self_authenticating:
            app.include_router(router)
        app.add_exception_handler(AccessError, access_error_response)
        refused = self.metrics.requests_refused
        database_trouble = database_trouble_handler(
            self.settings.retry_after_seconds, lambda reason: refused.labels(reason).inc()
        )
        for exc_type in (*DATABASE_BUSY, *DATABASE_UNREACHABLE):
            app.add_exception_handler(exc_type, database_trouble)
        app.add_middleware(LimitRequestBody, max_bytes=self.settings.max_request_bytes)
        # Outside the request body limit, so that even a 413 or a 401 leaves its audit row.
        app.add_middleware(AuditMiddleware, trail=self.audit)
        # Outermost: a request shed for overload touches nothing, not even the audit table (whose
        # write would wait for the very connections the admitted requests are waiting for).
        app.add_middleware(
            ShedLoad,
            limit=self.settings.max_requests_in_flight,
            retry_after_seconds=self.settings.retry_after_seconds,
            on_shed=refused.labels("overloaded").inc,
        )
        return app


_PATH_IDS = ("incident_id", "handoff_id", "deadline_id")


async def _left_undecoded(message: Any) -> None:
    """FastStream's decoder for the runtime's subscribers: the handler reads the raw records."""


def _kafka_headers(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in headers.items()]


async def bind_request_ids(request: Request) -> None:
    """Put the ids a request path names (incident, handoff, deadline) on every log line it writes."""
    clear_event_context()
    bind_event_context(**{k: v for k, v in request.path_params.items() if k in _PATH_IDS})


async def _supervised(name: str, task: BackgroundTask) -> None:
    """Keep a background task alive: log a crash and restart it after a pause."""
    while True:
        try:
            await task()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a crashed scheduler must come back
            log.error("background task crashed; restarting", task=name, error=repr(exc)[:300])
            await asyncio.sleep(1.0)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run an app under uvicorn (used by each service's __main__)."""
    import uvicorn

    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=15,
    )
