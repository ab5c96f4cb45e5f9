"""Meters through the gateway with the official SDK (sync and async): the registry behind it writes the
compacted ``meters`` topic and mirrors it to Redis, so each call is checked on both sides."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis
import stripe

from processor.config import Settings
from processor.meters import read_meters_topic
from processor.state.keys import Keys
from tests.gateway.conftest import async_client, make_meter
from tests.helpers import make_full_meter
from tests.stripe_cases import METER_CREATE_ERRORS


def test_create_retrieve_update_and_the_topic(
    client: stripe.StripeClient, gw_settings: Settings, redis_client: redis.Redis
) -> None:
    meter = make_full_meter(client)
    assert meter.livemode is False
    assert client.v1.billing.meters.retrieve(meter.id).to_dict() == meter.to_dict()

    renamed = client.v1.billing.meters.update(meter.id, {"display_name": "API calls (v2)"})
    assert renamed.display_name == "API calls (v2)" and renamed.event_name == "api_calls"
    on_topic = read_meters_topic(gw_settings)
    assert on_topic[meter.id].display_name == "API calls (v2)"
    mirrored = json.loads(str(redis_client.hget(Keys(gw_settings.redis_prefix).meters, meter.id)))
    assert mirrored["display_name"] == "API calls (v2)"


def test_deactivate_and_reactivate(client: stripe.StripeClient, gw_settings: Settings) -> None:
    meter = make_meter(client, "searches")
    off = client.v1.billing.meters.deactivate(meter.id)
    assert off.status == "inactive" and off.status_transitions.deactivated_at is not None
    assert read_meters_topic(gw_settings)[meter.id].status == "inactive"
    on = client.v1.billing.meters.reactivate(meter.id)
    assert on.status == "active" and on.status_transitions.deactivated_at is None
    assert read_meters_topic(gw_settings)[meter.id].status == "active"


def test_list_status_limit_and_cursors(client: stripe.StripeClient) -> None:
    ids = [make_meter(client, f"m{i}").id for i in range(5)]
    client.v1.billing.meters.deactivate(ids[1])
    everything = client.v1.billing.meters.list({"limit": 100})
    assert sorted(m.id for m in everything.data) == sorted(ids) and not everything.has_more
    newest_first = [m.id for m in everything.data]

    first = client.v1.billing.meters.list({"limit": 2})
    assert [m.id for m in first.data] == newest_first[:2] and first.has_more
    second = client.v1.billing.meters.list({"limit": 2, "starting_after": first.data[-1].id})
    assert [m.id for m in second.data] == newest_first[2:4] and second.has_more
    back = client.v1.billing.meters.list({"limit": 2, "ending_before": second.data[0].id})
    assert [m.id for m in back.data] == newest_first[:2]
    assert [m.id for m in client.v1.billing.meters.list({"limit": 2}).auto_paging_iter()] == newest_first

    active = client.v1.billing.meters.list({"status": "active", "limit": 100})
    assert ids[1] not in [m.id for m in active.data] and len(active.data) == 4
    inactive = client.v1.billing.meters.list({"status": "inactive"})
    assert [m.id for m in inactive.data] == [ids[1]]


@pytest.mark.parametrize(("params", "param", "code"), METER_CREATE_ERRORS)
def test_create_errors(client: stripe.StripeClient, params: dict[str, Any], param: str, code: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.billing.meters.create(params)  # type: ignore[arg-type]
    assert info.value.http_status == 400
    assert info.value.param == param and info.value.code == code


def test_conflicts_and_missing_meters(client: stripe.StripeClient) -> None:
    meter = make_meter(client, "unique_name")
    with pytest.raises(stripe.InvalidRequestError) as taken:
        make_meter(client, "unique_name")
    assert taken.value.http_status == 400 and taken.value.param == "event_name"

    for call in (
        lambda: client.v1.billing.meters.retrieve("mtr_missing"),
        lambda: client.v1.billing.meters.update("mtr_missing", {"display_name": "x"}),
        lambda: client.v1.billing.meters.deactivate("mtr_missing"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as missing:
            call()
        assert missing.value.http_status == 404 and missing.value.code == "resource_missing"

    with pytest.raises(stripe.InvalidRequestError) as immutable:
        client.v1.billing.meters.update(meter.id, {"event_name": "other"})  # type: ignore[typeddict-unknown-key]
    assert immutable.value.http_status == 400 and immutable.value.param == "event_name"
    with pytest.raises(stripe.InvalidRequestError) as bad_limit:
        client.v1.billing.meters.list({"limit": 101})
    assert bad_limit.value.param == "limit"
    with pytest.raises(stripe.InvalidRequestError) as bad_cursor:
        client.v1.billing.meters.list({"starting_after": "mtr_nope"})
    assert bad_cursor.value.param == "starting_after" and bad_cursor.value.code == "resource_missing"


def test_async_client(url: str) -> None:
    async def scenario() -> None:
        async with async_client(url) as aclient:
            meter = await aclient.v1.billing.meters.create_async(
                {"display_name": "Async", "event_name": "async_calls", "default_aggregation": {"formula": "count"}}
            )
            got = await aclient.v1.billing.meters.retrieve_async(meter.id)
            assert got.default_aggregation.formula == "count"
            listed = await aclient.v1.billing.meters.list_async({"limit": 10})
            assert [m.id for m in listed.data] == [meter.id]
            off = await aclient.v1.billing.meters.deactivate_async(meter.id)
            assert off.status == "inactive"
            with pytest.raises(stripe.InvalidRequestError) as missing:
                await aclient.v1.billing.meters.retrieve_async("mtr_missing")
            assert missing.value.http_status == 404

    asyncio.run(scenario())
