"""Pipeline history for the dashboard: events per second, processor and sink lag in records and in seconds
behind, and Stripe errors per second, over the last hour.

Each gateway samples every :data:`SAMPLE_S` seconds what the pipeline panel already reads — the processor's
and sink's counters (Redis stats) and, summed over partitions, each consumer's next offset and the topics'
high watermarks — and stores it under ``Keys.dashboard_history`` with ``HSETNX`` on the interval's start,
so several gateways write one sample per interval. The hash is trimmed to :data:`KEEP_S`; every read is
one ``HGETALL`` of at most ~300 small fields.

**Seconds behind** is read off the samples themselves: the processor is as far behind as the time since
the topics' high watermark was where the processor's offset is now. With ``P(now)`` the processor's
summed next offset and ``H(t)`` the summed high watermark at sample ``t``: ``behind = now - t*`` for the
latest ``t*`` with ``H(t*) <= P(now)`` (0 when caught up; "over an hour" beyond the samples). The same
for the sink on ``meter-events-accepted``. No record is read: it is exact to the sampling interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any, cast

from aiohttp import web

from processor.gateway.pipeline import PROCESSOR_TOPICS, SINK_TOPICS
from processor.gateway.state import GATEWAY, Gateway
from processor.wire import json_response

__all__ = ["KEEP_S", "SAMPLE_S", "install", "sample_once", "series"]

log = logging.getLogger(__name__)

SAMPLE_S = 15
KEEP_S = 70 * 60
WINDOW_S = 3600
_TASK = web.AppKey("history_task", asyncio.Task)

routes = web.RouteTableDef()


def _processed(stats: dict[str, int]) -> int:
    return sum(v for k, v in stats.items() if k.split(":", 1)[0] in ("event", "cancel", "rejected"))


def _sum(stats: dict[str, int], name: str) -> int:
    return sum(v for k, v in stats.items() if k.rsplit(":", 1)[0] == name)


async def sample_once(gw: Gateway, now: float | None = None) -> dict[str, Any] | None:
    """Take one sample (stored unless another gateway stored this interval's); None when Redis or Kafka
    does not answer."""
    t = int(time.time() if now is None else now)
    bucket = t - t % SAMPLE_S
    try:
        (processor, sink), lag = await asyncio.gather(gw.pipeline.stats(), gw.pipeline.lag(max_age=0))
    except Exception as exc:  # a sample is skipped, the dashboard shows the gap
        log.debug("history sample skipped: %s", exc)
        return None
    proc_rows = [r for r in lag if r.topic in PROCESSOR_TOPICS]
    sink_rows = [r for r in lag if r.topic in SINK_TOPICS]
    sample = {
        "t": bucket,
        "processed": _processed(processor),
        "delivered": _sum(sink, "delivered"),
        "stripe_errors": _sum(sink, "retried") + _sum(sink, "dead_lettered"),
        "proc_next": sum(r.next_offset for r in proc_rows),
        "proc_high": sum(r.high_watermark for r in proc_rows),
        "sink_next": sum(r.next_offset for r in sink_rows),
        "sink_high": sum(r.high_watermark for r in sink_rows),
        "lag_known": bool(proc_rows) and bool(sink_rows),
    }
    key = gw.keys.dashboard_history()
    await gw.redis.hsetnx(key, str(bucket), json.dumps(sample, separators=(",", ":")))
    fields = cast(list[str], await gw.redis.hkeys(key))
    old = [f for f in fields if f.isdigit() and int(f) < t - KEEP_S]
    if old:
        await gw.redis.hdel(key, *old)
    return sample


def _behind(samples: list[dict[str, Any]], i: int, next_key: str, high_key: str) -> float | None:
    """Seconds behind at sample ``i`` (see the module docstring); None when unknown."""
    now = samples[i]
    if not now["lag_known"]:
        return None
    if now[next_key] >= now[high_key]:
        return 0.0
    for j in range(i, -1, -1):
        if samples[j]["lag_known"] and samples[j][high_key] <= now[next_key]:
            return float(now["t"] - samples[j]["t"])
    return None  # further back than the samples reach


def series(samples: list[dict[str, Any]], now: int) -> dict[str, Any]:
    """Per-sample series over the last hour: rates from consecutive samples, lags, seconds behind."""
    samples = sorted((s for s in samples if s["t"] >= now - KEEP_S), key=lambda s: s["t"])
    points = []
    for i, s in enumerate(samples):
        if s["t"] < now - WINDOW_S:
            continue
        prev = samples[i - 1] if i else None
        dt = s["t"] - prev["t"] if prev else 0
        point: dict[str, Any] = {"t": s["t"]}
        if prev and 0 < dt <= 4 * SAMPLE_S:
            point["events_per_s"] = round(max(0, s["processed"] - prev["processed"]) / dt, 2)
            point["delivered_per_s"] = round(max(0, s["delivered"] - prev["delivered"]) / dt, 2)
            point["stripe_errors_per_s"] = round(max(0, s["stripe_errors"] - prev["stripe_errors"]) / dt, 2)
        if s["lag_known"]:
            point["processor_lag_records"] = max(0, s["proc_high"] - s["proc_next"])
            point["sink_lag_records"] = max(0, s["sink_high"] - s["sink_next"])
        point["processor_behind_s"] = _behind(samples, i, "proc_next", "proc_high")
        point["sink_behind_s"] = _behind(samples, i, "sink_next", "sink_high")
        points.append(point)
    return {"start": now - WINDOW_S, "end": now, "interval_s": SAMPLE_S, "data": points}


@routes.get("/dashboard/api/history")
async def history(request: web.Request) -> web.Response:
    gw: Gateway = request.app[GATEWAY]
    raw = cast(dict[str, str], await gw.redis.hgetall(gw.keys.dashboard_history()))
    samples = []
    for value in raw.values():
        with contextlib.suppress(ValueError, TypeError):
            samples.append(json.loads(value))
    return json_response(series(samples, int(time.time())))


async def _loop(gw: Gateway) -> None:
    while True:
        await sample_once(gw)
        await asyncio.sleep(SAMPLE_S - time.time() % SAMPLE_S + 0.05)


def install(app: web.Application) -> None:
    """The history endpoint, and the sampler running while the app runs."""
    app.add_routes(routes)

    async def start(app: web.Application) -> None:
        app[_TASK] = asyncio.ensure_future(_loop(app[GATEWAY]))

    async def stop(app: web.Application) -> None:
        task = app.get(_TASK)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    app.on_startup.append(start)
    app.on_cleanup.insert(0, stop)
