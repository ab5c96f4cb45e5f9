"""Stripe's v2 billing endpoints (JSON both ways, ISO 8601 times): meter event sessions, the high-rate
meter event stream (authenticated by a session token, up to 100 events), single meter events and
adjustments."""

from __future__ import annotations

from aiohttp import web

from processor.emulator.api_v1 import EMULATOR
from processor.emulator.inputs import adjustment_input, event_input
from processor.emulator.meters import new_id
from processor.errors import InvalidRequestError
from processor.wire import json_response, meter_event_session, presented_key, read_params, reject_unknown
from processor.wire.times import format_iso

__all__ = ["STREAM_PATH", "routes"]

STREAM_PATH = "/v2/billing/meter_event_stream"
MAX_STREAM_EVENTS = 100
routes = web.RouteTableDef()


@routes.post("/v2/billing/meter_event_session")
async def create_session(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    reject_unknown(await read_params(request), ())
    session = emu.create_session()
    return json_response(meter_event_session(session.id, session.token, session.created, session.expires_at))


@routes.post(STREAM_PATH)
async def stream(request: web.Request) -> web.Response:
    """Refuse the batch for its request schema (its shape and each event's); every rule that needs the
    meter is then judged per event, asynchronously (Stripe: "processed asynchronously, including
    validation")."""
    emu = request.app[EMULATOR]
    emu.check_session(presented_key(request))
    params = await read_params(request)
    reject_unknown(params, ("events",))
    events = params.get("events")
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_STREAM_EVENTS:
        raise InvalidRequestError(
            f"events must be an array of 1 to {MAX_STREAM_EVENTS} meter events.",
            param="events",
            code="parameter_invalid_array" if isinstance(events, list) else "parameter_missing",
        )
    checked = []
    for i, raw in enumerate(events):
        # An event's own shape is Stripe's request schema (e.g. an identifier over 100 characters): the
        # whole request is refused, as Stripe's API layer does before anything is processed.
        if not isinstance(raw, dict):
            raise InvalidRequestError(f"events[{i}] must be an object.", param=f"events[{i}]")
        checked.append(event_input(raw, v2=True, prefix=("events", str(i))))
    for ev in checked:
        emu.record_event(ev, source="v2_stream", synchronous=False)
    emu.stats["stream_events"] += len(checked)
    return json_response({})


@routes.post("/v2/billing/meter_events")
async def create_meter_event(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    ev = event_input(await read_params(request), v2=True)
    identifier, timestamp = emu.record_event(ev, source="v2", synchronous=True)
    return json_response(
        {
            "object": "v2.billing.meter_event",
            "created": format_iso(emu.now()),
            "event_name": ev.event_name,
            "identifier": identifier,
            "livemode": False,
            "payload": dict(ev.payload),
            "timestamp": format_iso(timestamp),
        }
    )


@routes.post("/v2/billing/meter_event_adjustments")
async def create_meter_event_adjustment(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    event_name, identifier = adjustment_input(await read_params(request), v2=True)
    emu.cancel_event(event_name, identifier, source="v2")
    return json_response(
        {
            "id": new_id("mea_test_"),
            "object": "v2.billing.meter_event_adjustment",
            "cancel": {"identifier": identifier},
            "created": format_iso(emu.now()),
            "event_name": event_name,
            "livemode": False,
            "status": "pending",
            "type": "cancel",
        }
    )
