"""Meter events and cancellations into Kafka, answered only once the broker acknowledged them.

SPEC §6: "Ingestion through the gateway is durable when it answers 200". So every request waits for the
delivery report of each of its records, but never flushes the producer (a flush waits for *everyone's*
records and would serialise the gateway). How a request learns that its own records are acknowledged:

- a request registers a :class:`Ticket` under ``(topic, identifier)`` of each record *before* producing
  it (the gateway picks missing identifiers itself, so the key is known in advance);
- the producer's delivery callback (``on_delivery`` of :class:`MeterEventProducer`) looks the record's
  identifier up and counts it against its ticket; the last record resolves the ticket's future on the
  event loop (one ``call_soon_threadsafe`` per request, not per record);
- a background thread polls the producer, so callbacks run while the event loop serves requests.

Records with the same ``(topic, identifier)`` (a client resending) queue up FIFO: they share a key and
so a partition, and librdkafka reports a partition's records in order.

The meter's customer-mapping key decides the Kafka key (SPEC §2), so there is one
:class:`MeterEventProducer` per customer key in use (nearly always just ``stripe_customer_id``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message

from processor.config import Settings
from processor.errors import KafkaDeliveryError, RateLimitedError
from processor.events.producer import MeterEventProducer
from processor.meters.model import DEFAULT_CUSTOMER_KEY

__all__ = ["ACK_TIMEOUT_S", "AckingProducer", "EventIn", "Ticket"]

log = logging.getLogger(__name__)

#: librdkafka gives up on a record after this long and reports it failed (its default is 5 minutes, far
#: longer than any HTTP client waits).
MESSAGE_TIMEOUT_MS = 30_000
#: A request waits a little longer than that for its reports, then answers 503 (retry).
ACK_TIMEOUT_S = MESSAGE_TIMEOUT_MS / 1000 + 5
#: Records queued but not acknowledged, above which new requests get 429 instead of piling up memory
#: while the broker is slow or away.
DEFAULT_MAX_IN_FLIGHT = 200_000
_POLL_S = 0.05


@dataclass(frozen=True)
class EventIn:
    """One meter event as the gateway received it, shape-checked, identifier and timestamp filled."""

    event_name: str
    payload: Mapping[str, str | int]
    identifier: str
    timestamp: int
    customer_key: str = DEFAULT_CUSTOMER_KEY


class Ticket:
    """The delivery reports one request waits for: resolved when ``remaining`` reaches zero."""

    __slots__ = ("error", "future", "keys", "loop", "remaining")

    def __init__(self, loop: asyncio.AbstractEventLoop, keys: list[tuple[str, str]]) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.keys = keys
        self.remaining = len(keys)
        self.error: str | None = None

    def report(self, error: str | None) -> None:
        """One record's report (any thread, under the producer's lock)."""
        if error is not None and self.error is None:
            self.error = error
        self.remaining -= 1
        if self.remaining == 0:
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


def _identifier_of(topic_is_events: bool, raw: bytes | None) -> str | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
        ident = value["identifier"] if topic_is_events else value["cancel"]["identifier"]
    except (ValueError, KeyError, TypeError):
        return None
    return ident if isinstance(ident, str) else None


class AckingProducer:
    """Publishes through :class:`MeterEventProducer` and lets coroutines await the broker's acks.

    Call :meth:`start` on the event loop that will await, :meth:`close` at shutdown.
    """

    def __init__(self, settings: Settings, *, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        self._settings = settings
        self.max_in_flight = max_in_flight
        self._producers: dict[str, MeterEventProducer] = {}
        self._pending: dict[tuple[str, str], deque[Ticket]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events_topic = ""
        self._adjustments_topic = ""
        self._cancel_producer = self._producer(DEFAULT_CUSTOMER_KEY)

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._poll_loop, name="gateway-kafka-poll", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop polling and give queued records ``timeout`` seconds to be acknowledged."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for producer in self._producers.values():
            try:
                producer.close(timeout)
            except KafkaDeliveryError as exc:
                log.error("closing the gateway producer: %s", exc)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            producers = list(self._producers.values())
            timeout = _POLL_S / len(producers)
            for producer in producers:
                started = time.monotonic()
                try:
                    served = producer.poll(timeout)
                except KafkaDeliveryError as exc:  # a fatal client error: the producer resets itself
                    log.error("Kafka producer: %s", exc)
                    served = 0
                if not served and time.monotonic() - started < timeout / 2:
                    # No client yet (created on the first send): poll returned at once; do not spin.
                    self._stop.wait(timeout)

    def _producer(self, customer_key: str) -> MeterEventProducer:
        producer = self._producers.get(customer_key)
        if producer is None:
            producer = MeterEventProducer(
                self._settings,
                customer_key=customer_key,
                on_delivery=self._on_delivery,
                kafka_config={"message.timeout.ms": MESSAGE_TIMEOUT_MS},
            )
            self._events_topic = producer.events_topic
            self._adjustments_topic = producer.adjustments_topic
            self._producers[customer_key] = producer
        return producer

    def in_flight(self) -> int:
        """Records queued or waiting for their acknowledgement, over every producer."""
        return sum(len(p) for p in self._producers.values())

    # ---- publishing ------------------------------------------------------------------------------
    async def send_events(self, events: Sequence[EventIn]) -> None:
        """Produce every event and return once the broker acknowledged all of them.

        Raises :class:`~processor.errors.EventValidationError` (nothing of that event was produced),
        :class:`RateLimitedError` when too much is in flight, :class:`KafkaDeliveryError` when a record
        failed or was not acknowledged in time.
        """
        self._admit(len(events))
        ticket = self._register([(self._events_topic, ev.identifier) for ev in events])
        sent = 0
        try:
            for ev in events:
                self._producer(ev.customer_key).send(
                    ev.event_name, ev.payload, identifier=ev.identifier, timestamp=ev.timestamp
                )
                sent += 1
        except BaseException:
            self._abandon(ticket, first_unsent=sent)
            raise
        await self._wait(ticket)

    async def send_cancel(self, event_name: str, identifier: str) -> None:
        """Produce one cancellation and return once the broker acknowledged it."""
        self._admit(1)
        ticket = self._register([(self._adjustments_topic, identifier)])
        try:
            self._cancel_producer.cancel(event_name, identifier)
        except BaseException:
            self._abandon(ticket, first_unsent=0)
            raise
        await self._wait(ticket)

    def _admit(self, n: int) -> None:
        if self.in_flight() + n > self.max_in_flight:
            raise RateLimitedError(
                "Too many meter events are waiting for Kafka's acknowledgement. Retry with exponential backoff."
            )

    def _register(self, keys: list[tuple[str, str]]) -> Ticket:
        assert self._loop is not None, "AckingProducer.start() was not called"
        ticket = Ticket(self._loop, keys)
        with self._lock:
            for key in keys:
                queue = self._pending.get(key)
                if queue is None:
                    self._pending[key] = queue = deque()
                queue.append(ticket)
        return ticket

    def _forget(self, ticket: Ticket, keys: Sequence[tuple[str, str]]) -> None:
        with self._lock:
            for key in keys:
                queue = self._pending.get(key)
                if queue is not None and ticket in queue:
                    queue.remove(ticket)
                    if not queue:
                        del self._pending[key]

    def _abandon(self, ticket: Ticket, first_unsent: int) -> None:
        """A send failed part-way: records not produced will never report, so stop waiting for them."""
        self._forget(ticket, ticket.keys[first_unsent:])
        with self._lock:
            ticket.remaining -= len(ticket.keys) - first_unsent

    async def _wait(self, ticket: Ticket) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(ticket.future), ACK_TIMEOUT_S)
        except TimeoutError:
            self._forget(ticket, ticket.keys)
            raise KafkaDeliveryError(
                f"Kafka did not acknowledge the request's records within {ACK_TIMEOUT_S:.0f} s"
            ) from None
        except asyncio.CancelledError:  # the client went away: its records still report, into nothing
            raise
        if ticket.error is not None:
            raise KafkaDeliveryError(f"Kafka did not accept a record: {ticket.error}")

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        topic = msg.topic()
        ident = _identifier_of(topic == self._events_topic, msg.value())
        if ident is None:
            return
        key = (topic or "", ident)
        # Under the lock: reports can be served by the poll thread and by a send's own poll at once.
        with self._lock:
            queue = self._pending.get(key)
            if not queue:
                return  # the request stopped waiting (timeout)
            ticket = queue.popleft()
            if not queue:
                del self._pending[key]
            ticket.report(None if err is None else err.str())


def fill_event(
    event_name: str,
    payload: Mapping[str, Any],
    identifier: str | None,
    timestamp: int | None,
    customer_key: str,
) -> EventIn:
    """An :class:`EventIn` with Stripe's defaults: a new identifier, the received time as timestamp."""
    return EventIn(
        event_name,
        payload,
        identifier if identifier is not None else str(uuid.uuid4()),
        timestamp if timestamp is not None else int(time.time()),
        customer_key,
    )
