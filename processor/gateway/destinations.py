"""Stripe's event destinations and v2 events, for the error reports ``meterstream notifier`` delivers
(docs/notifications.md):

- ``POST /v2/core/event_destinations`` — ``type: webhook_endpoint``, ``event_payload: thin``,
  ``enabled_events`` among ``v1.billing.meter.error_report_triggered`` and
  ``v1.billing.meter.no_meter_found``, ``webhook_endpoint.url``; answers the destination, with its
  ``whsec_`` signing secret when ``include`` asks for ``webhook_endpoint.signing_secret`` (as Stripe's);
- ``GET /v2/core/event_destinations``, ``GET|DELETE /v2/core/event_destinations/{id}``;
- ``GET /v2/core/events/{id}`` — the full event (``data`` with ``reason.error_types``), kept 30 days.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

from aiohttp import web

from processor.errors import ResourceMissingError
from processor.gateway.state import GATEWAY
from processor.notify.destinations import checked_create, destination_object, include_of, new_destination
from processor.state.keys import notify_destinations, notify_event
from processor.wire import format_iso, json_response, read_params

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.post("/v2/core/event_destinations")
async def create_destination(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    params, include = checked_create(await read_params(request))
    stored = new_destination(params, format_iso(time.time()))
    await gw.redis.hset(notify_destinations(gw.settings.redis_prefix), stored["id"], json.dumps(stored))
    return json_response(destination_object(stored, include))


@routes.get("/v2/core/event_destinations")
async def list_destinations(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    raw = cast(dict[str, str], await gw.redis.hgetall(notify_destinations(gw.settings.redis_prefix)))
    found = sorted((json.loads(v) for v in raw.values()), key=lambda d: (d["created"], d["id"]), reverse=True)
    include = include_of(request.query.items())
    data = [destination_object(d, include) for d in found]
    return json_response({"data": data, "next_page_url": None, "previous_page_url": None})


async def _stored(request: web.Request) -> dict[str, Any]:
    gw = request.app[GATEWAY]
    dest_id = request.match_info["id"]
    raw = cast(str | None, await gw.redis.hget(notify_destinations(gw.settings.redis_prefix), dest_id))
    if raw is None:
        raise ResourceMissingError(f"No such event destination: '{dest_id[:100]}'", param="id")
    return cast(dict[str, Any], json.loads(raw))


@routes.get("/v2/core/event_destinations/{id}")
async def retrieve_destination(request: web.Request) -> web.Response:
    return json_response(destination_object(await _stored(request), include_of(request.query.items())))


@routes.delete("/v2/core/event_destinations/{id}")
async def delete_destination(request: web.Request) -> web.Response:
    stored = await _stored(request)
    gw = request.app[GATEWAY]
    await gw.redis.hdel(notify_destinations(gw.settings.redis_prefix), stored["id"])
    return json_response({"id": stored["id"], "object": "v2.core.event_destination", "deleted": True})


@routes.get("/v2/core/events/{id}")
async def retrieve_event(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    event_id = request.match_info["id"]
    raw = cast(str | None, await gw.redis.get(notify_event(gw.settings.redis_prefix, event_id)))
    if raw is None:
        raise ResourceMissingError(f"No such event: '{event_id[:100]}'", param="id")
    return web.Response(text=raw, content_type="application/json")
