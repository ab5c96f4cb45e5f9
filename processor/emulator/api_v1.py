"""Stripe's v1 billing-meter endpoints (form-encoded in, JSON out) and v1 customers."""

from __future__ import annotations

import bisect
import hashlib

from aiohttp import web

from processor.emulator.inputs import adjustment_input, event_input
from processor.emulator.ledger import DAY, HOUR
from processor.emulator.state import Emulator
from processor.errors import InvalidRequestError, ResourceMissingError
from processor.wire import (
    PageParams,
    get_enum,
    get_int,
    get_str,
    json_response,
    list_object,
    page_bounds,
    paginate_by_id,
    read_params,
    reject_unknown,
)

__all__ = ["EMULATOR", "routes"]

EMULATOR = web.AppKey("emulator", Emulator)
routes = web.RouteTableDef()
_SUMMARY_PREFIX = "mtrusg_test_"


def _emu(request: web.Request) -> Emulator:
    return request.app[EMULATOR]


@routes.post("/v1/billing/meters")
async def create_meter(request: web.Request) -> web.Response:
    emu = _emu(request)
    meter = emu.meters.create(await read_params(request), int(emu.now()))
    emu.ledger(meter)
    return json_response(meter.to_dict())


@routes.get("/v1/billing/meters")
async def list_meters(request: web.Request) -> web.Response:
    emu = _emu(request)
    params = await read_params(request)
    reject_unknown(params, ("status", "limit", "starting_after", "ending_before", "expand"))
    status = get_enum(params, "status", ("active", "inactive"))
    page = PageParams.from_params(params)
    meters, more = paginate_by_id(emu.meters.listing(status), lambda m: m.id, page, object_name="billing meter")
    return json_response(list_object([m.to_dict() for m in meters], has_more=more, url="/v1/billing/meters"))


@routes.get("/v1/billing/meters/{id}")
async def retrieve_meter(request: web.Request) -> web.Response:
    reject_unknown(await read_params(request), ("expand",))
    return json_response(_emu(request).meters.get(request.match_info["id"]).to_dict())


@routes.post("/v1/billing/meters/{id}")
async def update_meter(request: web.Request) -> web.Response:
    emu = _emu(request)
    meter = emu.meters.update(request.match_info["id"], await read_params(request), int(emu.now()))
    return json_response(meter.to_dict())


@routes.post("/v1/billing/meters/{id}/deactivate")
async def deactivate_meter(request: web.Request) -> web.Response:
    return await _set_active(request, False)


@routes.post("/v1/billing/meters/{id}/reactivate")
async def reactivate_meter(request: web.Request) -> web.Response:
    return await _set_active(request, True)


async def _set_active(request: web.Request, active: bool) -> web.Response:
    emu = _emu(request)
    reject_unknown(await read_params(request), ("expand",))
    return json_response(emu.meters.set_active(request.match_info["id"], active, int(emu.now())).to_dict())


def _summary_tag(meter_id: str, customer: str, width: int) -> str:
    return hashlib.blake2b(f"{meter_id}|{customer}|{width}".encode(), digest_size=5).hexdigest()


@routes.get("/v1/billing/meters/{id}/event_summaries")
async def event_summaries(request: web.Request) -> web.Response:
    """Newest window first; with a grouping window only windows holding a surviving event are listed,
    without one a single summary covers the whole range (0 when empty)."""
    emu = _emu(request)
    meter = emu.meters.get(request.match_info["id"])
    params = await read_params(request)
    reject_unknown(
        params,
        (
            "customer",
            "start_time",
            "end_time",
            "value_grouping_window",
            "limit",
            "starting_after",
            "ending_before",
            "expand",
        ),
    )
    customer = get_str(params, "customer", required=True, max_length=5000)
    start = get_int(params, "start_time", required=True)
    end = get_int(params, "end_time", required=True)
    grouping = get_enum(params, "value_grouping_window", ("day", "hour"))
    page = PageParams.from_params(params)
    assert customer is not None and start is not None and end is not None
    for name, value in (("start_time", start), ("end_time", end)):
        if value % 60:
            raise InvalidRequestError(f"{name} must be aligned with minute boundaries.", param=name)
    if start >= end:
        raise InvalidRequestError("start_time must be before end_time.", param="start_time")
    width = {"hour": HOUR, "day": DAY}.get(grouping or "", 0)
    if width:
        boundary = "hour boundaries" if width == HOUR else "day boundaries (00:00 UTC)"
        for name, value in (("start_time", start), ("end_time", end)):
            if value % width:
                raise InvalidRequestError(
                    f"{name} must be aligned with {boundary} when value_grouping_window is {grouping}.", param=name
                )
    if customer not in emu.customers:
        raise ResourceMissingError(f"No such customer: '{customer[:100]}'", param="customer")
    ledger = emu.ledger(meter)
    tag = _summary_tag(meter.id, customer, width)
    url = f"/v1/billing/meters/{meter.id}/event_summaries"

    asc = ledger.window_starts(customer, width, start, end) if width else [start]
    n = len(asc)
    after = before = None
    cursor = page.starting_after if page.starting_after is not None else page.ending_before
    if cursor is not None:
        t = _parse_summary_id(cursor, tag, "starting_after" if page.starting_after is not None else "ending_before")
        after, before = n - bisect.bisect_left(asc, t), n - bisect.bisect_right(asc, t)
    lo, hi, more = page_bounds(n, page, after=after, before=before)
    data = []
    for i in range(lo, hi):
        s = asc[n - 1 - i]
        e = s + width if width else end
        value = ledger.window_value(customer, width, s) if width else ledger.total(customer, start, end)
        data.append(
            {
                "id": f"{_SUMMARY_PREFIX}{tag}{s:x}",
                "object": "billing.meter_event_summary",
                "aggregated_value": value,
                "end_time": e,
                "livemode": False,
                "meter": meter.id,
                "start_time": s,
            }
        )
    return json_response(list_object(data, has_more=more, url=url))


def _parse_summary_id(cursor: str, tag: str, param: str) -> int:
    prefix = _SUMMARY_PREFIX + tag
    try:
        if not cursor.startswith(prefix):
            raise ValueError
        return int(cursor[len(prefix) :], 16)
    except ValueError:
        raise InvalidRequestError(
            f"No such billing meter event summary: '{cursor[:100]}'", param=param, code="resource_missing"
        ) from None


@routes.post("/v1/billing/meter_events")
async def create_meter_event(request: web.Request) -> web.Response:
    emu = _emu(request)
    ev = event_input(await read_params(request), v2=False)
    identifier, timestamp = emu.record_event(ev, source="v1", synchronous=True)
    return json_response(
        {
            "object": "billing.meter_event",
            "created": int(emu.now()),
            "event_name": ev.event_name,
            "identifier": identifier,
            "livemode": False,
            "payload": dict(ev.payload),
            "timestamp": timestamp,
        }
    )


@routes.post("/v1/billing/meter_event_adjustments")
async def create_meter_event_adjustment(request: web.Request) -> web.Response:
    emu = _emu(request)
    event_name, identifier = adjustment_input(await read_params(request), v2=False)
    emu.cancel_event(event_name, identifier, source="v1")
    return json_response(
        {
            "object": "billing.meter_event_adjustment",
            "cancel": {"identifier": identifier},
            "event_name": event_name,
            "livemode": False,
            "status": "pending",
            "type": "cancel",
        }
    )


@routes.post("/v1/customers")
async def create_customer(request: web.Request) -> web.Response:
    return json_response(_emu(request).create_customer(await read_params(request)))


@routes.get("/v1/customers/{id}")
async def retrieve_customer(request: web.Request) -> web.Response:
    reject_unknown(await read_params(request), ("expand",))
    return json_response(_emu(request).customer(request.match_info["id"]))
