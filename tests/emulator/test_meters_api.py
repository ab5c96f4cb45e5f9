"""Meters through the official SDK: create (with Stripe's validation), retrieve, update, list, status."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import stripe

from tests.emulator.conftest import async_client, make_meter
from tests.helpers import make_full_meter
from tests.stripe_cases import METER_CREATE_ERRORS


def test_create_retrieve_and_shape(client: stripe.StripeClient) -> None:
    meter = make_full_meter(client)
    assert meter.status_transitions.deactivated_at is None
    again = client.v1.billing.meters.retrieve(meter.id)
    assert again.to_dict() == meter.to_dict()


def test_defaults(client: stripe.StripeClient) -> None:
    meter = make_meter(client, "plain")
    assert meter.customer_mapping.event_payload_key == "stripe_customer_id"
    assert meter.customer_mapping.type == "by_id"
    assert meter.value_settings.event_payload_key == "value"
    assert meter.event_time_window is None


@pytest.mark.parametrize(("params", "param", "code"), METER_CREATE_ERRORS)
def test_create_validation(client: stripe.StripeClient, params: dict[str, object], param: str, code: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.billing.meters.create(params)  # type: ignore[arg-type]
    assert info.value.http_status == 400
    assert info.value.param == param
    assert info.value.code == code
    assert info.value.request_id and info.value.request_id.startswith("req_")


def test_event_name_belongs_to_one_meter_even_inactive(client: stripe.StripeClient) -> None:
    meter = make_meter(client, "dup")
    client.v1.billing.meters.deactivate(meter.id)
    with pytest.raises(stripe.InvalidRequestError) as info:
        make_meter(client, "dup")
    assert info.value.param == "event_name"


def test_update_only_display_name(client: stripe.StripeClient, control: object) -> None:
    meter = make_meter(client, "rename_me")
    renamed = client.v1.billing.meters.update(meter.id, {"display_name": "Renamed"})
    assert renamed.display_name == "Renamed"
    assert client.v1.billing.meters.retrieve(meter.id).display_name == "Renamed"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.billing.meters.update(meter.id, {"event_name": "other"})  # type: ignore[typeddict-unknown-key]
    assert info.value.param == "event_name" and info.value.code == "parameter_unknown"


def test_unknown_meter_is_404(client: stripe.StripeClient) -> None:
    for call in (
        lambda: client.v1.billing.meters.retrieve("mtr_missing"),
        lambda: client.v1.billing.meters.update("mtr_missing", {"display_name": "x"}),
        lambda: client.v1.billing.meters.deactivate("mtr_missing"),
        lambda: client.v1.billing.meters.reactivate("mtr_missing"),
        lambda: client.v1.billing.meters.event_summaries.list(
            "mtr_missing", {"customer": "cus_1", "start_time": 0, "end_time": 60}
        ),
    ):
        with pytest.raises(stripe.InvalidRequestError) as info:
            call()
        assert info.value.http_status == 404
        assert info.value.code == "resource_missing"


def test_deactivate_reactivate(client: stripe.StripeClient) -> None:
    meter = make_meter(client, "switch")
    off = client.v1.billing.meters.deactivate(meter.id)
    assert off.status == "inactive" and off.status_transitions.deactivated_at is not None
    on = client.v1.billing.meters.reactivate(meter.id)
    assert on.status == "active" and on.status_transitions.deactivated_at is None


def test_list_pagination_and_status(client: stripe.StripeClient) -> None:
    ids = [make_meter(client, f"m{i}").id for i in range(7)]
    for i in (1, 4):
        client.v1.billing.meters.deactivate(ids[i])
    newest_first = list(reversed(ids))

    page = client.v1.billing.meters.list({"limit": 3})
    assert [m.id for m in page.data] == newest_first[:3] and page.has_more
    assert page.url == "/v1/billing/meters"
    assert [m.id for m in page.auto_paging_iter()] == newest_first

    nxt = client.v1.billing.meters.list({"limit": 3, "starting_after": page.data[-1].id})
    assert [m.id for m in nxt.data] == newest_first[3:6] and nxt.has_more
    prev = client.v1.billing.meters.list({"limit": 2, "ending_before": nxt.data[0].id})
    assert [m.id for m in prev.data] == newest_first[1:3] and prev.has_more
    first = client.v1.billing.meters.list({"limit": 5, "ending_before": newest_first[1]})
    assert [m.id for m in first.data] == newest_first[:1] and not first.has_more

    inactive = client.v1.billing.meters.list({"status": "inactive"})
    assert {m.id for m in inactive.data} == {ids[1], ids[4]} and not inactive.has_more
    active = client.v1.billing.meters.list({"status": "active", "limit": 100})
    assert len(active.data) == 5

    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.billing.meters.list({"limit": 101})
    assert info.value.param == "limit"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.billing.meters.list({"starting_after": "mtr_nope"})
    assert info.value.param == "starting_after"


def test_async_variants(url: str) -> None:
    async def scenario() -> None:
        async with async_client(url) as client:
            await check(client.v1.billing.meters)

    async def check(meters: Any) -> None:
        meter = await meters.create_async(
            {"display_name": "Async", "event_name": "async_m", "default_aggregation": {"formula": "count"}}
        )
        assert (await meters.retrieve_async(meter.id)).id == meter.id
        assert (await meters.update_async(meter.id, {"display_name": "B"})).display_name == "B"
        assert (await meters.deactivate_async(meter.id)).status == "inactive"
        assert (await meters.reactivate_async(meter.id)).status == "active"
        listed = await meters.list_async({"limit": 1})
        assert [m.id for m in listed.data] == [meter.id]
        with pytest.raises(stripe.InvalidRequestError):
            await meters.retrieve_async("mtr_missing")

    asyncio.run(scenario())
