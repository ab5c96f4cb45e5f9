"""Stripe's event destinations and v2 events in the emulator, and the task that delivers error reports
(docs/stripe-emulator.md, "Error reports"):

- ``POST /v2/core/event_destinations``, ``GET /v2/core/event_destinations``,
  ``GET|DELETE /v2/core/event_destinations/{id}`` — checked and shaped by
  :mod:`processor.notify.destinations`, the gateway's code, so both accept and refuse alike;
- ``GET /v2/core/events/{id}`` — the full event (``data.reason.error_types`` ...);
- :func:`deliveries` — a background task of the server's loop: closes the windows of asynchronous errors
  into events and POSTs each thin notification, signed, to its destination; a non-2xx answer, a refused
  connection or a timeout is retried after a :class:`~processor.retry.Backoff` wait (full jitter).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from processor.emulator.api_v1 import EMULATOR
from processor.emulator.notifications import Delivery, Notifications
from processor.errors import ResourceMissingError
from processor.notify.destinations import checked_create, destination_object, include_of, new_destination
from processor.notify.reports import sign
from processor.retry import Backoff
from processor.wire import format_iso, json_response, read_params

__all__ = ["USER_AGENT", "deliveries", "routes"]

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks); meterstream emulator"


def _notifications(request: web.Request) -> Notifications:
    return request.app[EMULATOR].notifications


@routes.post("/v2/core/event_destinations")
async def create_destination(request: web.Request) -> web.Response:
    params, include = checked_create(await read_params(request))
    stored = new_destination(params, format_iso(request.app[EMULATOR].now()))
    _notifications(request).destinations[stored["id"]] = stored
    return json_response(destination_object(stored, include))


@routes.get("/v2/core/event_destinations")
async def list_destinations(request: web.Request) -> web.Response:
    found = sorted(_notifications(request).destinations.values(), key=lambda d: (d["created"], d["id"]), reverse=True)
    include = include_of(request.query.items())
    data = [destination_object(d, include) for d in found]
    return json_response({"data": data, "next_page_url": None, "previous_page_url": None})


def _stored(request: web.Request) -> dict[str, Any]:
    dest_id = request.match_info["id"]
    stored = _notifications(request).destinations.get(dest_id)
    if stored is None:
        raise ResourceMissingError(f"No such event destination: '{dest_id[:100]}'", param="id")
    return stored


@routes.get("/v2/core/event_destinations/{id}")
async def retrieve_destination(request: web.Request) -> web.Response:
    return json_response(destination_object(_stored(request), include_of(request.query.items())))


@routes.delete("/v2/core/event_destinations/{id}")
async def delete_destination(request: web.Request) -> web.Response:
    dest_id = request.match_info["id"]
    _stored(request)
    del _notifications(request).destinations[dest_id]
    return json_response({"id": dest_id, "object": "v2.core.event_destination", "deleted": True})


@routes.get("/v2/core/events/{id}")
async def retrieve_event(request: web.Request) -> web.Response:
    event_id = request.match_info["id"]
    event = _notifications(request).events.get(event_id)
    if event is None:
        raise ResourceMissingError(f"No such event: '{event_id[:100]}'", param="id")
    return json_response(event)


async def _post(http: aiohttp.ClientSession, url: str, secret: str, body: str) -> bool:
    """One delivery attempt: ``True`` when the endpoint answered 2xx. Signed with the wall clock (what the
    SDK's 5-minute tolerance checks), whatever the emulated clock says."""
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
        "Stripe-Signature": sign(body, secret, int(time.time())),
    }
    try:
        async with http.post(url, data=body.encode(), headers=headers) as response:
            await response.read()
            return 200 <= response.status < 300
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


def deliveries(
    backoff: Backoff, *, poll_s: float, timeout_s: float = 10.0, seed: int | None = None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The delivery loop as an aiohttp cleanup context: runs while the app serves, cancelled on shutdown."""
    rng = random.Random(seed)

    async def attempt(http: aiohttp.ClientSession, notes: Notifications, delivery: Delivery) -> None:
        dest = notes.destinations.get(delivery.destination_id)
        if dest is None:  # deleted since: Stripe stops delivering to it
            return
        if await _post(http, dest["url"], dest["secret"], delivery.body):
            notes.delivered += 1
        else:
            notes.failed(delivery, backoff.delay(delivery.failures + 1, rng), time.monotonic())

    async def loop(app: web.Application) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
            while True:
                emu = app[EMULATOR]
                notes = emu.notifications  # read each turn: POST /_emulator/reset replaces it
                try:
                    notes.close_windows(emu.now(), time.monotonic())
                    due = notes.take_due(time.monotonic())
                    if due:
                        await asyncio.gather(*(attempt(http, notes, d) for d in due))
                except Exception:  # a bug here must not end error reporting for the server's life
                    log.exception("error-report delivery failed")
                await asyncio.sleep(poll_s)

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(loop(app), name="emulator-deliveries")
        yield
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    return context
