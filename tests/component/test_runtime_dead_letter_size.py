"""A record too large to be dead-lettered with its value is dead-lettered without it, never redelivered forever."""

from __future__ import annotations

from aiokafka.errors import MessageSizeTooLargeError

from services.runtime.consumer import HEADER_DLQ_REASON, HEADER_DLQ_VALUE_DROPPED
from tests.component.test_runtime_consumer import count_effects, engine, make_consumer, record, write_effect  # noqa: F401
from tests.support import reported

LIMIT = 1000


class SizeLimitedDeadLetters:
    """Like the broker's producer: a value over the limit is refused with MessageSizeTooLargeError."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, dict[str, str]]] = []

    async def __call__(self, topic, key, value, headers):
        if len(value or b"") + sum(len(k) + len(v) for k, v in headers.items()) > LIMIT:
            raise MessageSizeTooLargeError("too large once the dead-letter headers are added")
        self.records.append((topic, key, value, headers))


async def test_a_record_too_large_for_its_dead_letter_is_stored_without_its_value_and_the_batch_goes_on(engine):  # noqa: F811
    dead_letters = SizeLimitedDeadLetters()
    consumer = make_consumer(engine, write_effect, dead_letters)
    huge = b"x" * (LIMIT - 10)  # fits the topic, not the dead-letter twin with its headers

    outcomes = await consumer.process_batch([record(reported().encode(), 0), record(huge, 1), record(reported().encode(), 2)])

    assert outcomes == ["processed", "dead_lettered", "processed"]
    assert await count_effects(engine) == 2
    [(_, key, value, headers)] = dead_letters.records
    assert (key, value) == (b"k", b"")
    assert headers[HEADER_DLQ_REASON] == "not_json" and headers[HEADER_DLQ_VALUE_DROPPED] == str(len(huge))
    assert consumer.positions[("topic", 0)] == 3


async def test_a_record_that_fits_keeps_its_value_in_the_dead_letter(engine):  # noqa: F811
    dead_letters = SizeLimitedDeadLetters()
    consumer = make_consumer(engine, write_effect, dead_letters)

    assert await consumer.process(record(b"{not json", 0)) == "dead_lettered"

    [(_, _, value, headers)] = dead_letters.records
    assert value == b"{not json" and HEADER_DLQ_VALUE_DROPPED not in headers
