"""Stripe's v1 billing-meter endpoints over meterstream: meters through the registry (the compacted
``meters`` topic), events and cancellations into Kafka, summaries from Redis.

Events are judged at once, the way Stripe answers its synchronous meter-event API: the request's shape
(:mod:`processor.events.schema`) and the processor's own rules (:mod:`processor.gateway.meter_events`)
refuse with a 400 and Stripe's code; an accepted event is answered once Kafka acknowledged it. The
processor judges every record again and stays the authority.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from processor.events.schema import parse_cancel_object
from processor.gateway.idempotency import request_claim
from processor.gateway.meter_events import checked_event
from processor.gateway.state import GATEWAY, Gateway
from processor.gateway.summaries import list_event_summaries
from processor.wire import (
    get_enum,
    get_int,
    get_str,
    json_response,
    list_object,
    read_params,
    reject_unknown,
)

__all__ = ["checked_event", "routes"]

routes = web.RouteTableDef()


def _gw(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


# ---- meters ---------------------------------------------------------------------------------------
@routes.post("/v1/billing/meters")
async def create_meter(request: web.Request) -> web.Response:
    gw = _gw(request)
    meter = await asyncio.to_thread(gw.registry.create, await read_params(request))
    gw.meter_cache.put(meter)
    return json_response(meter.to_dict())


@routes.get("/v1/billing/meters")
async def list_meters(request: web.Request) -> web.Response:
    gw = _gw(request)
    params = await read_params(request)
    reject_unknown(params, ("status", "limit", "starting_after", "ending_before", "expand"))
    status = get_enum(params, "status", ("active", "inactive"))
    limit = get_int(params, "limit", minimum=1, maximum=100)
    after = get_str(params, "starting_after", max_length=5000)
    before = get_str(params, "ending_before", max_length=5000)
    meters, more = await asyncio.to_thread(gw.registry.list, status, 10 if limit is None else limit, after, before)
    return json_response(list_object([m.to_dict() for m in meters], has_more=more, url="/v1/billing/meters"))


@routes.get("/v1/billing/meters/{id}")
async def retrieve_meter(request: web.Request) -> web.Response:
    reject_unknown(await read_params(request), ("expand",))
    return json_response((await _gw(request).meter(request.match_info["id"])).to_dict())


@routes.post("/v1/billing/meters/{id}")
async def update_meter(request: web.Request) -> web.Response:
    gw = _gw(request)
    params = await read_params(request)
    meter = await asyncio.to_thread(gw.registry.update, request.match_info["id"], params)
    return json_response(meter.to_dict())


@routes.post("/v1/billing/meters/{id}/deactivate")
async def deactivate_meter(request: web.Request) -> web.Response:
    gw = _gw(request)
    reject_unknown(await read_params(request), ("expand",))
    meter = await asyncio.to_thread(gw.registry.deactivate, request.match_info["id"])
    gw.meter_cache.put(meter)
    return json_response(meter.to_dict())


@routes.post("/v1/billing/meters/{id}/reactivate")
async def reactivate_meter(request: web.Request) -> web.Response:
    gw = _gw(request)
    reject_unknown(await read_params(request), ("expand",))
    meter = await asyncio.to_thread(gw.registry.reactivate, request.match_info["id"])
    gw.meter_cache.put(meter)
    return json_response(meter.to_dict())


@routes.get("/v1/billing/meters/{id}/event_summaries")
async def event_summaries(request: web.Request) -> web.Response:
    params = await read_params(request)
    return json_response(await list_event_summaries(_gw(request), request.match_info["id"], params))


# ---- events ---------------------------------------------------------------------------------------
@routes.post("/v1/billing/meter_events")
async def create_meter_event(request: web.Request) -> web.Response:
    gw = _gw(request)
    params = await read_params(request)
    reject_unknown(params, ("event_name", "payload", "identifier", "timestamp", "expand"))
    ev = await checked_event(gw, params, get_int(params, "timestamp"), claim=request_claim(request))
    await gw.publish("v1", [ev])
    return json_response(
        {
            "object": "billing.meter_event",
            "created": int(time.time()),
            "event_name": ev.event_name,
            "identifier": ev.identifier,
            "livemode": False,
            "payload": dict(ev.payload),
            "timestamp": ev.timestamp,
        }
    )


@routes.post("/v1/billing/meter_event_adjustments")
async def create_meter_event_adjustment(request: web.Request) -> web.Response:
    gw = _gw(request)
    params = dict(await read_params(request))
    params.pop("expand", None)
    value = parse_cancel_object(params)
    identifier = value["cancel"]["identifier"]
    await gw.publish_cancel("v1", value["event_name"], identifier)
    return json_response(
        {
            "object": "billing.meter_event_adjustment",
            "cancel": {"identifier": identifier},
            "event_name": value["event_name"],
            "livemode": False,
            "status": "pending",
            "type": "cancel",
        }
    )
