"""Factory fixtures shared by integration tests (consumers that read a topic to the end, etc.)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from processor.config import Settings
from processor.kafka import new_consumer
from topics import topic_name

if TYPE_CHECKING:
    from confluent_kafka import Consumer

#: The type of the ``read_topic`` fixture.
ReadTopic = Callable[..., list[Any]]


@pytest.fixture
def read_topic() -> Iterator[ReadTopic]:
    """``read_topic(settings, Topic.EVENTS, expect=N)``: every record of a topic (prefix applied) as
    confluent-kafka Messages, read from the beginning by a fresh group until ``expect`` records arrived or
    ``idle`` seconds passed with none."""
    consumers: list[Consumer] = []

    def read(
        settings: Settings, base: str, *, expect: int | None = None, idle: float = 3.0, timeout: float = 60.0
    ) -> list[Any]:
        consumer = new_consumer(settings, f"reader-{uuid.uuid4().hex[:8]}")
        consumers.append(consumer)
        consumer.subscribe([topic_name(base, settings.topic_prefix)])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.5)
            for msg in batch:
                if msg.error():
                    continue
                out.append(msg)
                last = time.monotonic()
            if expect is not None and len(out) >= expect:
                break
            if out and time.monotonic() - last > idle and expect is None:
                break
            if not out and expect is None and time.monotonic() - last > idle + 10:
                break
        return out

    yield read
    for consumer in consumers:
        consumer.close()


def values(messages: list[Any]) -> list[Any]:
    return [json.loads(m.value()) for m in messages]
