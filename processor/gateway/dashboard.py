"""The web dashboard (``/``), its data endpoints (``/dashboard/api/...``), ``/healthz`` and ``/metrics``.

The page is plain HTML, CSS and JavaScript kept in ``static/`` (no CDN, no build step: the machines it runs
on are offline). Usage charts read the Stripe-compatible summaries endpoint, so the dashboard shows exactly
what an SDK user gets; the endpoints here add what Stripe's API has no call for: the customers of a meter,
the top customers of a day, and pipeline health.

Everything but ``/healthz`` needs an API key. A browser is asked for it with HTTP Basic auth (the key as
user name), which it then sends with every request of the page.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from processor.errors import InvalidRequestError
from processor.gateway.metrics import PipelineSnapshot
from processor.gateway.state import GATEWAY, Gateway
from processor.state.keys import DAY_S
from processor.wire import get_int, get_str, json_response

__all__ = ["STATIC_DIR", "routes"]

STATIC_DIR = Path(__file__).parent / "static"
#: The top-customers panel reads the day bucket of at most this many customers (the most recently active).
TOP_SCAN_LIMIT = 10_000
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_ASSETS = {
    "app.js": "text/javascript",
    "chart.js": "text/javascript",
    "common.js": "text/javascript",
    "history.js": "text/javascript",
    "ops.js": "text/javascript",
    "style.css": "text/css",
}

routes = web.RouteTableDef()


def _gw(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


@routes.get("/")
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={**_PAGE_HEADERS, "Content-Type": "text/html"})


@routes.get("/static/{name}")
async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in _ASSETS:  # a fixed list: no path ever reaches the file system unchecked
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC_DIR / name, headers={**_PAGE_HEADERS, "Content-Type": _ASSETS[name]})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Broker and Redis reachability; 200 when both answer, 503 otherwise. No key needed."""
    report = await _gw(request).pipeline.health()
    return json_response(report, status=200 if report["status"] == "ok" else 503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """The gateway's and the pipeline's metrics, and ``meterstream_dependency_up{dependency}``: 1 when
    Redis / Kafka answer this gateway, 0 when not (the "Redis down" alert; the scrape itself still works
    without Redis, it then only lacks the pipeline counters)."""
    gw = _gw(request)
    health = await gw.pipeline.health()
    snapshot = await gw.pipeline.snapshot() if health["redis"]["ok"] and health["kafka"]["ok"] else PipelineSnapshot()
    body = gw.metrics.render(snapshot) + dependency_lines(health)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def dependency_lines(health: dict[str, Any]) -> bytes:
    """Prometheus text of ``meterstream_dependency_up`` from a ``PipelineProbe.health()`` answer."""
    lines = [
        "# HELP meterstream_dependency_up Whether the gateway reaches a dependency (1) or not (0).",
        "# TYPE meterstream_dependency_up gauge",
    ]
    for name in ("kafka", "redis"):
        lines.append(f'meterstream_dependency_up{{dependency="{name}"}} {1 if health[name]["ok"] else 0}')
    return ("\n".join(lines) + "\n").encode()


async def _meter_param(gw: Gateway, query: dict[str, Any]) -> str:
    meter_id = get_str(query, "meter", required=True, max_length=200)
    assert meter_id is not None
    return (await gw.meter(meter_id)).id


@routes.get("/dashboard/api/customers")
async def customers(request: web.Request) -> web.Response:
    """The customers of a meter, most recently active first: ``{"data": [{"customer", "last_event"}]}``."""
    gw = _gw(request)
    query = dict(request.query)
    meter_id = await _meter_param(gw, query)
    limit = get_int(query, "limit", minimum=1, maximum=1000) or 200
    rows = cast(
        list[tuple[str, float]], await gw.redis.zrevrange(gw.keys.customers(meter_id), 0, limit, withscores=True)
    )
    data = [{"customer": c, "last_event": int(score)} for c, score in rows[:limit]]
    return json_response({"meter": meter_id, "data": data, "has_more": len(rows) > limit})


@routes.get("/dashboard/api/top")
async def top_customers(request: web.Request) -> web.Response:
    """The customers with the largest value of a meter on one UTC day (``day``: unix seconds, 00:00 UTC;
    default today). Only customers whose latest event is on or after that day can have usage in it."""
    gw = _gw(request)
    query = dict(request.query)
    meter_id = await _meter_param(gw, query)
    day = get_int(query, "day", minimum=0)
    if day is None:
        day = int(time.time()) // DAY_S * DAY_S
    elif day % DAY_S:
        raise InvalidRequestError("day must be aligned with day boundaries (00:00 UTC).", param="day")
    limit = get_int(query, "limit", minimum=1, maximum=100) or 10
    active = cast(
        list[str],
        await gw.redis.zrevrangebyscore(gw.keys.customers(meter_id), "+inf", day, start=0, num=TOP_SCAN_LIMIT + 1),
    )
    truncated = len(active) > TOP_SCAN_LIMIT
    active = active[:TOP_SCAN_LIMIT]
    pipe = gw.redis.pipeline(transaction=False)
    for customer in active:
        pipe.hget(gw.keys.usage_day(meter_id, customer), str(day))
    values = await pipe.execute() if active else []
    found = [(c, int(v)) for c, v in zip(active, values, strict=True) if v is not None]
    found.sort(key=lambda cv: (-cv[1], cv[0]))
    return json_response(
        {
            "meter": meter_id,
            "day": day,
            "data": [{"customer": c, "value": v} for c, v in found[:limit]],
            "customers_scanned": len(active),
            "truncated": truncated,
        }
    )


@routes.get("/dashboard/api/pipeline")
async def pipeline(request: web.Request) -> web.Response:
    """Health, the processor's and sink's counters, and lag, for the pipeline panel."""
    gw = _gw(request)
    probe = gw.pipeline
    health = await probe.health()
    processor, sink = await probe.stats() if health["redis"]["ok"] else ({}, {})
    lag = await probe.lag() if health["kafka"]["ok"] else []
    return json_response(
        {
            "time": time.time(),
            "health": health,
            "processor": processor,
            "sink": sink,
            "lag": [{"group": r.group, "topic": r.topic, "partition": r.partition, "lag": r.lag} for r in lag],
            "gateway": {"in_flight": gw.producer.in_flight()},
        }
    )
