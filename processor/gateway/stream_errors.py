"""Events of a v2 stream batch that are invalid on their own go to ``meter-event-errors``, not back to the
caller: Stripe's stream is "processed asynchronously, including validation", so one bad event never fails
its batch. The batch is answered only once these records are acknowledged too (nothing lost silently).

Errors are rare, so this producer is simple: produce, then flush it in a worker thread. A flush waits only
for this producer's own records (the events go through :class:`~processor.gateway.ingest.AckingProducer`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from processor.config import Settings
from processor.errors import KafkaDeliveryError
from processor.kafka.clients import producer_config

__all__ = ["ERRORS_TOPIC", "ErrorPublisher"]

ERRORS_TOPIC = "meter-event-errors"
_FLUSH_TIMEOUT_S = 30.0


class ErrorPublisher:
    """Produces ``(key, value)`` records to ``meter-event-errors`` and waits for the broker's acks."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: Producer | None = None
        self._failed: list[str] = []
        self._lock = threading.Lock()
        self.topic = settings.topic_prefix + ERRORS_TOPIC

    def _client(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(producer_config(self._settings, **{"linger.ms": 0}))
        return self._producer

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            with self._lock:
                self._failed.append(err.str())

    def _send_sync(self, records: Sequence[tuple[str | None, bytes]]) -> None:
        producer = self._client()
        try:
            for key, value in records:
                producer.produce(self.topic, value=value, key=key, on_delivery=self._on_delivery)
        except (KafkaException, BufferError) as exc:
            raise KafkaDeliveryError(f"could not queue an error record: {exc}") from exc
        if producer.flush(_FLUSH_TIMEOUT_S):
            raise KafkaDeliveryError(f"error records were not acknowledged within {_FLUSH_TIMEOUT_S:.0f} s")
        with self._lock:
            failed, self._failed = self._failed, []
        if failed:
            raise KafkaDeliveryError(f"Kafka did not accept an error record: {failed[0]}")

    async def send(self, records: Sequence[tuple[str | None, bytes]]) -> None:
        """Produce ``records`` and return once all are acknowledged (else :class:`KafkaDeliveryError`)."""
        if records:
            await asyncio.to_thread(self._send_sync, records)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
