"""Consumer construction: the one place a confluent-kafka ``Consumer`` is made.

Every component that reads Kafka asks :func:`new_consumer` for its client, so the group defaults of
:func:`processor.kafka.clients.consumer_config` (manual commits, the short session timeout the embedded
broker needs, cooperative-sticky assignment) and any future broker quirk apply everywhere at once.

:func:`fetched_high_watermarks` is where a partition's end is learnt without ListOffsets, which the
embedded Tansu broker answers wrongly (SPEC §11): the high watermark a Fetch response carries, which
librdkafka caches, is right there and on real Kafka alike.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from processor.config import Settings
from processor.kafka.clients import consumer_config

__all__ = ["fetched_high_watermarks", "new_consumer"]


def new_consumer(settings: Settings, group: str, **extra: Any) -> Consumer:
    """A consumer in ``group`` with the shared defaults; ``extra`` librdkafka settings override them."""
    return Consumer(consumer_config(settings, group, **extra))


def fetched_high_watermarks(
    consumer: Consumer, starts: Mapping[tuple[str, int], int], timeout: float
) -> dict[tuple[str, int], int]:
    """The high watermark of each ``(topic, partition)`` as a Fetch response reported it.

    Each partition is assigned at its offset in ``starts`` (``OFFSET_BEGINNING`` is fine) and read until it
    answered (a record or its partition-EOF event, which needs ``enable.partition.eof``), for at most
    ``timeout`` seconds in all; a partition that did not answer in time is left out rather than guessed.
    The consumer is unassigned afterwards, so it can be reused.
    """
    consumer.assign([TopicPartition(topic, partition, offset) for (topic, partition), offset in starts.items()])
    answered: set[tuple[str, int]] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(answered) < len(starts) and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.1):
                err = msg.error()
                if err is None or err.code() == KafkaError._PARTITION_EOF:
                    answered.add((msg.topic() or "", msg.partition() or 0))
        highs: dict[tuple[str, int], int] = {}
        for topic, partition in starts:
            if (topic, partition) in answered:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
                if high >= 0:
                    highs[(topic, partition)] = high
        return highs
    finally:
        consumer.unassign()
