"""Stripe's v1 billing-meter endpoints over meterstream: meters through the registry (the compacted
``meters`` topic), events and cancellations into Kafka, summaries from Redis.

Events are checked for their *shape* here (Stripe's request schema, :mod:`processor.events.schema`) and
answered once Kafka acknowledged them; what needs the meter (unknown event_name, bad value, timestamp
window, duplicates) is judged by the processor and reported on ``meter-event-errors``, the way Stripe
reports it asynchronously. One difference, documented in docs/http-api.md: an event whose payload lacks
the customer key is refused at once (400 ``parameter_missing``), because the topic is keyed by customer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from processor.errors import EventValidationError
from processor.events.schema import parse_cancel_object, validate_event
from processor.gateway.ingest import EventIn, fill_event
from processor.gateway.state import GATEWAY, Gateway
from processor.gateway.summaries import list_event_summaries
from processor.limits import customer_problem
from processor.wire import (
    as_mapping,
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
    return json_response((await asyncio.to_thread(gw.registry.deactivate, request.match_info["id"])).to_dict())


@routes.post("/v1/billing/meters/{id}/reactivate")
async def reactivate_meter(request: web.Request) -> web.Response:
    gw = _gw(request)
    reject_unknown(await read_params(request), ("expand",))
    return json_response((await asyncio.to_thread(gw.registry.reactivate, request.match_info["id"])).to_dict())


@routes.get("/v1/billing/meters/{id}/event_summaries")
async def event_summaries(request: web.Request) -> web.Response:
    params = await read_params(request)
    return json_response(await list_event_summaries(_gw(request), request.match_info["id"], params))


# ---- events ---------------------------------------------------------------------------------------
async def checked_event(gw: Gateway, params: Mapping[str, Any], timestamp: int | None) -> EventIn:
    """One event's shape checked (Stripe's messages and params), identifier and timestamp filled."""
    value = validate_event(
        params.get("event_name"), as_mapping(params.get("payload")), params.get("identifier"), timestamp
    )
    customer_key = gw.known_customer_key(value["event_name"]) or await gw.customer_key(value["event_name"])
    if value["payload"].get(customer_key) in (None, ""):
        # Checked here, not only by the producer, so a v2 stream batch fails before any of it is produced.
        raise EventValidationError(
            f"Customer mapping key {customer_key} not found in payload.",
            param=f"payload[{customer_key}]",
            code="parameter_missing",
        )
    problem = customer_problem(str(value["payload"][customer_key]))
    if problem is not None:  # the processor refuses the same customer ids (processor/limits.py)
        raise EventValidationError(
            f"Invalid payload[{customer_key}]: the customer id {problem}.", param=f"payload[{customer_key}]"
        )
    return fill_event(
        value["event_name"], value["payload"], value.get("identifier"), value.get("timestamp"), customer_key
    )


@routes.post("/v1/billing/meter_events")
async def create_meter_event(request: web.Request) -> web.Response:
    gw = _gw(request)
    params = await read_params(request)
    reject_unknown(params, ("event_name", "payload", "identifier", "timestamp", "expand"))
    ev = await checked_event(gw, params, get_int(params, "timestamp"))
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
