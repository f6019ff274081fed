"""Idempotent, dead-lettering consumption of catalogue events.

Per record: decode (a poison record goes straight to the topic's dead-letter twin); in one
transaction claim the event id for this consumer (a duplicate ends here), run the handler,
which changes state and stages events in the outbox; commit; only then is the offset
committed (ack). A failing handler is retried a bounded number of times, then dead-lettered so
the partition keeps flowing. An infrastructure failure (database or broker unreachable) is
never dead-lettered: the record is nacked and redelivered once the dependency is back.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from contracts.envelope import HEADER_CORRELATION, Envelope, PoisonMessage, header_map
from contracts.events import CATALOGUE
from services.runtime.logs import bind_event_context, clear_event_context, get_logger
from services.runtime.metrics import RuntimeMetrics
from services.runtime.outbox import UnitOfWork

log = get_logger(__name__)

Handler = Callable[[UnitOfWork, Envelope], Awaitable[None]]
# Handles a run of consecutive fresh events of one type from one partition, in their order, with
# the effect of calling the type's Handler on each in turn (set-based statements instead of N).
BatchHandler = Callable[[UnitOfWork, list[Envelope]], Awaitable[None]]
DeadLetterPublish = Callable[[str, bytes | None, bytes | None, dict[str, str]], Awaitable[Any]]

HEADER_DLQ_REASON = "gw-dlq-reason"
HEADER_DLQ_DETAIL = "gw-dlq-detail"
# Set (to the value's size in bytes) when the record was too large to be dead-lettered with its value.
HEADER_DLQ_VALUE_DROPPED = "gw-dlq-value-dropped"


def is_infrastructure_error(exc: BaseException) -> bool:
    """True when the failure is the database or broker being unreachable, not the record."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc,
        OperationalError | InterfaceError | DisconnectionError | ConnectionError | OSError | TimeoutError | KafkaError,
    )


# PostgreSQL's "deadlock detected" and "could not serialize": two transactions (e.g. two of a
# service's consumer groups updating the same incidents in different orders) got in each other's
# way; running the same work again succeeds, so it is neither a poison record nor an outage.
_CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})
# Attempts of a batch's transaction that lost such a conflict before it goes record by record.
BATCH_CONFLICT_ATTEMPTS = 4


def is_transaction_conflict(exc: BaseException) -> bool:
    """True when the transaction lost a deadlock or serialization conflict with another one."""
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in _CONFLICT_SQLSTATES


@dataclass(frozen=True)
class Record:
    """The parts of a Kafka record the consumer needs (decoupled from the client library)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


class EventConsumer:
    """Runs handlers for catalogue events on one topic, exactly once in effect."""

    def __init__(
        self,
        *,
        name: str,
        dead_letter_topic: str,
        handlers: Mapping[str, Handler],
        batch_handlers: Mapping[str, BatchHandler] | None = None,
        unit_of_work: Callable[[], UnitOfWork],
        publish_dead_letter: DeadLetterPublish,
        metrics: RuntimeMetrics,
        max_attempts: int = 3,
        infra_backoff_seconds: float = 1.0,
    ) -> None:
        self.name = name
        self._dlq = dead_letter_topic
        self._handlers = dict(handlers)
        self._batch_handlers = dict(batch_handlers or {})
        if unknown := set(self._batch_handlers) - set(self._handlers):
            # A record alone (or redelivered one by one after a failure) needs its per-record handler.
            raise ValueError(f"batch handlers without a per-record handler: {sorted(unknown)}")
        self._uow = unit_of_work
        self._publish_dlq = publish_dead_letter
        self._metrics = metrics
        self._max_attempts = max_attempts
        self._infra_backoff = infra_backoff_seconds
        # Read by the health monitor: monotonic time the last record finished, whatever its outcome.
        self.last_processed_at: float | None = None
        # Next offset to process per (topic, partition), advanced only once a record's effects
        # committed: what a reader of this service's state can trust has been taken into account.
        self.positions: dict[tuple[str, int], int] = {}
        # The live aiokafka consumer of this group (None before start, or on the in-memory broker).
        self.kafka_consumer: Callable[[], Any] = lambda: None

    @property
    def event_types(self) -> tuple[str, ...]:
        """The event types this consumer handles (others on its topic are ignored)."""
        return tuple(sorted(self._handlers))

    @property
    def dead_letter_topic(self) -> str:
        """The dead-letter twin this consumer writes poison records to."""
        return self._dlq

    async def process(self, record: Record) -> str:
        """Process one record; return the outcome. Raises only on infrastructure failure."""
        outcome = await self._process(record)
        key = (record.topic, record.partition)
        self.positions[key] = max(self.positions.get(key, 0), record.offset + 1)
        self.last_processed_at = time.monotonic()
        self._metrics.consumer_last_processed.labels(self.name).set_to_current_time()
        return outcome

    async def process_batch(self, records: Sequence[Record]) -> list[str]:
        """Process a fetched batch in order; return the outcomes. Raises only on infrastructure failure.

        The handled records share one transaction (one commit, one statement recording their ids),
        which is what makes consuming cheap. A transaction that loses a deadlock runs again (a few
        times). If any handler fails, that transaction rolls back whole and the batch is processed
        again record by record, with the bounded retries and dead-lettering of `process`, so one
        poison record costs its neighbours nothing.
        """
        if len(records) <= 1:
            return [await self.process(record) for record in records]
        clear_event_context()
        decoded: list[tuple[Record, Envelope | PoisonMessage]] = []
        for record in records:
            try:
                decoded.append((record, CATALOGUE.decode(record.value)))
            except PoisonMessage as poison:
                decoded.append((record, poison))
        started = time.perf_counter()
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_transaction_conflict),
                stop=stop_after_attempt(BATCH_CONFLICT_ATTEMPTS),
                # Random, so the two losers of a deadlock do not collide again in step.
                wait=wait_random(0.005, 0.05),
                before_sleep=lambda _: self._metrics.retries.labels(records[0].topic, "conflict").inc(),
                reraise=True,
            ):
                with attempt:
                    outcomes = await self._in_one_transaction(decoded)
        except Exception as exc:
            if is_infrastructure_error(exc):
                self._metrics.retries.labels(records[0].topic, "infrastructure").inc()
                log.warning("infrastructure failure; batch will be redelivered", error=repr(exc)[:300])
                await asyncio.sleep(self._infra_backoff)
                raise
            log.warning("a record of the batch failed; processing the batch record by record", error=repr(exc)[:300])
            return [await self.process(record) for record in records]
        finally:
            clear_event_context()
        share = (time.perf_counter() - started) / len(records)
        for (record, item), outcome in zip(decoded, outcomes, strict=True):
            if isinstance(item, PoisonMessage):
                # After its neighbours committed; awaited, so its offset is never committed before it.
                await self._dead_letter(record, item.reason, item.detail, event_type="invalid")
            else:
                if outcome != "ignored":
                    self._metrics.handler_seconds.labels(record.topic).observe(share)
                self._metrics.consumed.labels(record.topic, item.type, outcome).inc()
            key = (record.topic, record.partition)
            self.positions[key] = max(self.positions.get(key, 0), record.offset + 1)
        self.last_processed_at = time.monotonic()
        self._metrics.consumer_last_processed.labels(self.name).set_to_current_time()
        return outcomes

    async def _in_one_transaction(self, decoded: list[tuple[Record, Envelope | PoisonMessage]]) -> list[str]:
        outcomes: list[str] = []
        async with self._uow() as uow:
            wanted = [str(e.id) for _, e in decoded if isinstance(e, Envelope) and e.type in self._handlers]
            fresh = await uow.claim_many(self.name, wanted)
            run: list[Envelope] = []
            run_source: tuple[str, int] | None = None
            for record, envelope in decoded:
                if isinstance(envelope, PoisonMessage):
                    outcomes.append("dead_lettered")
                    continue
                handler = self._handlers.get(envelope.type)
                if handler is None:
                    outcomes.append("ignored")
                    continue
                event_id = str(envelope.id)
                if event_id not in fresh:
                    outcomes.append("duplicate")  # processed before, or a second copy in this batch
                    continue
                fresh.discard(event_id)
                outcomes.append("processed")
                source = (record.topic, record.partition)
                if run and (envelope.type != run[0].type or source != run_source):
                    await self._handle_run(uow, run, run_source)
                    run = []
                run.append(envelope)
                run_source = source
            if run:
                await self._handle_run(uow, run, run_source)
        return outcomes

    async def _handle_run(self, uow: UnitOfWork, run: list[Envelope], source: tuple[str, int] | None) -> None:
        """Handle consecutive fresh events of one type from one partition, together if the type allows."""
        batch_handler = self._batch_handlers.get(run[0].type)
        if batch_handler is not None and len(run) > 1:
            clear_event_context()
            uow.next_step()
            uow.source = source
            await batch_handler(uow, run)
            return
        handler = self._handlers[run[0].type]
        for envelope in run:
            _bind(envelope)
            uow.next_step()
            uow.source = source
            await handler(uow, envelope)

    async def _process(self, record: Record) -> str:
        clear_event_context()
        try:
            envelope = CATALOGUE.decode(record.value)
        except PoisonMessage as poison:
            await self._dead_letter(record, poison.reason, poison.detail, event_type="invalid")
            return "dead_lettered"
        _bind(envelope)
        handler = self._handlers.get(envelope.type)
        if handler is None:
            self._metrics.consumed.labels(record.topic, envelope.type, "ignored").inc()
            return "ignored"
        started = time.perf_counter()
        try:
            outcome = await self._run_with_retries(handler, envelope, record)
        except PoisonMessage as rejected:
            await self._dead_letter(record, rejected.reason, rejected.detail, event_type=envelope.type)
            return "dead_lettered"
        except Exception as exc:
            # A deadlock lost on every attempt says nothing against the record: never dead-letter it.
            if is_infrastructure_error(exc) or is_transaction_conflict(exc):
                self._metrics.retries.labels(record.topic, "infrastructure").inc()
                log.warning("infrastructure failure; record will be redelivered", error=repr(exc)[:300])
                await asyncio.sleep(self._infra_backoff)
                raise
            await self._dead_letter(record, "handler_failed", repr(exc), event_type=envelope.type)
            return "dead_lettered"
        self._metrics.handler_seconds.labels(record.topic).observe(time.perf_counter() - started)
        self._metrics.consumed.labels(record.topic, envelope.type, outcome).inc()
        return outcome

    async def _run_with_retries(self, handler: Handler, envelope: Envelope, record: Record) -> str:
        def retryable(exc: BaseException) -> bool:
            retry = not isinstance(exc, PoisonMessage) and not is_infrastructure_error(exc)
            if retry:
                self._metrics.retries.labels(record.topic, "handler").inc()
                log.warning("handler failed; retrying", error=repr(exc)[:300])
            return retry

        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=wait_exponential(multiplier=0.05, max=1.0),
            retry=retry_if_exception(retryable),
            reraise=True,
        ):
            with attempt:
                async with self._uow() as uow:
                    uow.source = (record.topic, record.partition)
                    if not await uow.claim(self.name, str(envelope.id)):
                        return "duplicate"
                    await handler(uow, envelope)
        return "processed"

    async def _dead_letter(self, record: Record, reason: str, detail: str, *, event_type: str) -> None:
        headers = {
            **record.headers,
            HEADER_DLQ_REASON: reason,
            HEADER_DLQ_DETAIL: detail[:1000],
            "gw-dlq-consumer": self.name,
            "gw-dlq-source-topic": record.topic,
            "gw-dlq-source-partition": str(record.partition),
            "gw-dlq-source-offset": str(record.offset),
        }
        # Awaited: the offset must not be committed before the dead letter is safely stored.
        try:
            await self._publish_dlq(self._dlq, record.key, record.value or b"", headers)
        except MessageSizeTooLargeError:
            # A record just under the broker's limit no longer fits once the dead-letter headers are
            # added; retrying cannot help, and treating it as an outage would block the partition
            # forever. Store where it came from and why, without its value.
            headers[HEADER_DLQ_VALUE_DROPPED] = str(len(record.value or b""))
            await self._publish_dlq(self._dlq, record.key, b"", headers)
        self._metrics.dead_lettered.labels(record.topic, reason).inc()
        self._metrics.consumed.labels(record.topic, event_type, "dead_lettered").inc()
        log.error(
            "record dead-lettered",
            reason=reason,
            detail=detail[:300],
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            correlation_id=record.headers.get(HEADER_CORRELATION),
        )


def _bind(envelope: Envelope) -> None:
    bind_event_context(
        incident_id=envelope.subject,
        event_id=envelope.id,
        event_type=envelope.type,
        correlation_id=envelope.correlation_id,
        causation_id=envelope.causation_id,
    )


def record_from_kafka(raw: Any) -> Record:
    """Convert an aiokafka ConsumerRecord into a Record."""
    return Record(
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        key=raw.key,
        value=raw.value,
        headers=header_map(raw.headers),
    )
