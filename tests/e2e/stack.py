"""Run every gridwhistle service as an OS process against real Kafka and PostgreSQL, for e2e tests."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.envelope import Envelope
from contracts.events import CATALOGUE
from infra.local import ServiceProcess, free_port
from tests.support import mint_token

SERVICES = ("intake", "classification", "routing", "sla_timer", "closure", "console")
POLICY_AWARE = ("routing", "sla_timer")


@dataclass
class Stack:
    """Five service processes sharing one Kafka (under a topic prefix) and one PostgreSQL server."""

    bootstrap: str
    prefix: str
    databases: dict[str, str]
    log_dir: Path
    policy_file: Path | None = None
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    # As in a deployment: one generated secret for every service, development mode off.
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    open311_api_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def env_for(self, name: str) -> dict[str, str]:
        """The environment one service process runs with."""
        upper = name.upper()
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "GW_TOPIC_PREFIX": self.prefix,
            f"GW_{upper}_DATABASE_URL": self.databases[name],
            f"GW_{upper}_OUTBOX_POLL_SECONDS": "0.2",
            "GW_AUTH_TOKEN_SECRET": self.secret,
            "GW_AUTH_DEV_MODE": "0",
        }
        if name == "intake":
            env["GW_INTAKE_OPEN311_API_KEYS"] = json.dumps({self.open311_api_key: "e2e-city-app"})
        if self.policy_file and name in POLICY_AWARE:
            env[f"GW_{upper}_DEADLINE_POLICY"] = str(self.policy_file)
        if name == "console":  # started last, so the services it forwards to already have ports
            env.update({f"GW_CONSOLE_{other.upper()}_URL": proc.url for other, proc in self.processes.items()})
        return env

    def start(self) -> Stack:
        """Start every service and wait until each reports healthy."""
        for name in SERVICES:
            proc = ServiceProcess(name, {}, free_port(), self.log_dir / f"{name}.log")
            proc.env = {**self.env_for(name), f"GW_{name.upper()}_HTTP_PORT": str(proc.port)}
            self.processes[name] = proc.start()
        for proc in self.processes.values():
            proc.wait_healthy(timeout=90)
        return self

    def url(self, name: str) -> str:
        """Base URL of a service."""
        return self.processes[name].url

    def token(self, user: str, ttl_seconds: int = 3600) -> str:
        """An access token for a demo user that this stack's services accept."""
        return mint_token(user, secret=self.secret, ttl_seconds=ttl_seconds)

    def as_user(self, user: str) -> dict[str, str]:
        """Authorization headers for a request as `user`."""
        return {"Authorization": f"Bearer {self.token(user)}"}

    def kill(self, name: str) -> None:
        """SIGKILL a service: no graceful shutdown, in-flight work is lost from memory."""
        self.processes[name].kill()

    def restart(self, name: str) -> None:
        """Start a killed service again on the same port and database."""
        proc = self.processes[name]
        proc.start()
        proc.wait_healthy(timeout=90)

    def stop(self) -> None:
        """Terminate every service."""
        for proc in self.processes.values():
            proc.terminate()

    def logs(self) -> str:
        """The tail of every service's log, for failure messages."""
        return "\n".join(f"--- {n} ---\n{p.log_tail(30)}" for n, p in self.processes.items())


async def eventually(
    fetch: Callable[[], Any], accept: Callable[[Any], bool], *, timeout: float = 30.0, what: str = "condition"
) -> Any:
    """Call `fetch` until `accept(result)`; fail with the last result after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await fetch()
            if accept(last):
                return last
        except httpx.TransportError as exc:  # a restarting service refuses connections for a moment
            last = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout}s; last seen: {json.dumps(last, default=str)[:2000]}")


async def read_topic(bootstrap: str, topic: str, *, subject: str | None = None, idle: float = 1.5) -> list[Envelope]:
    """Every event on a topic (optionally for one incident), read from offset zero without a group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - first metadata fetch is lazy
            partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        events: list[Envelope] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in partitions]
            if all(pos >= end[tp] for pos, tp in zip(positions, partitions, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=int(idle * 1000))
            for records in batch.values():
                for record in records:
                    envelope = CATALOGUE.decode(record.value)
                    if subject is None or envelope.subject == subject:
                        events.append(envelope)
        return events
    finally:
        await consumer.stop()
