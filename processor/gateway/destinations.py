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
from urllib.parse import urlsplit

from aiohttp import web

from processor.errors import InvalidRequestError, ResourceMissingError
from processor.gateway.state import GATEWAY
from processor.notify.reports import EVENT_TYPES
from processor.notify.store import destination_object, new_destination
from processor.state.keys import notify_destinations, notify_event
from processor.wire import format_iso, get_str, json_response, read_params, reject_unknown

__all__ = ["routes"]

routes = web.RouteTableDef()
_FIELDS = (
    "name",
    "description",
    "type",
    "event_payload",
    "enabled_events",
    "webhook_endpoint",
    "include",
    "metadata",
    "events_from",
)
_INCLUDES = frozenset({"webhook_endpoint.signing_secret", "webhook_endpoint.url"})


def _invalid(message: str, param: str, code: str = "parameter_invalid_string") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def _string_list(params: dict[str, Any], name: str, allowed: frozenset[str] | tuple[str, ...]) -> list[str]:
    raw = params.get(name)
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise _invalid(f"Invalid {name}: must be an array of strings.", name, "parameter_invalid_array")
    for i, item in enumerate(raw):
        if item not in allowed:
            raise _invalid(f"Invalid {name}[{i}]: must be one of {', '.join(sorted(allowed))}.", f"{name}[{i}]")
    return cast(list[str], raw)


def _checked_create(params: dict[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    reject_unknown(params, _FIELDS)
    get_str(params, "name", required=True, max_length=5000)
    get_str(params, "description", max_length=5000)
    if get_str(params, "type", required=True) != "webhook_endpoint":
        raise _invalid("Invalid type: meterstream delivers to webhook_endpoint destinations only.", "type")
    if get_str(params, "event_payload", required=True) != "thin":
        raise _invalid("Invalid event_payload: these events are thin events; use thin.", "event_payload")
    if "enabled_events" not in params:
        raise InvalidRequestError(
            "Missing required param: enabled_events.", param="enabled_events", code="parameter_missing"
        )
    enabled = _string_list(params, "enabled_events", EVENT_TYPES)
    if not enabled:
        raise _invalid(
            "Invalid enabled_events: name at least one event type.", "enabled_events", "parameter_invalid_array"
        )
    if params.get("events_from") not in (None, ["@self"]):
        raise _invalid("Invalid events_from: only @self is supported.", "events_from")
    endpoint = params.get("webhook_endpoint")
    url = endpoint.get("url") if isinstance(endpoint, dict) else None
    if not isinstance(endpoint, dict) or set(endpoint) - {"url"} or not isinstance(url, str):
        raise InvalidRequestError(
            "Missing required param: webhook_endpoint[url].", param="webhook_endpoint[url]", code="parameter_missing"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > 2048:
        raise _invalid("Invalid webhook_endpoint[url]: must be an http or https URL.", "webhook_endpoint[url]")
    metadata = params.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        raise _invalid("Invalid metadata: must be an object of strings.", "metadata", "parameter_invalid_object")
    include = frozenset(_string_list(params, "include", _INCLUDES))
    return params, include


def _include_of(request: web.Request) -> frozenset[str]:
    return frozenset(v for v in request.query.getall("include", []) if v in _INCLUDES)


@routes.post("/v2/core/event_destinations")
async def create_destination(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    params, include = _checked_create(await read_params(request))
    stored = new_destination(params, format_iso(time.time()))
    await gw.redis.hset(notify_destinations(gw.settings.redis_prefix), stored["id"], json.dumps(stored))
    return json_response(destination_object(stored, include))


@routes.get("/v2/core/event_destinations")
async def list_destinations(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    raw = cast(dict[str, str], await gw.redis.hgetall(notify_destinations(gw.settings.redis_prefix)))
    found = sorted((json.loads(v) for v in raw.values()), key=lambda d: (d["created"], d["id"]), reverse=True)
    include = _include_of(request)
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
    return json_response(destination_object(await _stored(request), _include_of(request)))


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
