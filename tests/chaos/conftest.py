"""Chaos scenarios share the session's Kafka and PostgreSQL; each starts its own stack of five services."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.chaos.harness import ChaosStack, start_stack


@pytest.fixture
def chaos_stack(kafka_server, postgres_server, tmp_path) -> Iterator[Callable[..., ChaosStack]]:
    """Callable(unsafe=None) -> a started ChaosStack on a fresh prefix and databases; stopped after the test."""
    started: list[ChaosStack] = []

    def start(**kwargs) -> ChaosStack:
        stack = start_stack(kafka_server.bootstrap, postgres_server, tmp_path, **kwargs)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()
        print(stack.logs())
