"""The emulated Stripe account: meters, customers, counted events, sessions, idempotency keys, errors.

Everything lives in memory and is mutated only from the server's event loop, so no locking is needed
(handlers never ``await`` between reading and writing state).

Which event checks are synchronous (a 400 answer) and which asynchronous (a 200 answer, the event not
counted, an error kept for ``GET /_emulator/errors`` and reported to event destinations as Stripe's
error reports, processor/emulator/notifications.py) follows Stripe's documentation as far as it goes:

- ``POST /v1/billing/meter_events`` and ``/v2/billing/meter_events`` ("validated synchronously"): an
  unknown or inactive meter, a missing customer key, the value, its digits, the timestamp window (in that
  order, the processor's) and a duplicate identifier answer 400 with the Stripe code, ``param`` and
  ``Stripe-Should-Retry: false`` — as the meterstream gateway does;
- ``POST /v2/billing/meter_event_stream`` ("processed asynchronously, including validation"): every
  per-event rule that needs the meter is asynchronous and a duplicate is dropped silently; the request
  schema (an event's own shape too) is checked first, a 400 for the whole request, as Stripe's API layer;
- an unknown customer: accepted and the customer created implicitly, or — with ``strict_customers`` —
  reported as ``meter_event_customer_not_found`` and not counted, as real Stripe does.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processor.emulator.clock import Clock
from processor.emulator.ledger import Cancellation, LedgerEvent, MeterLedger
from processor.emulator.meters import EmulatorMeters, new_id
from processor.emulator.notifications import DEFAULT_WINDOW_S, Notifications
from processor.emulator.values import ValueProblem, parse_value
from processor.errors import (
    AuthenticationFailedError,
    DuplicateEventError,
    EventValidationError,
    ResourceMissingError,
    SessionExpiredError,
)
from processor.meters.model import Meter

__all__ = ["AsyncError", "Emulator", "EventInput", "SavedResponse"]

PAST_LIMIT = 35 * 86400
FUTURE_LIMIT = 300
SESSION_TTL = 900
IDEMPOTENCY_TTL = 86400
MAX_ERRORS = 100_000


@dataclass(frozen=True)
class EventInput:
    """A meter event after its request shape was checked (types, lengths), before any rule."""

    event_name: str
    payload: Mapping[str, Any]
    identifier: str | None
    timestamp: int | None


@dataclass(frozen=True)
class AsyncError:
    code: str
    message: str
    event_name: str
    identifier: str | None
    received: float
    source: str

    def to_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "event_name": self.event_name,
            "identifier": self.identifier,
            "received": self.received,
            "source": self.source,
        }


@dataclass(frozen=True)
class SavedResponse:
    """A POST's answer kept under its Idempotency-Key, replayed for the same key and the same request."""

    fingerprint: bytes
    status: int
    body: bytes
    saved: float


@dataclass(frozen=True)
class Session:
    id: str
    token: str
    created: float
    expires_at: float


class Emulator:
    def __init__(
        self, *, clock: Clock | None = None, strict_customers: bool = False, report_window_s: float = DEFAULT_WINDOW_S
    ) -> None:
        self.clock = clock or Clock()
        self.strict_customers = strict_customers
        self.report_window_s = report_window_s
        self.reset()

    def reset(self) -> None:
        """Forget everything (the clock offset too)."""
        self.clock.reset()
        self.meters = EmulatorMeters()
        self.ledgers: dict[str, MeterLedger] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, Session] = {}
        self._session_order: deque[Session] = deque()
        self.idempotency: dict[str, SavedResponse] = {}
        self._idempotency_order: deque[tuple[str, float]] = deque()
        self.errors: deque[AsyncError] = deque(maxlen=MAX_ERRORS)
        self.stats: Counter[str] = Counter()
        self.notifications = Notifications(self.report_window_s)
        self._seq = 0

    def now(self) -> float:
        return self.clock.now()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- meters ------------------------------------------------------------------------------------
    def ledger(self, meter: Meter) -> MeterLedger:
        ledger = self.ledgers.get(meter.id)
        if ledger is None:
            ledger = self.ledgers[meter.id] = MeterLedger(meter.id, meter.formula, meter.event_time_window)
        return ledger

    # -- customers ---------------------------------------------------------------------------------
    def create_customer(self, params: Mapping[str, Any], customer_id: str | None = None) -> dict[str, Any]:
        metadata = params.get("metadata")
        cid = customer_id or new_id("cus_", 14)
        customer: dict[str, Any] = {
            "id": cid,
            "object": "customer",
            "created": int(self.now()),
            "description": params.get("description"),
            "email": params.get("email"),
            "livemode": False,
            "metadata": metadata if isinstance(metadata, dict) else {},
            "name": params.get("name"),
            "phone": params.get("phone"),
        }
        self.customers[cid] = customer
        return customer

    def customer(self, customer_id: str) -> dict[str, Any]:
        customer = self.customers.get(customer_id)
        if customer is None:
            raise ResourceMissingError(f"No such customer: '{customer_id[:100]}'", param="id")
        return customer

    # -- events ------------------------------------------------------------------------------------
    def _async_error(self, code: str, message: str, ev: EventInput, identifier: str | None, source: str) -> None:
        received = self.now()
        self.errors.append(AsyncError(code, message, ev.event_name, identifier, received, source))
        self.stats["async_errors"] += 1
        meter = self.meters.for_event_name(ev.event_name)  # an archived meter's errors are its own
        meter_id = None if meter is None else meter.id
        self.notifications.error(
            code=code, message=message, identifier=identifier, meter_id=meter_id, received=received
        )

    def record_event(self, ev: EventInput, *, source: str, synchronous: bool) -> tuple[str, int]:
        """Apply Stripe's rules to one event; returns its identifier and timestamp (what the API echoes).

        With ``synchronous``, a bad timestamp or value and a duplicate raise :class:`InvalidRequestError`
        (the request is answered 400). Everything else, and everything when not ``synchronous``, is kept
        as an asynchronous error and the event is not counted.
        """
        now = self.now()
        identifier = ev.identifier or f"emu_{uuid.uuid4().hex}"
        timestamp = int(now) if ev.timestamp is None else ev.timestamp

        def reject(code: str, message: str, param: str) -> tuple[str, int]:
            if synchronous:
                raise EventValidationError(message, param=param, code=code)
            self._async_error(code, message, ev, identifier, source)
            return identifier, timestamp

        # Stripe's order, the processor's too (docs/semantics.md): meter, customer, value, timestamp.
        meter = self.meters.for_event_name(ev.event_name)
        if meter is None:
            return reject("no_meter", f"No active meter was found for event_name {ev.event_name}.", "event_name")
        if not meter.active:
            message = f"The meter {meter.id} for event_name {ev.event_name} is inactive."
            return reject("archived_meter", message, "event_name")
        customer = ev.payload.get(meter.customer_key)
        if isinstance(customer, int) and not isinstance(customer, bool):
            customer = str(customer)
        if not isinstance(customer, str) or not customer:
            message = f"Customer mapping key {meter.customer_key} not found in payload."
            return reject("meter_event_no_customer_defined", message, f"payload[{meter.customer_key}]")
        value = 0
        if meter.formula != "count":  # count meters never read the value key
            try:
                if meter.value_key not in ev.payload:
                    raise ValueProblem(
                        "meter_event_invalid_value", f"Value key {meter.value_key} not found in payload."
                    )
                value = parse_value(ev.payload[meter.value_key], meter.value_key)
            except ValueProblem as bad:
                return reject(bad.code, bad.message, f"payload[{meter.value_key}]")
        bad_time = _timestamp_problem(timestamp, now)
        if bad_time is not None:
            return reject(*bad_time, "timestamp")
        ledger = self.ledger(meter)
        if ledger.holder(identifier, now) is not None:
            self.stats["duplicates"] += 1
            if synchronous:
                raise DuplicateEventError(identifier)
            return identifier, timestamp
        if customer not in self.customers:
            if self.strict_customers:
                message = f"No customer found with id {customer[:100]}."
                self._async_error("meter_event_customer_not_found", message, ev, identifier, source)
                return identifier, timestamp
            self.create_customer({}, customer_id=customer)
        ledger.accept(LedgerEvent(self._next_seq(), identifier, customer, value, timestamp, now, source))
        self.stats["events_accepted"] += 1
        return identifier, timestamp

    def cancel_event(self, event_name: str, identifier: str, *, source: str) -> Cancellation | None:
        """Cancel an event; an unknown event_name is an asynchronous ``no_meter`` error (``None``)."""
        meter = self.meters.for_event_name(event_name)
        if meter is None:
            self._async_error(
                "no_meter",
                f"No active meter was found for event_name {event_name}.",
                EventInput(event_name, {}, identifier, None),
                identifier,
                source,
            )
            return None
        record = self.ledger(meter).cancel(identifier, self.now(), self._next_seq(), source)
        self.stats[f"cancellations_{record.result}"] += 1
        return record

    # -- v2 sessions -------------------------------------------------------------------------------
    def create_session(self) -> Session:
        now = self.now()
        while self._session_order and self._session_order[0].expires_at + SESSION_TTL < now:
            old = self._session_order.popleft()
            self.sessions.pop(old.token, None)
        session = Session(new_id("mes_test_"), new_id("mes_tok_", 32), now, now + SESSION_TTL)
        self.sessions[session.token] = session
        self._session_order.append(session)
        return session

    def check_session(self, token: str | None) -> Session:
        """The session of a stream request's bearer token: 401, or the expired-session 401."""
        session = None if token is None else self.sessions.get(token)
        if session is None:
            raise AuthenticationFailedError(
                "Invalid or missing meter event session token. Create a session with "
                "POST /v2/billing/meter_event_session and send its authentication_token as a Bearer token."
            )
        if self.now() >= session.expires_at:
            raise SessionExpiredError()
        return session

    # -- idempotency -------------------------------------------------------------------------------
    @staticmethod
    def fingerprint(method: str, path: str, body: bytes) -> bytes:
        return hashlib.blake2b(method.encode() + b" " + path.encode() + b"\n" + body, digest_size=16).digest()

    def saved_response(self, key: str) -> SavedResponse | None:
        now = self.now()
        order = self._idempotency_order
        while order and now - order[0][1] > IDEMPOTENCY_TTL:
            old_key, saved_at = order.popleft()
            saved = self.idempotency.get(old_key)
            if saved is not None and saved.saved == saved_at:
                del self.idempotency[old_key]
        return self.idempotency.get(key)

    def save_response(self, key: str, fingerprint: bytes, status: int, body: bytes) -> None:
        now = self.now()
        self.idempotency[key] = SavedResponse(fingerprint, status, body, now)
        self._idempotency_order.append((key, now))


def _timestamp_problem(timestamp: int, now: float) -> tuple[str, str] | None:
    """Stripe's window: within the past 35 days and at most 5 minutes ahead of the received time."""
    if timestamp < int(now) - PAST_LIMIT:
        return "timestamp_too_far_in_past", "Timestamp must be within the past 35 days."
    if timestamp > int(now) + FUTURE_LIMIT:
        return "timestamp_in_future", "Timestamp must not be more than 5 minutes in the future."
    return None
