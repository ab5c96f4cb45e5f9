"""Meter events and cancellations through the gateway with the official SDK: what a 200 answers is already
on Kafka (keyed as the topic contract says), and every error path answers Stripe's error shape."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import stripe

from processor.config import Settings
from processor.gateway import GatewayServer
from tests.fixtures import values
from tests.gateway.conftest import API_KEY, async_client, make_meter
from tests.helpers import FrozenClock, events_and_cancels_async, open_stream, stream_client
from topics import Topic

ReadTopic = Callable[..., list[Any]]


def test_v1_event_is_on_kafka_keyed_by_the_meters_customer_key(
    client: stripe.StripeClient, gw_settings: Settings, read_topic: ReadTopic
) -> None:
    make_meter(client, "tokens", customer_mapping={"type": "by_id", "event_payload_key": "account"})
    ts = int(time.time()) - 120
    event = client.v1.billing.meter_events.create(
        {"event_name": "tokens", "payload": {"account": "acct_1", "value": "25"}, "identifier": "ev-1", "timestamp": ts}
    )
    assert event.object == "billing.meter_event" and event.livemode is False
    assert (event.identifier, event.timestamp, event.event_name) == ("ev-1", ts, "tokens")
    assert event.payload.to_dict() == {"account": "acct_1", "value": "25"}

    generated = client.v1.billing.meter_events.create(
        {"event_name": "tokens", "payload": {"account": "acct_2", "value": "1"}}
    )
    assert generated.identifier and generated.identifier != "ev-1"
    assert abs(generated.timestamp - time.time()) < 600

    records = read_topic(gw_settings, Topic.EVENTS, expect=2)
    assert sorted(m.key() for m in records) == [b"acct_1", b"acct_2"]
    by_id = {v["identifier"]: v for v in values(records)}
    assert by_id["ev-1"] == {
        "event_name": "tokens",
        "payload": {"account": "acct_1", "value": "25"},
        "identifier": "ev-1",
        "timestamp": ts,
    }
    assert by_id[generated.identifier]["timestamp"] == generated.timestamp


def test_adjustments_v1_and_v2(client: stripe.StripeClient, gw_settings: Settings, read_topic: ReadTopic) -> None:
    v1 = client.v1.billing.meter_event_adjustments.create(
        {"event_name": "tokens", "type": "cancel", "cancel": {"identifier": "ev-1"}}
    )
    assert v1.object == "billing.meter_event_adjustment" and v1.status == "pending" and v1.type == "cancel"
    assert v1.cancel is not None and v1.cancel.identifier == "ev-1"
    v2 = client.v2.billing.meter_event_adjustments.create(
        {"event_name": "tokens", "type": "cancel", "cancel": {"identifier": "ev-2"}}
    )
    assert v2.object == "v2.billing.meter_event_adjustment" and v2.id.startswith("mea_")
    assert v2.cancel.identifier == "ev-2" and dt.datetime.fromisoformat(v2.created)
    records = read_topic(gw_settings, Topic.ADJUSTMENTS, expect=2)
    assert sorted(m.key() for m in records) == [b"ev-1", b"ev-2"]
    assert sorted(values(records), key=lambda v: v["cancel"]["identifier"]) == [
        {"event_name": "tokens", "type": "cancel", "cancel": {"identifier": "ev-1"}},
        {"event_name": "tokens", "type": "cancel", "cancel": {"identifier": "ev-2"}},
    ]
    for bad, param in (
        ({"event_name": "tokens", "type": "cancel"}, "cancel[identifier]"),
        ({"event_name": "tokens", "type": "other", "cancel": {"identifier": "x"}}, "type"),
        ({"type": "cancel", "cancel": {"identifier": "x"}}, "event_name"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.billing.meter_event_adjustments.create(bad)  # type: ignore[arg-type]
        assert info.value.http_status == 400 and info.value.param == param


def test_v2_meter_event_iso_times(client: stripe.StripeClient, gw_settings: Settings, read_topic: ReadTopic) -> None:
    make_meter(client, "tokens")
    moment = dt.datetime.now(dt.UTC).replace(microsecond=678_000) - dt.timedelta(days=1)
    event = client.v2.billing.meter_events.create(
        {
            "event_name": "tokens",
            "payload": {"stripe_customer_id": "cus_v2", "value": "7"},
            "identifier": "v2-1",
            "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.678Z"),
        }
    )
    assert event.object == "v2.billing.meter_event" and event.identifier == "v2-1"
    assert event.timestamp == moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    (record,) = read_topic(gw_settings, Topic.EVENTS, expect=1)
    assert record.key() == b"cus_v2"
    assert json.loads(record.value())["timestamp"] == int(moment.timestamp())
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v2.billing.meter_events.create(
            {"event_name": "tokens", "payload": {"stripe_customer_id": "c"}, "timestamp": "yesterday"}
        )
    assert info.value.http_status == 400 and info.value.param == "timestamp"


def test_v2_session_and_stream(
    client: stripe.StripeClient, url: str, gw_settings: Settings, read_topic: ReadTopic
) -> None:
    make_meter(client, "calls")
    streamer = open_stream(client, url)
    events = [
        {
            "event_name": "calls",
            "identifier": f"s{i}",
            "payload": {"stripe_customer_id": f"cus_{i % 3}", "value": str(i)},
        }
        for i in range(100)
    ]
    assert streamer.v2.billing.meter_event_stream.create({"events": events}) is None  # type: ignore[typeddict-item]

    with pytest.raises(stripe.InvalidRequestError) as too_many:
        streamer.v2.billing.meter_event_stream.create({"events": events + events[:1]})  # type: ignore[typeddict-item]
    assert too_many.value.http_status == 400 and too_many.value.param == "events"
    # One event invalid on its own does not fail its batch (Stripe's stream is asynchronous per event):
    # it goes to meter-event-errors with its code, the others are recorded.
    good = [{**ev, "identifier": f"b{i}"} for i, ev in enumerate(events[:3])]
    bad_batch = [*good, {"event_name": "calls", "payload": {"value": "1"}}, {**events[0], "colour": "red"}]
    assert streamer.v2.billing.meter_event_stream.create({"events": bad_batch}) is None  # type: ignore[typeddict-item]
    with pytest.raises(stripe.AuthenticationError):  # the API key is not a session token
        client.v2.billing.meter_event_stream.create({"events": events[:1]})  # type: ignore[typeddict-item]
    with pytest.raises(stripe.AuthenticationError):
        stream_client(url, "mes_forged").v2.billing.meter_event_stream.create({"events": events[:1]})  # type: ignore[typeddict-item]

    records = read_topic(gw_settings, Topic.EVENTS, expect=103, idle=2.0)
    assert len(records) == 103  # the batch refused for its own shape wrote nothing
    expected = [f"s{i}" for i in range(100)] + ["b0", "b1", "b2"]
    assert sorted(v["identifier"] for v in values(records)) == sorted(expected)
    assert {m.key() for m in records} == {b"cus_0", b"cus_1", b"cus_2"}
    errors = sorted(values(read_topic(gw_settings, Topic.ERRORS, expect=2)), key=lambda v: v["code"])
    assert [(e["code"], e["event"].get("colour")) for e in errors] == [
        ("meter_event_no_customer_defined", None),
        ("parameter_unknown", "red"),
    ]
    assert errors[0]["message"] == "events[3]: Customer mapping key stripe_customer_id not found in payload."
    assert errors[1]["event"]["identifier"] == "s0" and errors[0]["meter_id"].startswith("mtr_")


def test_expired_session(settings_factory: Callable[..., Settings], now: int) -> None:
    settings = settings_factory(METERSTREAM_API_KEYS=API_KEY)
    with GatewayServer(settings) as server:
        sessions = server.gateway.sessions
        sessions.clock = clock = FrozenClock(now)  # the session clock, moved instead of waited out
        client = stream_client(server.url, API_KEY)
        token = client.v2.billing.meter_event_session.create().authentication_token
        event = {"event_name": "calls", "payload": {"stripe_customer_id": "c", "value": "1"}}
        clock.advance(sessions.ttl_s - 1)  # still valid a second before the end of its validity
        stream_client(server.url, token).v2.billing.meter_event_stream.create({"events": [event]})  # type: ignore[list-item]
        clock.advance(1)
        with pytest.raises(stripe.TemporarySessionExpiredError) as expired:
            stream_client(server.url, token).v2.billing.meter_event_stream.create({"events": [event]})  # type: ignore[list-item]
        assert expired.value.http_status == 401 and expired.value.code == "billing_meter_event_session_expired"


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"payload": {"stripe_customer_id": "c"}}, "event_name", "parameter_missing"),
        ({"event_name": "tokens"}, "payload", "parameter_missing"),
        (
            {"event_name": "tokens", "payload": {"value": "1"}},
            "payload[stripe_customer_id]",
            "meter_event_no_customer_defined",
        ),
        ({"event_name": "tokens", "payload": {"stripe_customer_id": "c"}, "timestamp": "soon"}, "timestamp", None),
        ({"event_name": "tokens", "payload": {"stripe_customer_id": "c"}, "colour": "red"}, "colour", None),
        ({"event_name": "x" * 101, "payload": {"stripe_customer_id": "c"}}, "event_name", None),
    ],
)
def test_v1_event_errors(client: stripe.StripeClient, params: dict[str, Any], param: str, code: str | None) -> None:
    make_meter(client, "tokens")
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.billing.meter_events.create(params)  # type: ignore[arg-type]
    assert info.value.http_status == 400 and info.value.param == param
    if code is not None:
        assert info.value.code == code
    assert info.value.request_id and info.value.request_id.startswith("req_")


def test_bad_key_and_oversized_body(url: str) -> None:
    wrong = stripe.StripeClient("sk_test_not_a_configured_key", base_addresses={"api": url, "meter_events": url})
    with pytest.raises(stripe.AuthenticationError) as denied:
        wrong.v1.billing.meter_events.create({"event_name": "tokens", "payload": {"stripe_customer_id": "c"}})
    assert denied.value.http_status == 401
    with pytest.raises(stripe.AuthenticationError):
        wrong.v1.billing.meters.list()
    with pytest.raises(stripe.AuthenticationError):
        wrong.v2.billing.meter_event_session.create()

    client = stripe.StripeClient(API_KEY, base_addresses={"api": url, "meter_events": url})
    huge = {"stripe_customer_id": "c", "blob": "x" * (2 << 20)}
    with pytest.raises(stripe.APIError) as too_large:
        client.v1.billing.meter_events.create({"event_name": "tokens", "payload": huge})
    assert too_large.value.http_status == 413
    assert too_large.value.json_body is not None
    assert too_large.value.json_body["error"]["code"] == "request_too_large"


def test_backpressure_answers_429(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(METERSTREAM_API_KEYS=API_KEY)
    with GatewayServer(settings, max_in_flight=0) as server:
        client = stream_client(server.url, API_KEY)
        make_meter(client, "t", "count")
        with pytest.raises(stripe.RateLimitError) as info:
            client.v1.billing.meter_events.create({"event_name": "t", "payload": {"stripe_customer_id": "c"}})
        assert info.value.http_status == 429 and info.value.json_body is not None
        assert info.value.json_body["error"]["code"] == "rate_limit"
        assert info.value.headers is not None and info.value.headers.get("Stripe-Should-Retry") == "true"


def test_async_client(url: str, client: stripe.StripeClient, gw_settings: Settings, read_topic: ReadTopic) -> None:
    make_meter(client, "calls")

    async def scenario() -> None:
        async with async_client(url) as aclient:
            await events_and_cancels_async(aclient, "calls", "cus_x")
            session = await aclient.v2.billing.meter_event_session.create_async()
            with pytest.raises(stripe.InvalidRequestError) as info:
                await aclient.v1.billing.meter_events.create_async({"event_name": "calls", "payload": {"v": "1"}})
            assert info.value.param == "payload[stripe_customer_id]"
        async with async_client(url, session.authentication_token) as streamer:
            batch = [
                {"event_name": "calls", "identifier": f"a{i}", "payload": {"stripe_customer_id": "cus_x", "value": "4"}}
                for i in range(3, 53)
            ]
            await asyncio.gather(
                streamer.v2.billing.meter_event_stream.create_async({"events": batch[:25]}),  # type: ignore[typeddict-item]
                streamer.v2.billing.meter_event_stream.create_async({"events": batch[25:]}),  # type: ignore[typeddict-item]
            )

    asyncio.run(scenario())
    events = values(read_topic(gw_settings, Topic.EVENTS, expect=52))
    assert sorted(v["identifier"] for v in events) == sorted(f"a{i}" for i in range(1, 53))
    cancels = values(read_topic(gw_settings, Topic.ADJUSTMENTS, expect=2))
    assert sorted(v["cancel"]["identifier"] for v in cancels) == ["a1", "a2"]
