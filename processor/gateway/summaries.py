"""``GET /v1/billing/meters/{id}/event_summaries``: Stripe's meter event summaries, answered from Redis.

The numbers come from :func:`processor.state.summaries.summarize` (exact for any minute-aligned range,
with Stripe's alignment rules); this module adds Stripe's list semantics:

- with ``value_grouping_window``, one summary per hour / UTC day that holds usage, newest first (the order
  of Stripe's documented example); without it, a single summary for the whole range (0 when empty);
- bounded work: only the windows holding usage are listed (never every window of the range), and values
  are read for the page alone (``limit`` ≤ 100), so no range, however wide, costs more than the
  customer's own usage history;
- ids are deterministic, ``mtrusg_<tag><window start in hex>`` where the tag is a digest of meter, customer
  and window width, so a cursor is checked against the list it came from and locates its window by
  bisection (no listing scan);
- ``aggregated_value`` is Stripe's float field, written as an exact JSON number: sums beyond 2**53 keep
  every digit.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from processor.errors import InvalidRequestError
from processor.gateway.state import Gateway
from processor.limits import CUSTOMER_ID_MAX
from processor.state.keys import DAY_S, HOUR_S
from processor.state.summaries import Summary, summarize, usage_windows, window_values
from processor.wire import PageParams, get_enum, get_int, get_str, list_object, page_bounds, reject_unknown

__all__ = ["list_event_summaries", "summary_id"]

_PREFIX = "mtrusg_"
_ALLOWED = (
    "customer",
    "start_time",
    "end_time",
    "value_grouping_window",
    "limit",
    "starting_after",
    "ending_before",
    "expand",
)


def _tag(meter_id: str, customer: str, width: int) -> str:
    return hashlib.blake2b(f"{meter_id}|{customer}|{width}".encode(), digest_size=5).hexdigest()


def summary_id(meter_id: str, customer: str, width: int, start: int) -> str:
    """The id of the summary of ``[start, ...)`` (``width`` 0: an ungrouped summary)."""
    return f"{_PREFIX}{_tag(meter_id, customer, width)}{start:x}"


def _cursor_start(cursor: str, tag: str, param: str) -> int:
    prefix = _PREFIX + tag
    rest = cursor[len(prefix) :] if cursor.startswith(prefix) else ""
    try:
        if not rest:
            raise ValueError
        return int(rest, 16)
    except ValueError:
        raise InvalidRequestError(
            f"No such billing meter event summary: '{cursor[:100]}'", param=param, code="resource_missing"
        ) from None


def _object(meter_id: str, customer: str, width: int, row: Summary) -> dict[str, Any]:
    return {
        "id": summary_id(meter_id, customer, width, row.start_time),
        "object": "billing.meter_event_summary",
        "aggregated_value": row.aggregated_value,
        "end_time": row.end_time,
        "livemode": False,
        "meter": meter_id,
        "start_time": row.start_time,
    }


async def list_event_summaries(gw: Gateway, meter_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The list object Stripe answers for these query params."""
    reject_unknown(params, _ALLOWED)
    meter = await gw.meter(meter_id)
    customer = get_str(params, "customer", required=True, max_length=CUSTOMER_ID_MAX)  # no longer id exists
    start = get_int(params, "start_time", required=True)
    end = get_int(params, "end_time", required=True)
    grouping = get_enum(params, "value_grouping_window", ("day", "hour"))
    page = PageParams.from_params(params)
    assert customer is not None and start is not None and end is not None
    url = f"/v1/billing/meters/{meter.id}/event_summaries"
    if grouping is None:
        rows = await asyncio.to_thread(
            summarize, gw.sync_redis, gw.keys, meter.id, meter.formula, customer, start, end, None
        )
        return _page(
            meter.id,
            customer,
            0,
            [row.start_time for row in rows],
            page,
            url,
            lambda chosen: [r for r in rows if r.start_time in chosen],
        )
    width = HOUR_S if grouping == "hour" else DAY_S
    # Only the windows that hold usage are listed and paged; values are read for the page alone.
    starts = await asyncio.to_thread(usage_windows, gw.sync_redis, gw.keys, meter.id, customer, start, end, grouping)

    def rows_of(chosen: list[int]) -> list[Summary]:
        values = window_values(gw.sync_redis, gw.keys, meter.id, customer, grouping, chosen)
        return [Summary(t, t + width, v) for t, v in zip(chosen, values, strict=True)]

    return await asyncio.to_thread(_page, meter.id, customer, width, starts, page, url, rows_of)


def _page(
    meter_id: str,
    customer: str,
    width: int,
    starts: list[int],
    page: PageParams,
    url: str,
    rows_of: Callable[[list[int]], list[Summary]],
) -> dict[str, Any]:
    """One page of the newest-first list whose windows start at ``starts`` (ascending)."""
    tag = _tag(meter_id, customer, width)
    n = len(starts)
    after = before = None
    cursor = page.starting_after if page.starting_after is not None else page.ending_before
    if cursor is not None:
        param = "starting_after" if page.starting_after is not None else "ending_before"
        t = _cursor_start(cursor, tag, param)
        # Positions in the newest-first list: the cursor's window sits at n-1-bisect_left(starts, t).
        after, before = n - bisect.bisect_left(starts, t), n - bisect.bisect_right(starts, t)
    lo, hi, more = page_bounds(n, page, after=after, before=before)
    rows = rows_of([starts[n - 1 - i] for i in range(lo, hi)])
    return list_object([_object(meter_id, customer, width, row) for row in rows], has_more=more, url=url)
