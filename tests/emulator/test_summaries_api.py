"""Meter event summaries through the SDK: math per formula and grouping window, pre-aggregated meters,
cancellations, pagination and Stripe's parameter rules. The clock is pinned to a known UTC time."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from tests.emulator.conftest import make_meter
from tests.helpers import EmulatorControl

H, D = 3600, 86400
MIDNIGHT = 1_800_000_000 // D * D
T0 = MIDNIGHT + 12 * H  # "now" in these tests: noon UTC


@pytest.fixture
def pinned(control: EmulatorControl) -> EmulatorControl:
    control.set_time(T0, freeze=True)
    return control


def send(
    client: stripe.StripeClient, event: str, customer: str, value: int | None, ts: int, ident: str | None = None
) -> None:
    payload = {"stripe_customer_id": customer}
    if value is not None:
        payload["value"] = str(value)
    params: dict[str, Any] = {"event_name": event, "payload": payload, "timestamp": ts}
    if ident:
        params["identifier"] = ident
    client.v1.billing.meter_events.create(params)  # type: ignore[arg-type]


def summaries(
    client: stripe.StripeClient, meter: str, customer: str, start: int, end: int, window: str | None = None, **page: Any
) -> Any:
    params: dict[str, Any] = {"customer": customer, "start_time": start, "end_time": end, **page}
    if window:
        params["value_grouping_window"] = window
    return client.v1.billing.meters.event_summaries.list(meter, params)  # type: ignore[arg-type]


def values(listing: Any) -> list[tuple[int, int, int]]:
    return [(s.start_time, s.end_time, s.aggregated_value) for s in listing.data]


def test_sum_ranges_and_windows(client: stripe.StripeClient, pinned: EmulatorControl) -> None:
    meter = make_meter(client, "api").id
    send(client, "api", "cus_a", 5, T0 - 3 * H + 10)
    send(client, "api", "cus_a", 7, T0 - 3 * H + 70)
    send(client, "api", "cus_a", -2, T0 - 2 * H + 5)
    send(client, "api", "cus_a", 100, T0 - D)
    send(client, "api", "cus_b", 1000, T0 - 3 * H)  # another customer never leaks in

    single = summaries(client, meter, "cus_a", T0 - 3 * H, T0)
    assert values(single) == [(T0 - 3 * H, T0, 10)] and not single.has_more
    assert single.data[0].object == "billing.meter_event_summary" and single.data[0].meter == meter
    assert summaries(client, meter, "cus_a", T0 - 3 * H + 60, T0).data[0].aggregated_value == 5  # minute edge
    assert summaries(client, meter, "cus_a", T0 - 3 * H, T0 - 3 * H + 60).data[0].aggregated_value == 5
    assert summaries(client, meter, "cus_a", T0 - 2 * D, T0).data[0].aggregated_value == 110
    assert summaries(client, meter, "cus_a", T0 - 2 * D, T0 - D).data[0].aggregated_value == 0  # end exclusive
    assert summaries(client, meter, "cus_a", T0 - 20 * D + 60, T0 + 5 * D - 60).data[0].aggregated_value == 110

    hourly = summaries(client, meter, "cus_a", MIDNIGHT - D, MIDNIGHT + D, "hour")
    assert values(hourly) == [
        (T0 - 2 * H, T0 - H, -2),
        (T0 - 3 * H, T0 - 2 * H, 12),
        (T0 - D, T0 - D + H, 100),
    ]
    daily = summaries(client, meter, "cus_a", MIDNIGHT - D, MIDNIGHT + D, "day")
    assert values(daily) == [(MIDNIGHT, MIDNIGHT + D, 10), (MIDNIGHT - D, MIDNIGHT, 100)]


def test_integers_stay_exact(client: stripe.StripeClient, pinned: EmulatorControl) -> None:
    meter = make_meter(client, "big").id
    for i in range(11):
        send(client, "big", "cus_a", 999_999_999_999_999, T0 - 60 * (i + 1))
    total = summaries(client, meter, "cus_a", T0 - H, T0).data[0].aggregated_value
    assert total == 10_999_999_999_999_989 and isinstance(total, int)  # above 2**53: a float would round


def test_count_and_last(client: stripe.StripeClient, pinned: EmulatorControl) -> None:
    count = make_meter(client, "cnt", "count").id
    last = make_meter(client, "lst", "last").id
    for ts in (T0 - 100, T0 - 200, T0 - 2 * H):
        send(client, "cnt", "cus_a", None, ts)
    assert summaries(client, count, "cus_a", T0 - D, T0).data[0].aggregated_value == 3
    assert values(summaries(client, count, "cus_a", T0 - D, T0, "hour")) == [(T0 - H, T0, 2), (T0 - 2 * H, T0 - H, 1)]

    send(client, "lst", "cus_a", 50, T0 - 60)  # latest timestamp, received first
    send(client, "lst", "cus_a", 40, T0 - 120)
    assert summaries(client, last, "cus_a", T0 - H, T0).data[0].aggregated_value == 50
    send(client, "lst", "cus_a", 60, T0 - 60, "tie")  # same timestamp, received later: wins the tie
    assert summaries(client, last, "cus_a", T0 - H, T0).data[0].aggregated_value == 60
    client.v1.billing.meter_event_adjustments.create(
        {"event_name": "lst", "type": "cancel", "cancel": {"identifier": "tie"}}
    )
    assert summaries(client, last, "cus_a", T0 - H, T0).data[0].aggregated_value == 50
    send(client, "lst", "cus_a", 7, T0 - 3 * H)
    assert values(summaries(client, last, "cus_a", T0 - D, T0, "hour")) == [
        (T0 - H, T0, 50),
        (T0 - 3 * H, T0 - 2 * H, 7),
    ]
    assert summaries(client, last, "cus_a", T0 - 4 * H, T0 - 2 * H).data[0].aggregated_value == 7


def test_pre_aggregated_overwrite_and_cancel(client: stripe.StripeClient, pinned: EmulatorControl) -> None:
    meter = make_meter(client, "gauge", "sum", event_time_window="hour").id
    send(client, "gauge", "cus_a", 5, T0 - 2 * H + 10, "first")
    send(client, "gauge", "cus_a", 3, T0 - 2 * H + 3000, "second")  # same UTC hour: overwrites
    send(client, "gauge", "cus_a", 9, T0 - 2 * H + 20, "third")  # received last: wins, whatever its timestamp
    send(client, "gauge", "cus_a", 4, T0 - H + 1, "next-hour")
    send(client, "gauge", "cus_b", 100, T0 - 2 * H + 30, "other")
    assert summaries(client, meter, "cus_a", T0 - D, T0).data[0].aggregated_value == 13
    assert values(summaries(client, meter, "cus_a", T0 - D, T0, "hour")) == [(T0 - H, T0, 4), (T0 - 2 * H, T0 - H, 9)]
    client.v1.billing.meter_event_adjustments.create(
        {"event_name": "gauge", "type": "cancel", "cancel": {"identifier": "third"}}
    )
    assert summaries(client, meter, "cus_a", T0 - 2 * H, T0 - H).data[0].aggregated_value == 3  # next most recent
    client.v1.billing.meter_event_adjustments.create(
        {"event_name": "gauge", "type": "cancel", "cancel": {"identifier": "first"}}
    )
    assert summaries(client, meter, "cus_a", T0 - 2 * H, T0 - H).data[0].aggregated_value == 3
    client.v1.billing.meter_event_adjustments.create(
        {"event_name": "gauge", "type": "cancel", "cancel": {"identifier": "second"}}
    )
    assert values(summaries(client, meter, "cus_a", T0 - D, T0, "hour")) == [(T0 - H, T0, 4)]
    assert summaries(client, meter, "cus_b", T0 - D, T0).data[0].aggregated_value == 100


def test_daily_pre_aggregation(client: stripe.StripeClient, pinned: EmulatorControl) -> None:
    meter = make_meter(client, "daily", "sum", event_time_window="day").id
    send(client, "daily", "cus_a", 5, MIDNIGHT + 10)
    send(client, "daily", "cus_a", 8, MIDNIGHT + 5 * H)
    send(client, "daily", "cus_a", 2, MIDNIGHT - 10)  # the previous UTC day
    assert values(summaries(client, meter, "cus_a", MIDNIGHT - D, MIDNIGHT + D, "day")) == [
        (MIDNIGHT, MIDNIGHT + D, 8),
        (MIDNIGHT - D, MIDNIGHT, 2),
    ]


def test_cancellation_window_with_clock(client: stripe.StripeClient, pinned: EmulatorControl) -> None:
    meter = make_meter(client, "api").id
    send(client, "api", "cus_a", 5, T0 - 60, "e1")
    send(client, "api", "cus_a", 6, T0 - 60, "e2")
    pinned.advance(D)  # exactly 24 h after receipt: still cancellable
    client.v1.billing.meter_event_adjustments.create(
        {"event_name": "api", "type": "cancel", "cancel": {"identifier": "e1"}}
    )
    pinned.advance(1)
    client.v1.billing.meter_event_adjustments.create(
        {"event_name": "api", "type": "cancel", "cancel": {"identifier": "e2"}}
    )
    assert summaries(client, meter, "cus_a", T0 - H, T0).data[0].aggregated_value == 6


def test_pagination(client: stripe.StripeClient, pinned: EmulatorControl) -> None:
    meter = make_meter(client, "api").id
    for i in range(30):
        send(client, "api", "cus_a", i + 1, T0 - (i + 1) * H)
    first = summaries(client, meter, "cus_a", T0 - 2 * D, T0, "hour", limit=10)
    assert len(first.data) == 10 and first.has_more and first.url == f"/v1/billing/meters/{meter}/event_summaries"
    assert [s.aggregated_value for s in first.data] == list(range(1, 11))  # newest window first
    everything = list(first.auto_paging_iter())
    assert [s.aggregated_value for s in everything] == list(range(1, 31))
    assert len({s.id for s in everything}) == 30
    second = summaries(client, meter, "cus_a", T0 - 2 * D, T0, "hour", limit=10, starting_after=first.data[-1].id)
    assert [s.aggregated_value for s in second.data] == list(range(11, 21)) and second.has_more
    back = summaries(client, meter, "cus_a", T0 - 2 * D, T0, "hour", limit=3, ending_before=second.data[0].id)
    assert [s.aggregated_value for s in back.data] == [8, 9, 10] and back.has_more
    last = summaries(client, meter, "cus_a", T0 - 2 * D, T0, "hour", limit=10, starting_after=everything[-2].id)
    assert [s.aggregated_value for s in last.data] == [30] and not last.has_more


@pytest.mark.parametrize(
    ("start", "end", "window", "param"),
    [
        (T0 - H + 30, T0, None, "start_time"),
        (T0 - H, T0 + 1, None, "end_time"),
        (T0 - H + 60, T0, "hour", "start_time"),
        (T0 - H, T0, "day", "start_time"),
        (T0, T0 - H, None, "start_time"),
        (T0 - H, T0, "week", "value_grouping_window"),
    ],
)
def test_parameter_rules(
    client: stripe.StripeClient, pinned: EmulatorControl, start: int, end: int, window: str | None, param: str
) -> None:
    meter = make_meter(client, "api").id
    send(client, "api", "cus_a", 1, T0 - 60)
    with pytest.raises(stripe.InvalidRequestError) as info:
        summaries(client, meter, "cus_a", start, end, window)
    assert info.value.http_status == 400 and info.value.param == param


def test_required_params_and_unknown_customer(client: stripe.StripeClient, pinned: EmulatorControl) -> None:
    meter = make_meter(client, "api").id
    for missing in ("customer", "start_time", "end_time"):
        params = {"customer": "cus_a", "start_time": T0 - H, "end_time": T0}
        del params[missing]
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.billing.meters.event_summaries.list(meter, params)  # type: ignore[arg-type]
        assert info.value.param == missing and info.value.code == "parameter_missing"
    with pytest.raises(stripe.InvalidRequestError) as info:
        summaries(client, meter, "cus_never", T0 - H, T0)
    assert info.value.http_status == 404 and info.value.param == "customer"
    created = client.v1.customers.create({"name": "No usage"})
    assert summaries(client, meter, created.id, T0 - H, T0).data[0].aggregated_value == 0
    with pytest.raises(stripe.InvalidRequestError) as info:
        summaries(client, meter, created.id, T0 - H, T0, starting_after="mtrusg_bogus")
    assert info.value.param == "starting_after"
