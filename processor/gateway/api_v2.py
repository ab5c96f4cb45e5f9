"""Stripe's v2 billing endpoints (JSON both ways, ISO 8601 times): meter event sessions, the high-rate
meter event stream (a session token instead of the API key, 1 to 100 events), single meter events and
cancellations.

The stream is asynchronous per event, as Stripe's: a batch is refused (400, nothing written) only for its
own shape (not a list, over 100 events); an event invalid on its own goes to ``meter-event-errors`` with
its code and the rest is recorded. A 200 means every record of the batch is acknowledged by Kafka.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web

from processor.errors import EventValidationError, InvalidRequestError
from processor.events.schema import parse_cancel_object
from processor.gateway.idempotency import request_claim, request_key
from processor.gateway.meter_events import checked_event, checked_stream
from processor.gateway.state import GATEWAY
from processor.wire import (
    format_iso,
    json_response,
    meter_event_session,
    param_name,
    parse_iso,
    presented_key,
    read_params,
    reject_unknown,
)

__all__ = ["MAX_STREAM_EVENTS", "STREAM_PATH", "routes"]

STREAM_PATH = "/v2/billing/meter_event_stream"
MAX_STREAM_EVENTS = 100
_EVENT_FIELDS = ("event_name", "payload", "identifier", "timestamp")
routes = web.RouteTableDef()


def _timestamp(raw: Any, prefix: tuple[str, ...]) -> int | None:
    if raw is None:
        return None
    try:
        return parse_iso(raw)
    except (ValueError, TypeError, OverflowError):
        name = param_name(*prefix, "timestamp") if prefix else "timestamp"
        raise EventValidationError(
            f"Invalid {name}: must be an ISO 8601 date-time such as 2024-06-18T12:00:00.000Z",
            param=name,
            code="parameter_invalid_string",
        ) from None


def _prefixed(err: InvalidRequestError, prefix: tuple[str, ...]) -> InvalidRequestError:
    """``err`` with its param moved under ``events[i]`` (``payload[value]`` → ``events[3][payload][value]``)."""
    if err.param is None or err.param.startswith(prefix[0] + "["):
        return err
    head, bracket, rest = err.param.partition("[")
    name = param_name(*prefix, head) + (bracket + rest if bracket else "")
    return EventValidationError(f"{param_name(*prefix)}: {err.message}", param=name, code=err.code)


@routes.post("/v2/billing/meter_event_session")
async def create_session(request: web.Request) -> web.Response:
    reject_unknown(await read_params(request), ())
    key = presented_key(request)  # the guard accepted it; the session is bound to it (revoked with it)
    assert key is not None
    session = await request.app[GATEWAY].sessions.create(key)
    return json_response(meter_event_session(session.id, session.token, session.created, session.expires_at))


@routes.post(STREAM_PATH)
async def stream(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    await gw.sessions.check(presented_key(request))
    params = await read_params(request)
    reject_unknown(params, ("events",))
    events = params.get("events")
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_STREAM_EVENTS:
        raise InvalidRequestError(
            f"events must be an array of 1 to {MAX_STREAM_EVENTS} meter events.",
            param="events",
            code="parameter_invalid_array" if isinstance(events, list) else "parameter_missing",
        )

    def timestamp_of(raw: dict[str, Any], i: int) -> int | None:
        reject_unknown(raw, _EVENT_FIELDS, prefix=("events", str(i)))
        return _timestamp(raw.get("timestamp"), ("events", str(i)))

    checked, rejected = await checked_stream(
        gw,
        events,
        timestamp_of,
        idempotency_key=request_key(request),
        prefix_error=lambda err, i: _prefixed(err, ("events", str(i))),
    )
    if rejected:
        await gw.stream_errors.send(rejected)
        gw.metrics.count_events("v2_stream", "invalid", len(rejected))
    if not checked:
        return json_response({})
    await gw.publish("v2_stream", checked)
    return json_response({})


@routes.post("/v2/billing/meter_events")
async def create_meter_event(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    params = await read_params(request)
    reject_unknown(params, _EVENT_FIELDS)
    ev = await checked_event(gw, params, _timestamp(params.get("timestamp"), ()), claim=request_claim(request))
    await gw.publish("v2", [ev])
    return json_response(
        {
            "object": "v2.billing.meter_event",
            "created": format_iso(time.time()),
            "event_name": ev.event_name,
            "identifier": ev.identifier,
            "livemode": False,
            "payload": dict(ev.payload),
            "timestamp": format_iso(ev.timestamp),
        }
    )


@routes.post("/v2/billing/meter_event_adjustments")
async def create_meter_event_adjustment(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    value = parse_cancel_object(await read_params(request))
    identifier = value["cancel"]["identifier"]
    await gw.publish_cancel("v2", value["event_name"], identifier)
    return json_response(
        {
            "id": "mea_" + secrets.token_hex(12),
            "object": "v2.billing.meter_event_adjustment",
            "cancel": {"identifier": identifier},
            "created": format_iso(time.time()),
            "event_name": value["event_name"],
            "livemode": False,
            "status": "pending",
            "type": "cancel",
        }
    )
