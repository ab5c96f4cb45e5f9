"""``/_emulator/*``: the test-control endpoints (JSON, no API key — the emulator is a local tool).

``GET|POST /_emulator/faults``  read / change fault injection (partial JSON update)
``POST /_emulator/reset``        forget all state, clock offset 0, faults back to the startup flags
``GET|POST /_emulator/clock``    read / move the clock: ``{"advance": seconds}``, ``{"set": unix}``,
                                 ``{"freeze": true|false}``
``GET /_emulator/events``        the log of accepted events and cancellations (``meter`` or ``event_name``,
                                 optional ``customer``), for end-to-end checks such as "no identifier
                                 billed twice" and "each cancellation after its event"
``GET /_emulator/errors``        asynchronous errors (optional ``code``)
``GET /_emulator/stats``         counters (requests, faults, duplicates, replays, ...)
``GET /_emulator/health``        liveness
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from processor.emulator.api_v1 import EMULATOR
from processor.emulator.faults import FaultConfig, Faults
from processor.emulator.ledger import MeterLedger
from processor.errors import InvalidRequestError
from processor.wire import json_response

__all__ = ["FAULTS", "INITIAL_FAULTS", "routes"]

FAULTS = web.AppKey("faults", Faults)
INITIAL_FAULTS = web.AppKey("initial_faults", FaultConfig)
routes = web.RouteTableDef()


async def _json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidRequestError("The body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The body must be a JSON object.")
    return body


@routes.get("/_emulator/health")
async def health(request: web.Request) -> web.Response:
    return json_response({"ok": True})


@routes.get("/_emulator/faults")
async def get_faults(request: web.Request) -> web.Response:
    return json_response(request.app[FAULTS].config.to_dict())


@routes.post("/_emulator/faults")
async def set_faults(request: web.Request) -> web.Response:
    faults = request.app[FAULTS]
    faults.configure(faults.config.updated(await _json(request)))
    return json_response(faults.config.to_dict())


@routes.post("/_emulator/reset")
async def reset(request: web.Request) -> web.Response:
    request.app[EMULATOR].reset()
    request.app[FAULTS].configure(request.app[INITIAL_FAULTS])
    return json_response({"ok": True})


def _clock_state(request: web.Request) -> dict[str, object]:
    clock = request.app[EMULATOR].clock
    return {"now": clock.now(), "offset": clock.offset, "frozen": clock.frozen}


@routes.get("/_emulator/clock")
async def get_clock(request: web.Request) -> web.Response:
    return json_response(_clock_state(request))


@routes.post("/_emulator/clock")
async def move_clock(request: web.Request) -> web.Response:
    """``{"freeze": bool}``, ``{"set": unix}``, ``{"advance": seconds}``, or a combination (applied in
    that order, so ``{"freeze": true, "set": T}`` stops time exactly at ``T``)."""
    body = await _json(request)
    clock = request.app[EMULATOR].clock
    if not body or set(body) - {"advance", "set", "freeze"}:
        raise InvalidRequestError('Send {"set": unix_seconds}, {"advance": seconds} and/or {"freeze": true|false}.')
    for key in ("advance", "set"):
        value = body.get(key)
        if key in body and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise InvalidRequestError(f"{key} must be a number of seconds", param=key)
    if "freeze" in body:
        if not isinstance(body["freeze"], bool):
            raise InvalidRequestError("freeze must be true or false", param="freeze")
        clock.freeze(body["freeze"])
    if "set" in body:
        clock.set(float(body["set"]))
    if "advance" in body:
        clock.advance(float(body["advance"]))
    return json_response(_clock_state(request))


@routes.get("/_emulator/events")
async def events(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    meter_id = request.query.get("meter")
    event_name = request.query.get("event_name")
    customer = request.query.get("customer")
    if meter_id:
        meter = emu.meters.get(meter_id)
    elif event_name:
        found = emu.meters.for_event_name(event_name)
        if found is None:
            raise InvalidRequestError(f"No meter has event_name {event_name!r}.", param="event_name")
        meter = found
    else:
        raise InvalidRequestError("Pass meter=<meter id> or event_name=<event name>.", param="meter")
    ledger: MeterLedger = emu.ledger(meter)
    logged = [ev.to_dict() for ev in ledger.events if customer is None or ev.customer == customer]
    cancellations = [c.to_dict() for c in ledger.cancellations]
    return json_response(
        {"meter": meter.id, "event_name": meter.event_name, "events": logged, "cancellations": cancellations}
    )


@routes.get("/_emulator/errors")
async def errors(request: web.Request) -> web.Response:
    code = request.query.get("code")
    found = [e.to_dict() for e in request.app[EMULATOR].errors if code is None or e.code == code]
    return json_response({"errors": found})


@routes.get("/_emulator/stats")
async def stats(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    return json_response({"stats": dict(emu.stats), "meters": len(emu.meters), "customers": len(emu.customers)})
