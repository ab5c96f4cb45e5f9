"""librdkafka configurations shared by every component, so quirks are handled once.

- ``session.timeout.ms`` 6000: group joins on Tansu take ~23 s with larger values, ~3 s with this one
  (SPEC §11); 6 s is also a fine failure-detection time on real Kafka.
- Producers are idempotent (no duplicates from internal retries) and ``acks=all``.
- Offsets are never auto-committed: components commit after their side effects.
"""

from __future__ import annotations

from typing import Any

from processor.config import Settings

__all__ = ["HEARTBEAT_INTERVAL_MS", "SESSION_TIMEOUT_MS", "consumer_config", "producer_config"]

#: Group session timeout and heartbeat, for confluent-kafka consumers and the sink's faust consumer alike.
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    return settings.kafka_config(
        **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "none",
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            **extra,
        }
    )


def consumer_config(settings: Settings, group: str, **extra: Any) -> dict[str, Any]:
    return settings.kafka_config(
        **{
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
            "max.poll.interval.ms": 300_000,
            "partition.assignment.strategy": "cooperative-sticky",
            **extra,
        }
    )
