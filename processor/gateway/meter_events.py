"""What the gateway does with one meter event before publishing it: the request's shape
(:mod:`processor.events.schema`), then the processor's rules (:mod:`processor.gateway.rules`), then the
identifier.

- v1 and v2 ``meter_events`` (:func:`checked_event`): any problem is a 400, and an
  identifier an accepted event of the last 24 h holds is Stripe's duplicate 400.
- the v2 stream (:func:`checked_stream`): a problem of one event sends that event to ``meter-event-errors``
  with its code (:class:`~processor.gateway.stream_errors.ErrorPublisher`); the others are recorded.
  Duplicates are left to the processor, which drops them silently, as Stripe's stream does.

An event without ``identifier`` gets the one derived from the request's ``Idempotency-Key`` and its
position (:func:`processor.gateway.idempotency.derived_identifier`), so a retried request cannot count
twice; without a key, a new UUID4 (Stripe: "one is generated").
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from processor.errors import InvalidRequestError
from processor.events.schema import check_event_shape
from processor.gateway.idempotency import Claim, derived_identifier
from processor.gateway.ingest import EventIn
from processor.gateway.rules import error_record, judge
from processor.gateway.state import Gateway
from processor.meters import Meter
from processor.wire import as_mapping

__all__ = ["checked_event", "checked_stream"]

#: A malformed stream event whose error carries no Stripe code (a type error, not an object): the code
#: the processor gives a malformed record, so the error topic has one code for one case.
MALFORMED = "invalid_event"


async def _meter(gw: Gateway, event_name: str) -> Meter | None:
    fresh, meter = gw.meter_cache.fresh(event_name)
    return meter if fresh else await gw.meter_cache.get(event_name)


def _shape(params: Mapping[str, Any], timestamp: int | None) -> dict[str, Any]:
    return check_event_shape(
        params.get("event_name"), as_mapping(params.get("payload")), params.get("identifier"), timestamp
    )


def _judged(value: dict[str, Any], meter: Meter | None, now: int, idempotency_key: str | None, index: int) -> EventIn:
    """The processor's rules on a shape-checked event, then its identifier (given, derived or new)."""
    name: str = value["event_name"]
    payload: dict[str, Any] = value["payload"]
    ts: int = value.get("timestamp", now)
    judge(name, meter, payload, ts, now)
    assert meter is not None
    identifier: str | None = value.get("identifier")
    if identifier is None:
        identifier = derived_identifier(idempotency_key, index) if idempotency_key else str(uuid.uuid4())
    return EventIn(name, payload, identifier, ts, meter.customer_key)


async def checked_event(
    gw: Gateway, params: Mapping[str, Any], timestamp: int | None, *, claim: Claim | None = None
) -> EventIn:
    """One event of v1/v2 ``meter_events`` checked (shape, the processor's rules, the duplicate answer),
    identifier and timestamp filled; a problem raises :class:`~processor.errors.InvalidRequestError`
    (Stripe's code, message and ``param``). The request's Idempotency-Key (``claim``) is claimed here, once
    the event passed its rules, in the same Redis call as the duplicate check (:meth:`Judge.admit`)."""
    value = _shape(params, timestamp)
    meter = await _meter(gw, value["event_name"])
    ev = _judged(value, meter, int(time.time()), None if claim is None else claim.key, 0)
    assert meter is not None
    await gw.judge.admit(meter, ev.identifier if "identifier" in value else None, claim)
    return ev


async def checked_stream(
    gw: Gateway,
    events: Sequence[Any],
    timestamp_of: Any,
    *,
    idempotency_key: str | None,
    prefix_error: Any,
) -> tuple[list[EventIn], list[tuple[str | None, bytes]]]:
    """The valid events of a stream batch and the error records of the others.

    ``timestamp_of(raw, i)`` parses an event's ISO timestamp (raising its 400); ``prefix_error(err, i)``
    names the event's own ``events[i]`` param in the message."""
    good: list[EventIn] = []
    bad: list[tuple[str | None, bytes]] = []
    now = int(time.time())
    cache = gw.meter_cache
    for i, raw in enumerate(events):
        try:
            if not isinstance(raw, dict):
                raise InvalidRequestError(f"events[{i}] must be an object.", param=f"events[{i}]")
            value = _shape(raw, timestamp_of(raw, i))
            fresh, meter = cache.fresh(value["event_name"])
            if not fresh:
                meter = await cache.get(value["event_name"])
            good.append(_judged(value, meter, now, idempotency_key, i))
        except InvalidRequestError as exc:
            bad.append(_error_for(gw, raw, prefix_error(exc, i), now * 1000, idempotency_key, i))
    return good, bad


def _error_for(
    gw: Gateway, raw: Any, err: InvalidRequestError, received_ms: int, idempotency_key: str | None, index: int
) -> tuple[str | None, bytes]:
    event = raw if isinstance(raw, dict) else {"value": raw}
    name = event.get("event_name")
    fresh, meter = gw.meter_cache.fresh(name) if isinstance(name, str) else (False, None)
    payload = event.get("payload")
    customer = None
    if meter is not None and isinstance(payload, dict):
        found = payload.get(meter.customer_key)
        customer = found if isinstance(found, str) and found else None
    identifier = event.get("identifier")
    if not isinstance(identifier, str) or not identifier:
        # the identifier the event would have had, so `meterstream errors replay` can resend it once
        identifier = derived_identifier(idempotency_key, index) if idempotency_key else str(uuid.uuid4())
    value = error_record(
        err.code or MALFORMED,
        err.message,
        event,
        source="gateway:v2_stream",
        received_ms=received_ms,
        meter_id=meter.id if meter is not None and fresh else None,
        identifier=identifier,
    )
    return customer, value
