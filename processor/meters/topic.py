"""The write side of the compacted ``meters`` topic: one acknowledged record per meter change.

Each record's Kafka timestamp is the millisecond the change takes effect, the same instant the record's
``status_history`` gives for a status change, so a reader of the full log and a reader of the compacted
one see the change at the same time. Reading is :mod:`processor.meters.log`'s job.
"""

from __future__ import annotations

from processor.config import Settings
from processor.errors import KafkaDeliveryError
from processor.kafka.produce import AckedProducer
from processor.meters.model import Meter
from topics import Topic

__all__ = ["METERS_TOPIC", "MeterTopicWriter", "meters_topic"]

METERS_TOPIC = Topic.METERS
#: How long the broker may take to acknowledge a meter record. Kept well below the registry's lock TTL,
#: so a writer never holds the lock past its expiry while waiting for Kafka.
DELIVERY_TIMEOUT_S = 15.0


def meters_topic(settings: Settings) -> str:
    return settings.topic_prefix + METERS_TOPIC


class MeterTopicWriter:
    """Writes meters to the topic with an idempotent producer, one acknowledged record at a time.

    The producer is created on first use (the constructor does no I/O) and reused afterwards.
    """

    def __init__(self, settings: Settings, delivery_timeout: float = DELIVERY_TIMEOUT_S) -> None:
        self._topic = meters_topic(settings)
        self._timeout = delivery_timeout
        self._producer = AckedProducer(settings, config={"message.timeout.ms": int(delivery_timeout * 1000)})

    def write(self, meter: Meter, at_ms: int | None = None) -> None:
        """Produce ``meter`` keyed by its id, effective from ``at_ms`` (its Kafka timestamp; default: the
        producer's clock now), and wait for the broker's acknowledgement.

        Raises :class:`KafkaDeliveryError` when the record was not acknowledged (the caller must then
        treat the change as not made).
        """
        try:
            self._producer.produce_and_wait(
                self._topic, meter.to_json().encode("utf-8"), meter.id, timeout=self._timeout + 5.0, timestamp=at_ms
            )
        except KafkaDeliveryError as exc:
            raise KafkaDeliveryError(f"meter {meter.id} was not written to {self._topic}: {exc}") from exc

    def close(self) -> None:
        self._producer.close(self._timeout)
