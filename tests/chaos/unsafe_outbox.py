"""Test-only service entry point whose events bypass the outbox (the chaos suite's negative control).

`python -m tests.chaos.unsafe_outbox` with GW_CHAOS_UNSAFE_SERVICE=<name> runs services.<name> with
`UnitOfWork.emit` replaced: each event is published to Kafka at once, inside the still-open transaction,
instead of being staged in the outbox. A crash between that publish and the commit leaves an event
whose state change never happened, so the redelivered input produces the same fact again under a new
event id. Only this module reads the variable; no production code path can reach it.
"""

from __future__ import annotations

import asyncio
import os
import runpy

from contracts.topics import topic_for_event
from services.runtime.host import ServiceRuntime

SERVICE = os.environ["GW_CHAOS_UNSAFE_SERVICE"]
# Widens the publish-to-commit gap so a SIGKILL during load reliably lands inside it.
PUBLISH_TO_COMMIT_SECONDS = float(os.environ.get("GW_CHAOS_UNSAFE_GAP_SECONDS", "0.5"))
_safe_unit_of_work = ServiceRuntime.unit_of_work


def _unsafe_unit_of_work(runtime: ServiceRuntime):
    uow = _safe_unit_of_work(runtime)

    async def publish_now(*envelopes) -> None:
        for envelope in envelopes:
            topic = runtime.settings.topic_prefix + topic_for_event(envelope.type).name
            await runtime.broker.publish(
                envelope.encode(), topic, key=envelope.subject.encode(), headers=envelope.headers()
            )
        uow.emitted.extend(envelopes)
        await asyncio.sleep(PUBLISH_TO_COMMIT_SECONDS)

    uow.emit = publish_now
    return uow


ServiceRuntime.unit_of_work = _unsafe_unit_of_work
runpy.run_module(f"services.{SERVICE}", run_name="__main__", alter_sys=True)
