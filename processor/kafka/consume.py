"""Consumer construction: the one place a confluent-kafka ``Consumer`` is made.

Every component that reads Kafka asks :func:`new_consumer` for its client, so the group defaults of
:func:`processor.kafka.clients.consumer_config` (manual commits, the short session timeout the embedded
broker needs, cooperative-sticky assignment) and any future broker quirk apply everywhere at once.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer

from processor.config import Settings
from processor.kafka.clients import consumer_config

__all__ = ["new_consumer"]


def new_consumer(settings: Settings, group: str, **extra: Any) -> Consumer:
    """A consumer in ``group`` with the shared defaults; ``extra`` librdkafka settings override them."""
    return Consumer(consumer_config(settings, group, **extra))
