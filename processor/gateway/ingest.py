"""Meter events and cancellations into Kafka, answered only once the broker acknowledged them.

SPEC §6: "Ingestion through the gateway is durable when it answers 200". So every request waits for the
delivery report of each of its records, but never flushes the producer (a flush waits for *everyone's*
records and would serialise the gateway). How a request learns that its own records are acknowledged:

- a request registers a :class:`Ticket` under ``(topic, identifier)`` of each record *before* producing
  it (the gateway picks missing identifiers itself, so the key is known in advance);
- the producer's delivery callback (``on_delivery`` of :class:`MeterEventProducer`) looks the record's
  identifier up and counts it against its ticket; the last record completes the ticket;
- a background thread polls the producer, so callbacks run while the event loop serves requests, and
  hands the tickets each poll completed to the event loop in one batch.

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
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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

    __slots__ = ("deadline", "error", "future", "keys", "remaining")

    def __init__(self, future: asyncio.Future[None], keys: list[tuple[str, str]], deadline: float) -> None:
        self.future = future
        self.keys = keys
        self.remaining = len(keys)
        self.deadline = deadline  # event-loop time after which the watchdog gives up on it
        self.error: str | None = None

    def resolve(self) -> None:
        """On the event loop: wake the request (unless it was cancelled or timed out meanwhile)."""
        if not self.future.done():
            self.future.set_result(None)


def _resolve_all(tickets: list[Ticket]) -> None:
    for ticket in tickets:
        ticket.resolve()


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

    Costs per request are kept low because this is the gateway's hot path: a request waits on a plain
    future (a once-a-second watchdog enforces the timeout, instead of a timer per request), and tickets
    completed by the poll thread are handed to the event loop in one batch per poll (one wake-up of the
    loop for many requests, instead of one each).

    Call :meth:`start` on the event loop that will await, :meth:`aclose` at shutdown.
    """

    def __init__(self, settings: Settings, *, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        self._settings = settings
        self.max_in_flight = max_in_flight
        self._producers: dict[str, MeterEventProducer] = {}
        # (topic, identifier) -> the ticket waiting for it; a deque when several wait for the same key.
        self._pending: dict[tuple[str, str], Ticket | deque[Ticket]] = {}
        self._completed: list[Ticket] = []  # resolved on the poll thread, to be woken on the loop
        self._open: deque[Ticket] = deque()  # every ticket, oldest first, for the watchdog
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._events_topic = ""
        self._adjustments_topic = ""
        self._cancel_producer = self._producer(DEFAULT_CUSTOMER_KEY)

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._watchdog = self._loop.create_task(self._watch())
        self._thread = threading.Thread(target=self._poll_loop, name="gateway-kafka-poll", daemon=True)
        self._thread.start()

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop polling and give queued records ``timeout`` seconds to be acknowledged."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        await asyncio.to_thread(self.close, timeout)

    def close(self, timeout: float = 10.0) -> None:
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
                self._hand_over()
                if not served and time.monotonic() - started < timeout / 2:
                    # No client yet (created on the first send): poll returned at once; do not spin.
                    self._stop.wait(timeout)

    def _hand_over(self) -> None:
        """Wake the event loop once for every ticket the last poll completed."""
        with self._lock:
            batch, self._completed = self._completed, []
        if batch and self._loop is not None:
            self._loop.call_soon_threadsafe(_resolve_all, batch)

    async def _watch(self) -> None:
        """Fail tickets whose records were not all reported in time (librdkafka reports a failure
        after MESSAGE_TIMEOUT_MS, so this only fires if the client itself died)."""
        assert self._loop is not None
        while True:
            await asyncio.sleep(1.0)
            now = self._loop.time()
            while self._open and (self._open[0].future.done() or self._open[0].deadline <= now):
                ticket = self._open.popleft()
                if not ticket.future.done():
                    self._forget(ticket, ticket.keys)
                    ticket.future.set_exception(
                        KafkaDeliveryError(f"Kafka did not acknowledge the records within {ACK_TIMEOUT_S:.0f} s")
                    )

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
        topic = self._events_topic
        ticket = self._register([(topic, ev.identifier) for ev in events])
        sent = 0
        try:
            for ev in events:
                # Validated by the gateway (processor/gateway/meter_events.py): produced as is.
                value = {
                    "event_name": ev.event_name,
                    "payload": ev.payload,
                    "identifier": ev.identifier,
                    "timestamp": ev.timestamp,
                }
                self._producer(ev.customer_key).send_validated(value, str(ev.payload[ev.customer_key]))
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
        loop = self._loop
        assert loop is not None, "AckingProducer.start() was not called"
        ticket = Ticket(loop.create_future(), keys, loop.time() + ACK_TIMEOUT_S)
        pending = self._pending
        with self._lock:
            for key in keys:
                held = pending.get(key)
                if held is None:
                    pending[key] = ticket
                elif isinstance(held, Ticket):
                    pending[key] = deque((held, ticket))
                else:
                    held.append(ticket)
        self._open.append(ticket)
        return ticket

    def _forget(self, ticket: Ticket, keys: Sequence[tuple[str, str]]) -> None:
        with self._lock:
            for key in keys:
                held = self._pending.get(key)
                if held is ticket:
                    del self._pending[key]
                elif isinstance(held, deque) and ticket in held:
                    held.remove(ticket)
                    if not held:
                        del self._pending[key]

    def _abandon(self, ticket: Ticket, first_unsent: int) -> None:
        """A send failed part-way: the request answers an error now; records already produced still
        report, into a cancelled ticket."""
        self._forget(ticket, ticket.keys[first_unsent:])
        ticket.future.cancel()

    async def _wait(self, ticket: Ticket) -> None:
        await ticket.future  # the watchdog sets an exception when it takes too long
        if ticket.error is not None:
            raise KafkaDeliveryError(f"Kafka did not accept a record: {ticket.error}")

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        topic = msg.topic() or ""
        ident = _identifier_of(topic == self._events_topic, msg.value())
        if ident is None:
            return
        key = (topic, ident)
        # Under the lock: reports can be served by the poll thread and by a send's own poll at once.
        with self._lock:
            held = self._pending.get(key)
            if held is None:
                return  # the request stopped waiting (timeout)
            if isinstance(held, Ticket):
                ticket = held
                del self._pending[key]
            else:
                ticket = held.popleft()
                if not held:
                    del self._pending[key]
            if err is not None and ticket.error is None:
                ticket.error = err.str()
            ticket.remaining -= 1
            if ticket.remaining:
                return
            if threading.get_ident() != self._loop_thread:
                self._completed.append(ticket)  # handed over after this poll (_hand_over)
                return
        ticket.resolve()  # served by a send() on the event loop itself
