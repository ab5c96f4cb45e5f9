"""Event summaries through the gateway: events in through the SDK, the real processor applies them to
Redis, summaries out through the SDK. Expected values are computed here from the events sent."""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
import stripe

from processor.config import Settings
from tests.gateway.conftest import async_client, bearer, http, make_meter, run_processor

HOUR = 3600
DAY = 86400
ReadTopic = Callable[..., list[Any]]


def send(client: stripe.StripeClient, name: str, customer: str, value: int, ts: int, ident: str) -> None:
    client.v1.billing.meter_events.create(
        {
            "event_name": name,
            "payload": {"stripe_customer_id": customer, "value": str(value)},
            "timestamp": ts,
            "identifier": ident,
        }
    )


def summaries(client: stripe.StripeClient, meter_id: str, **params: Any) -> list[tuple[int, int, int]]:
    listed = client.v1.billing.meters.event_summaries.list(meter_id, params)  # type: ignore[arg-type]
    return [(s.start_time, s.end_time, s.aggregated_value) for s in listed.auto_paging_iter()]


def test_values_windows_exactness_and_cancellation(
    client: stripe.StripeClient, gw_settings: Settings, read_topic: ReadTopic, url: str
) -> None:
    usage = make_meter(client, "usage_units")
    latest = make_meter(client, "seats", "last")
    base = int(time.time()) // HOUR * HOUR - 5 * HOUR
    sent: list[tuple[int, int]] = []  # (timestamp, value) of cus_a's surviving events
    for i, (offset, value) in enumerate([(10 * 60, 5), (70 * 60, 7), (130 * 60, 11), (-20 * HOUR, 13)]):
        send(client, "usage_units", "cus_a", value, base + offset, f"a{i}")
        sent.append((base + offset, value))
    send(client, "usage_units", "cus_a", 1000, base + 15 * 60, "to-cancel")
    client.v1.billing.meter_event_adjustments.create(
        {"event_name": "usage_units", "type": "cancel", "cancel": {"identifier": "to-cancel"}}
    )
    big = 999_999_999_999_999  # 15 significant digits, the most Stripe takes
    for i in range(10):
        send(client, "usage_units", "cus_big", big, base + i * 60, f"big{i}")
    send(client, "seats", "cus_a", 3, base + 60, "s1")
    send(client, "seats", "cus_a", 9, base + 120, "s2")
    with pytest.raises(stripe.InvalidRequestError) as orphan:  # refused at once, as Stripe's synchronous API
        send(client, "no_such_meter", "cus_a", 1, base, "orphan")
    assert (orphan.value.code, orphan.value.param) == ("no_meter", "event_name")
    run_processor(gw_settings)

    # any minute-aligned range is exact: [base+10m, base+71m) holds the 5 and the 7
    assert summaries(client, usage.id, customer="cus_a", start_time=base + 600, end_time=base + 71 * 60) == [
        (base + 600, base + 71 * 60, 12)
    ]
    hourly = summaries(
        client,
        usage.id,
        customer="cus_a",
        start_time=base - DAY,
        end_time=base + 3 * HOUR,
        value_grouping_window="hour",
    )
    by_hour: dict[int, int] = defaultdict(int)
    for ts, value in sent:
        by_hour[ts // HOUR * HOUR] += value
    assert hourly == [(h, h + HOUR, v) for h, v in sorted(by_hour.items(), reverse=True)]  # newest first

    day0 = (base - DAY) // DAY * DAY
    daily = summaries(
        client, usage.id, customer="cus_a", start_time=day0, end_time=day0 + 3 * DAY, value_grouping_window="day"
    )
    by_day: dict[int, int] = defaultdict(int)
    for ts, value in sent:
        by_day[ts // DAY * DAY] += value
    assert daily == [(d, d + DAY, v) for d, v in sorted(by_day.items(), reverse=True)]

    assert summaries(client, usage.id, customer="cus_big", start_time=base, end_time=base + HOUR) == [
        (base, base + HOUR, 10 * big)  # beyond 2**53: every digit kept
    ]
    assert summaries(client, latest.id, customer="cus_a", start_time=base, end_time=base + HOUR) == [
        (base, base + HOUR, 9)
    ]
    assert summaries(client, usage.id, customer="cus_nobody", start_time=base, end_time=base + HOUR) == [
        (base, base + HOUR, 0)
    ]

    async def with_async_client() -> list[Any]:
        async with async_client(url) as aclient:
            listed = await aclient.v1.billing.meters.event_summaries.list_async(
                usage.id, {"customer": "cus_a", "start_time": base, "end_time": base + 3 * HOUR}
            )
            return [s.aggregated_value for s in listed.data]

    assert asyncio.run(with_async_client()) == [5 + 7 + 11]


def test_pagination(client: stripe.StripeClient, gw_settings: Settings) -> None:
    meter = make_meter(client, "paged")
    start = int(time.time()) // HOUR * HOUR - 30 * HOUR
    for i in range(25):
        send(client, "paged", "cus_p", i + 1, start + i * HOUR + 59, f"p{i}")
    run_processor(gw_settings)
    params: dict[str, Any] = {
        "customer": "cus_p",
        "start_time": start,
        "end_time": start + 30 * HOUR,
        "value_grouping_window": "hour",
        "limit": 10,
    }
    first = client.v1.billing.meters.event_summaries.list(meter.id, params)  # type: ignore[arg-type]
    assert [s.aggregated_value for s in first.data] == list(range(25, 15, -1)) and first.has_more
    assert all(s.id.startswith("mtrusg_") and s.meter == meter.id for s in first.data)
    second = client.v1.billing.meters.event_summaries.list(
        meter.id,
        {**params, "starting_after": first.data[-1].id},  # type: ignore[arg-type]
    )
    assert [s.aggregated_value for s in second.data] == list(range(15, 5, -1)) and second.has_more
    back = client.v1.billing.meters.event_summaries.list(
        meter.id,
        {**params, "limit": 3, "ending_before": second.data[0].id},  # type: ignore[arg-type]
    )
    assert [s.aggregated_value for s in back.data] == [18, 17, 16] and back.has_more
    everything = client.v1.billing.meters.event_summaries.list(meter.id, params).auto_paging_iter()  # type: ignore[arg-type]
    assert [s.aggregated_value for s in everything] == list(range(25, 0, -1))

    with pytest.raises(stripe.InvalidRequestError) as foreign:  # a cursor of another customer's list
        other = {**params, "customer": "cus_q", "starting_after": first.data[0].id}
        client.v1.billing.meters.event_summaries.list(meter.id, other)  # type: ignore[arg-type]
    assert foreign.value.param == "starting_after" and foreign.value.code == "resource_missing"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"customer": None}, "customer"),
        ({"start_time": None}, "start_time"),
        ({"end_time": None}, "end_time"),
        ({"start_time": 1_700_000_030}, "start_time"),  # not minute-aligned
        ({"end_time": 1_700_003_630}, "end_time"),
        ({"end_time": 1_700_000_000}, "end_time"),  # empty range
        ({"value_grouping_window": "hour", "start_time": 1_700_000_040}, "start_time"),  # not hour-aligned
        ({"value_grouping_window": "day"}, "start_time"),  # 1_699_999_200 is not 00:00 UTC
        ({"value_grouping_window": "week"}, "value_grouping_window"),
        ({"limit": 0}, "limit"),
        ({"starting_after": "mtrusg_bogus"}, "starting_after"),
        ({"colour": "red"}, "colour"),
        ({"customer": "c" * 256}, "customer"),  # no customer id is longer (processor/limits.py)
        ({"limit": 101}, "limit"),
    ],
)
def test_parameter_rules(client: stripe.StripeClient, change: dict[str, Any], param: str) -> None:
    meter = make_meter(client, "ruled")
    params: dict[str, Any] = {"customer": "cus_r", "start_time": 1_699_999_200, "end_time": 1_700_006_400}
    for key, value in change.items():
        if value is None:
            params.pop(key)
        else:
            params[key] = value
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.billing.meters.event_summaries.list(meter.id, params)  # type: ignore[arg-type]
    assert info.value.http_status == 400 and info.value.param == param


def test_unknown_meter_is_404(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.billing.meters.event_summaries.list(
            "mtr_nope", {"customer": "c", "start_time": 1_699_999_200, "end_time": 1_700_006_400}
        )
    assert info.value.http_status == 404 and info.value.code == "resource_missing"


HUGE_END = 999_999_999_999_960  # issue 13's range end: ~31.7 million years of minutes


def test_a_huge_range_costs_what_its_usage_costs(client: stripe.StripeClient, gw_settings: Settings, url: str) -> None:
    """Issue 13, item 1: ``start_time=0&end_time=999999999999960`` made the gateway build every window of the
    range (+225 MB/s past 14 GB). Now a run of days is read as the day hash and grouped lists walk only
    the windows holding usage: the exact request answers, with the right numbers, within a small memory
    peak (measured with tracemalloc; the gateway runs in this process)."""
    meter = make_meter(client, "huge_range")
    base = int(time.time()) // DAY * DAY - DAY
    for i in range(3):
        send(client, "huge_range", "c", i + 1, base + i * HOUR + 30, f"h{i}")
    run_processor(gw_settings)
    tracemalloc.start()
    try:
        status, _, raw = http(
            f"{url}/v1/billing/meters/{meter.id}/event_summaries?customer=c&start_time=0&end_time={HUGE_END}",
            headers=bearer(),
        )
        assert status == 200, raw
        assert [s["aggregated_value"] for s in json.loads(raw)["data"]] == [6]
        for grouping, end in (("hour", HUGE_END // HOUR * HOUR), ("day", HUGE_END // DAY * DAY)):
            listed = summaries(
                client, meter.id, customer="c", start_time=0, end_time=end, value_grouping_window=grouping
            )
            want = [(base + 2 * HOUR, 3), (base + HOUR, 2), (base, 1)] if grouping == "hour" else [(base, 6)]
            assert [(s, v) for s, _, v in listed] == want
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024, peak


def test_limit_is_capped_at_100(client: stripe.StripeClient) -> None:
    meter = make_meter(client, "capped")
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.billing.meters.event_summaries.list(
            meter.id,
            {"customer": "c", "start_time": 0, "end_time": HUGE_END, "limit": 101},  # type: ignore[typeddict-item]
        )
    assert info.value.http_status == 400 and info.value.param == "limit"
