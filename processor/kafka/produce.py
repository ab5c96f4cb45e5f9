"""The one acknowledged-produce loop: every component that writes to Kafka goes through :class:`AckedProducer`.

What it decides once, so no component gets it slightly different:

- **A full local queue is waited out, never turned into a dropped record.** ``BufferError`` means
  librdkafka's queue is full (the broker is slow or away): delivery reports are served, which frees space
  as records are acknowledged or time out, and the same record is queued again, for at most
  ``queue_wait_s`` seconds; past that :class:`~processor.errors.KafkaDeliveryError`.
- **One error mapping.** A record larger than the broker accepts is :class:`RecordTooLargeError` (the
  caller can say which input was too big); any other refusal to queue, a failed delivery report and a
  fatal producer error are :class:`~processor.errors.KafkaDeliveryError`. A fatal error (an idempotent
  producer that cannot go on) drops the client, and the next call makes a fresh one.
- **Per-message callbacks.** ``produce(..., on_delivery=cb)`` calls ``cb(error, message)`` for that
  record alone, so a caller that must match acknowledgements to requests (the gateway, an import's line
  numbers) never re-parses its own payloads to find out which record a report is about.
- **Bounded waiting.** :meth:`flush` and :meth:`produce_and_wait` take a timeout and report what is
  still in flight; nothing here waits forever.
- **No I/O in the constructor.** The confluent-kafka client is created on the first produce.

Settings (idempotence, ``acks=all``, queue sizes) come from :func:`processor.kafka.clients.producer_config`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from processor.config import Settings
from processor.errors import KafkaDeliveryError
from processor.kafka.clients import producer_config

__all__ = ["AckedProducer", "DeliveryCallback", "RecordTooLargeError"]

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Message], None]

#: How long one wait for queue space lasts when librdkafka's local queue is full.
_QUEUE_FULL_POLL_S = 0.1
#: How long :meth:`AckedProducer.produce` waits for queue space in all before giving up (the broker has
#: been unreachable for that long, or is far slower than the producer).
DEFAULT_QUEUE_WAIT_S = 300.0


class RecordTooLargeError(KafkaDeliveryError):
    """The record is larger than the broker (or ``message.max.bytes``) accepts: resending cannot help."""

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message)
        self.size = size


def _key_bytes(key: str | bytes | None) -> bytes | None:
    return key.encode("utf-8") if isinstance(key, str) else key


class AckedProducer:
    """An idempotent confluent-kafka producer with the loop described in the module docstring.

    :param settings: where the brokers are (security settings included).
    :param config: librdkafka settings layered over :func:`producer_config`'s defaults.
    :param on_delivery: the default delivery callback, for records produced without their own.
    :param queue_wait_s: the longest a single :meth:`produce` waits for room in a full local queue.

    Thread-safe as confluent-kafka's producer is (``produce`` from several threads is fine).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        config: Mapping[str, Any] | None = None,
        on_delivery: DeliveryCallback | None = None,
        queue_wait_s: float = DEFAULT_QUEUE_WAIT_S,
    ) -> None:
        self._settings = settings
        self._config = dict(config or {})
        self._default_callback = on_delivery
        self._queue_wait_s = queue_wait_s
        self._producer: Producer | None = None
        self._lock = threading.Lock()
        self._fatal: KafkaError | None = None

    # ---- the client -------------------------------------------------------------------------------
    def client(self) -> Producer:
        """The confluent-kafka producer, created on first use (and again after a fatal error)."""
        self._raise_fatal()
        producer = self._producer
        if producer is not None:
            return producer
        with self._lock:
            if self._producer is None:
                conf = producer_config(self._settings, **{**self._config, "error_cb": self._on_error})
                if self._default_callback is not None:
                    conf["on_delivery"] = self._default_callback
                self._producer = Producer(conf)
            return self._producer

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
            log.error("Kafka producer fatal error: %s", err.str())
        else:
            log.warning("Kafka producer: %s", err.str())

    def _raise_fatal(self) -> None:
        fatal, self._fatal = self._fatal, None
        if fatal is not None:
            self._producer = None
            raise KafkaDeliveryError(f"the Kafka producer failed and was reset: {fatal.str()}")

    # ---- producing --------------------------------------------------------------------------------
    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None = None,
        *,
        on_delivery: DeliveryCallback | None = None,
        timestamp: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue one record; ``on_delivery(err, msg)`` is called for it when the broker answered (from a
        later :meth:`poll`, :meth:`flush` or produce). Waits out a full queue (module docstring).
        ``partition`` overrides the key's partition (tests that place records where a model expects them)."""
        producer = self.client()
        kwargs: dict[str, Any] = {}
        if partition is not None:
            kwargs["partition"] = partition
        if on_delivery is not None:
            kwargs["on_delivery"] = on_delivery
        if timestamp is not None:
            kwargs["timestamp"] = timestamp
        if headers:
            kwargs["headers"] = headers
        key_bytes = _key_bytes(key)
        deadline: float | None = None
        while True:
            try:
                producer.produce(topic, value, key_bytes, **kwargs)
                return
            except BufferError:
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self._queue_wait_s
                if now >= deadline:
                    raise KafkaDeliveryError(
                        f"the local queue for {topic} stayed full for {self._queue_wait_s:g} s: "
                        f"is the broker at {self._settings.kafka_bootstrap} reachable?"
                    ) from None
                producer.poll(_QUEUE_FULL_POLL_S)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                size = len(value or b"")
                if isinstance(err, KafkaError) and err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise RecordTooLargeError(
                        f"a record of {size} bytes is larger than {topic} accepts", size=size
                    ) from exc
                raise KafkaDeliveryError(f"cannot queue a record for {topic}: {exc}") from exc

    def produce_many(self, records: Iterable[tuple[str, bytes | None, str | bytes | None, int | None]]) -> int:
        """Queue every ``(topic, value, key, timestamp_ms)`` record (timestamp None: now) with the default
        callback, serving delivery reports as it goes; returns how many were queued.

        The bulk path (benchmarks, loaders): :meth:`produce`'s per-call set-up costs 0.5 to 1 µs a record
        over the bare client's ~1.2 µs (measured on the 2-core development box, 50,000 bench records queued
        for an unreachable broker), a tenth of a fast produce loop. Here the bare client's ``produce`` is
        called directly and only a refused record (a full queue, an error) takes :meth:`produce`'s path, so
        the waiting and the error mapping are the same."""
        producer = self.client()
        produce, poll = producer.produce, producer.poll
        n = 0
        for topic, value, key, timestamp in records:
            try:
                produce(topic, value, key, timestamp=timestamp or 0)
            except (BufferError, KafkaException):
                self.produce(topic, value, key, timestamp=timestamp)
            poll(0)
            n += 1
        self._raise_fatal()
        return n

    def produce_and_wait(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None = None,
        *,
        timeout: float,
        timestamp: int | None = None,
    ) -> Message:
        """Produce one record (``timestamp`` in ms, default now) and wait (at most ``timeout`` s) for its
        acknowledgement. Raises :class:`~processor.errors.KafkaDeliveryError` when the broker refused it or
        did not answer in time (the caller must then treat the write as not made)."""
        answers: list[tuple[KafkaError | None, Message]] = []
        self.produce(topic, value, key, on_delivery=lambda err, msg: answers.append((err, msg)), timestamp=timestamp)
        deadline = time.monotonic() + timeout
        producer = self.client()
        while not answers and time.monotonic() < deadline:
            producer.poll(min(0.1, max(0.0, deadline - time.monotonic())))
        self._raise_fatal()
        if not answers:
            raise KafkaDeliveryError(f"a record for {topic} was not acknowledged within {timeout:g} s")
        err, msg = answers[0]
        if err is not None:
            raise KafkaDeliveryError(f"a record for {topic} was not acknowledged: {err.str()}")
        return msg

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports for up to ``timeout`` seconds; returns how many were served."""
        producer = self._producer
        served = producer.poll(timeout) if producer is not None else 0
        self._raise_fatal()
        return int(served)

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every queued record; returns how many are still in flight."""
        producer = self._producer
        remaining = producer.flush(timeout) if producer is not None else 0
        self._raise_fatal()
        return int(remaining)

    def close(self, timeout: float) -> int:
        """Flush, then drop the client; returns how many records were still in flight (lost unless the
        caller resends them). Never raises: it runs on the way out (``finally`` blocks, shutdown), where a
        fatal producer error can only be logged, and raising would hide the error that led there."""
        try:
            remaining = self.flush(timeout)
        except KafkaDeliveryError as exc:
            log.warning("closing a failed Kafka producer: %s", exc)
            remaining = 0
        if not remaining:
            self._producer = None
        return remaining

    def __len__(self) -> int:
        """Records queued or in flight."""
        return len(self._producer) if self._producer is not None else 0
