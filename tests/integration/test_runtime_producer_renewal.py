"""A Kafka producer that failed fatally is replaced, so the outbox drains again without a restart.

Found by the chaos suite's long broker outage: after the broker came back, an idempotent producer
answered OutOfOrderSequenceNumber to every send for the rest of the process's life, so no outbox
drained and every committed event waited forever.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaTimeoutError, OutOfOrderSequenceNumber
from sqlalchemy import MetaData

from services.runtime.host import ServiceRuntime
from services.runtime.settings import ServiceSettings
from tests.support import records_from_start, wait_for

pytestmark = pytest.mark.integration


async def values_on(bootstrap: str, topic: str) -> list[bytes]:
    return [r.value for r in await records_from_start(bootstrap, topic)]


@pytest.fixture
async def runtime(kafka_bootstrap, kafka_topics, tmp_path):
    settings = ServiceSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 't.db'}",
        topic_prefix=next(iter(kafka_topics.values())).split("gridwhistle.")[0],
        auth_dev_mode=True,
    )
    runtime = ServiceRuntime("t", settings, MetaData(), configure_logs=False)
    await runtime.broker.start()
    yield runtime
    await runtime.broker.stop()
    await runtime.engine.dispose()


def wedge(runtime: ServiceRuntime) -> None:
    """Put the live producer in the state the outage left it in: every send refused for good."""
    runtime._live_producer()._message_accumulator.fail_all(OutOfOrderSequenceNumber())  # noqa: SLF001


async def test_a_producer_refusing_every_send_is_replaced_and_the_next_publish_lands(runtime, kafka_bootstrap, kafka_topics):
    topic = kafka_topics["gridwhistle.intake.incidents"]
    before = runtime._live_producer()  # noqa: SLF001
    await (await runtime._publish(topic, b"k", b"first", {}))  # noqa: SLF001
    wedge(runtime)

    with pytest.raises(OutOfOrderSequenceNumber):
        await runtime._publish(topic, b"k", b"refused", {})  # noqa: SLF001
    assert runtime._live_producer() is not before  # noqa: SLF001

    await (await runtime._publish(topic, b"k", b"after", {}))  # noqa: SLF001
    await runtime._publish_confirmed(topic, b"k", b"confirmed", {})  # noqa: SLF001
    assert await values_on(kafka_bootstrap, topic) == [b"first", b"after", b"confirmed"]


async def test_a_failed_acknowledgement_with_out_of_order_sequence_replaces_the_producer_once(runtime):
    before = runtime._live_producer()  # noqa: SLF001

    async def refused() -> None:
        raise OutOfOrderSequenceNumber()

    for _ in range(3):  # several acknowledgements of one relay round fail together
        with pytest.raises(OutOfOrderSequenceNumber):
            await runtime._renewing(before, refused())  # noqa: SLF001
    renewed = runtime._live_producer()  # noqa: SLF001
    assert renewed is not before
    with pytest.raises(OutOfOrderSequenceNumber):
        await runtime._renewing(before, refused())  # noqa: SLF001 - an old failure renews nothing more
    assert runtime._live_producer() is renewed  # noqa: SLF001


async def test_an_ordinary_publish_failure_keeps_the_producer(runtime):
    before = runtime._live_producer()  # noqa: SLF001
    await runtime._renew_if_dead(before, KafkaTimeoutError())  # noqa: SLF001 - an outage, not a dead producer
    assert runtime._live_producer() is before  # noqa: SLF001


async def test_acknowledgements_failing_with_out_of_order_sequence_replace_the_producer_once(runtime, kafka_topics):
    """The relay awaits the bare acknowledgement futures `_publish` returns; a fatal one still renews the producer."""
    topic = kafka_topics["gridwhistle.intake.incidents"]
    before = runtime._live_producer()  # noqa: SLF001
    # Several acknowledgements of one relay round, still unanswered when the producer fails them.
    acks = [await runtime._publish(topic, b"k", f"pending {i}".encode(), {}) for i in range(3)]  # noqa: SLF001
    wedge(runtime)
    with pytest.raises(OutOfOrderSequenceNumber):
        await asyncio.gather(*acks)

    async def renewed() -> bool:
        return runtime._live_producer() is not before  # noqa: SLF001

    await wait_for(renewed, timeout=10)
    fresh = runtime._live_producer()  # noqa: SLF001
    await asyncio.sleep(0.2)  # the other two failures find it renewed already
    assert runtime._live_producer() is fresh  # noqa: SLF001


async def test_an_acknowledgement_failing_for_an_ordinary_reason_keeps_the_producer(runtime, kafka_topics):
    topic = kafka_topics["gridwhistle.intake.incidents"]
    before = runtime._live_producer()  # noqa: SLF001
    ack = await runtime._publish(topic, b"k", b"timed out", {})  # noqa: SLF001
    before._message_accumulator.fail_all(KafkaTimeoutError())  # noqa: SLF001 - an outage, not a dead producer
    with pytest.raises(KafkaTimeoutError):
        await ack
    await asyncio.sleep(0.2)
    assert runtime._live_producer() is before  # noqa: SLF001
