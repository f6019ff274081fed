"""Test-only service entry point with a deliberately slow handler (the chaos suite's rebalance scenario).

`python -m tests.chaos.slow_handler` with GW_CHAOS_UNSAFE_SERVICE=<name> runs services.<name> with two
changes, both only in this process:

- its consumers poll with `max.poll.interval.ms` = GW_CHAOS_MAX_POLL_INTERVAL_MS (default 6000)
  instead of five minutes;
- the handler of GW_CHAOS_SLOW_EVENT (default IncidentClassified) sleeps GW_CHAOS_SLOW_SECONDS
  (default 15) on every GW_CHAOS_SLOW_EVERY-th record it handles (default 5th), at most
  GW_CHAOS_SLOW_TIMES times (default 2), inside the open transaction of its batch.

A sleep longer than the poll interval makes aiokafka leave the group while the batch is still in
flight: the group rebalances, the partitions go to another member (or back to this one when it
polls again), and the records of the slow batch are delivered a second time, possibly while the
first delivery's transaction is still open. The idempotent consumer must make that second delivery
a duplicate, never a second side effect. Only this module reads these variables.
"""

from __future__ import annotations

import asyncio
import os
import runpy
from collections.abc import Mapping

from faststream.kafka import KafkaBroker

from services.runtime.host import ServiceRuntime
from services.runtime.logs import get_logger

log = get_logger("tests.chaos.slow_handler")

SERVICE = os.environ["GW_CHAOS_UNSAFE_SERVICE"]
MAX_POLL_INTERVAL_MS = int(os.environ.get("GW_CHAOS_MAX_POLL_INTERVAL_MS", "6000"))
SLOW_EVENT = os.environ.get("GW_CHAOS_SLOW_EVENT", "IncidentClassified")
SLOW_SECONDS = float(os.environ.get("GW_CHAOS_SLOW_SECONDS", "15"))
SLOW_EVERY = int(os.environ.get("GW_CHAOS_SLOW_EVERY", "5"))
SLOW_TIMES = int(os.environ.get("GW_CHAOS_SLOW_TIMES", "2"))

_subscriber = KafkaBroker.subscriber
_subscribe = ServiceRuntime.subscribe
_handled = 0
_slept = 0


def _short_poll_interval(self, *topics, **kwargs):  # noqa: ANN001, ANN202 - FastStream's signature
    kwargs.setdefault("max_poll_interval_ms", MAX_POLL_INTERVAL_MS)
    return _subscriber(self, *topics, **kwargs)


def _slowed(handler):  # noqa: ANN001, ANN202 - a runtime Handler
    async def slow(uow, envelope):  # noqa: ANN001, ANN202
        global _handled, _slept
        _handled += 1
        if _slept < SLOW_TIMES and _handled % SLOW_EVERY == 0:
            _slept += 1
            log.warning("chaos: slow handler sleeping", seconds=SLOW_SECONDS, event_type=envelope.type,
                        incident_id=envelope.subject, max_poll_interval_ms=MAX_POLL_INTERVAL_MS)
            await asyncio.sleep(SLOW_SECONDS)
            log.warning("chaos: slow handler woke", event_type=envelope.type, incident_id=envelope.subject)
        await handler(uow, envelope)

    return slow


def _subscribe_slowly(runtime: ServiceRuntime, spec, handlers: Mapping, **kwargs):  # noqa: ANN001, ANN202
    wrapped = {kind: _slowed(h) if kind == SLOW_EVENT else h for kind, h in handlers.items()}
    return _subscribe(runtime, spec, wrapped, **kwargs)


KafkaBroker.subscriber = _short_poll_interval
ServiceRuntime.subscribe = _subscribe_slowly
runpy.run_module(f"services.{SERVICE}", run_name="__main__", alter_sys=True)
