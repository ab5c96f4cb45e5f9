"""Events of a v2 stream batch that are invalid on their own go to ``meter-event-errors``, not back to the
caller: Stripe's stream is "processed asynchronously, including validation", so one bad event never fails
its batch. The batch is answered only once these records are acknowledged too (nothing lost silently).

Errors are rare, so this producer is simple: produce (each record with its own delivery callback, so a
batch sees only its own failures), then flush in a worker thread. A flush waits only for this producer's
own records (the events go through :class:`~processor.gateway.ingest.AckingProducer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from confluent_kafka import KafkaError, Message

from processor.config import Settings
from processor.errors import KafkaDeliveryError
from processor.kafka.produce import AckedProducer
from topics import Topic, topic_name

__all__ = ["ERRORS_TOPIC", "ErrorPublisher"]

ERRORS_TOPIC = Topic.ERRORS
#: The longest a batch waits for its error records: for queue space, then for the acknowledgements.
_FLUSH_TIMEOUT_S = 30.0


class ErrorPublisher:
    """Produces ``(key, value)`` records to ``meter-event-errors`` and waits for the broker's acks."""

    def __init__(self, settings: Settings) -> None:
        self._producer = AckedProducer(settings, config={"linger.ms": 0}, queue_wait_s=_FLUSH_TIMEOUT_S)
        self.topic = topic_name(ERRORS_TOPIC, settings.topic_prefix)

    def _send_sync(self, records: Sequence[tuple[str | None, bytes]]) -> None:
        failed: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failed.append(err.str())

        for key, value in records:
            self._producer.produce(self.topic, value, key, on_delivery=delivered)
        if self._producer.flush(_FLUSH_TIMEOUT_S):
            raise KafkaDeliveryError(f"error records were not acknowledged within {_FLUSH_TIMEOUT_S:.0f} s")
        if failed:
            raise KafkaDeliveryError(f"Kafka did not accept an error record: {failed[0]}")

    async def send(self, records: Sequence[tuple[str | None, bytes]]) -> None:
        """Produce ``records`` and return once all are acknowledged (else :class:`KafkaDeliveryError`)."""
        if records:
            await asyncio.to_thread(self._send_sync, records)

    def close(self) -> None:
        self._producer.close(10)
