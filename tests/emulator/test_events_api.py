"""Meter events and adjustments, v1 and v2, through the official SDK; the clock is moved through the
emulator's control endpoint so the 24 h / 35 day / 5 minute rules are tested without waiting."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
import stripe

from tests.emulator.conftest import async_client, make_meter
from tests.helpers import EmulatorControl, events_and_cancels_async, open_stream, stream_client

DAY = 86400


def send(client: stripe.StripeClient, customer: str, value: str, **extra: object) -> object:
    params = {"event_name": "calls", "payload": {"stripe_customer_id": customer, "value": value}, **extra}
    return client.v1.billing.meter_events.create(params)  # type: ignore[arg-type]


def test_v1_event_echo_and_log(client: stripe.StripeClient, control: EmulatorControl) -> None:
    make_meter(client, "calls")
    now = int(control.now())
    ev = send(client, "cus_a", "25", identifier="id-1", timestamp=now - 60)
    assert ev.object == "billing.meter_event"  # type: ignore[attr-defined]
    assert ev.identifier == "id-1" and ev.timestamp == now - 60  # type: ignore[attr-defined]
    assert ev.payload.to_dict() == {"stripe_customer_id": "cus_a", "value": "25"}  # type: ignore[attr-defined]
    generated = send(client, "cus_a", "5")
    assert generated.identifier  # type: ignore[attr-defined]
    log = control.ledger("calls")
    assert [(e["identifier"], e["customer"], e["value"]) for e in log["events"]] == [
        ("id-1", "cus_a", 25),
        (generated.identifier, "cus_a", 5),  # type: ignore[attr-defined]
    ]


def test_duplicate_identifier_within_24h(client: stripe.StripeClient, control: EmulatorControl) -> None:
    make_meter(client, "calls")
    send(client, "cus_a", "1", identifier="dup")
    control.advance(DAY - 5)
    with pytest.raises(stripe.InvalidRequestError) as info:
        send(client, "cus_a", "1", identifier="dup")
    err = info.value
    assert err.http_status == 400
    assert err.user_message == "An event already exists with identifier dup."
    assert err.headers is not None and err.headers.get("Stripe-Should-Retry") == "false"
    control.advance(10)  # 24 h after the first: the identifier is free again
    send(client, "cus_a", "1", identifier="dup")
    assert [e["identifier"] for e in control.ledger("calls")["events"]] == ["dup", "dup"]
    assert control.stats()["duplicates"] == 1


def test_timestamp_window(client: stripe.StripeClient, control: EmulatorControl) -> None:
    make_meter(client, "calls")
    now = int(control.now())
    send(client, "cus_a", "1", timestamp=now - 35 * DAY + 2)
    send(client, "cus_a", "1", timestamp=now + 290)
    for ts, code in ((now - 35 * DAY - 100, "timestamp_too_far_in_past"), (now + 400, "timestamp_in_future")):
        with pytest.raises(stripe.InvalidRequestError) as info:
            send(client, "cus_a", "1", timestamp=ts)
        assert info.value.code == code and info.value.param == "timestamp"
    assert len(control.ledger("calls")["events"]) == 2


@pytest.mark.parametrize("value", ["1.5", "abc", "", "1234567890123456"])
def test_values_must_be_whole_with_15_digits(client: stripe.StripeClient, control: EmulatorControl, value: str) -> None:
    make_meter(client, "calls")
    with pytest.raises(stripe.InvalidRequestError) as info:
        send(client, "cus_a", value)
    assert info.value.code in ("meter_event_invalid_value", "meter_event_value_too_many_digits")
    assert info.value.param == "payload[value]"
    assert control.ledger("calls")["events"] == []


@pytest.mark.parametrize(
    ("value", "expected"), [("-3", -3), ("1.0", 1), ("1e3", 1000), ("100000000000000000000", 10**20)]
)
def test_whole_values_accepted(
    client: stripe.StripeClient, control: EmulatorControl, value: str, expected: int
) -> None:
    make_meter(client, "calls")
    send(client, "cus_a", value)
    assert control.ledger("calls")["events"][0]["value"] == expected


def test_count_meter_ignores_value(client: stripe.StripeClient, control: EmulatorControl) -> None:
    make_meter(client, "calls", "count")
    client.v1.billing.meter_events.create({"event_name": "calls", "payload": {"stripe_customer_id": "cus_a"}})
    send(client, "cus_a", "not a number")
    assert len(control.ledger("calls")["events"]) == 2


def test_sync_rejections_and_async_stream_errors(
    client: stripe.StripeClient, control: EmulatorControl, url: str
) -> None:
    """As the gateway: v1/v2 meter_events refuse what a rule rejects (400, Stripe's code, param,
    Stripe-Should-Retry: false); the stream judges each event's rules on its own, asynchronously."""
    meter = make_meter(client, "calls")
    cases = [
        ({"event_name": "nope", "payload": {"stripe_customer_id": "c", "value": "1"}}, "no_meter", "event_name"),
        (
            {"event_name": "calls", "payload": {"value": "1"}},
            "meter_event_no_customer_defined",
            "payload[stripe_customer_id]",
        ),
        (
            {"event_name": "calls", "payload": {"stripe_customer_id": "c", "value": "x"}},
            "meter_event_invalid_value",
            "payload[value]",
        ),
    ]
    for params, code, param in cases:
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.billing.meter_events.create(params)  # type: ignore[arg-type]
        assert (info.value.code, info.value.param) == (code, param)
        assert info.value.headers is not None and info.value.headers.get("Stripe-Should-Retry") == "false"
    client.v1.billing.meters.deactivate(meter.id)
    with pytest.raises(stripe.InvalidRequestError) as inactive:
        send(client, "cus_a", "1", identifier="while-inactive")
    assert inactive.value.code == "archived_meter"
    client.v1.billing.meters.reactivate(meter.id)
    send(client, "cus_a", "1", identifier="while-inactive")  # a rejected event claimed nothing
    assert len(control.ledger("calls")["events"]) == 1
    assert control.errors() == []

    token = client.v2.billing.meter_event_session.create().authentication_token
    streamer = stripe.StripeClient(token, base_addresses={"api": url, "meter_events": url})
    batch = [
        {"event_name": "calls", "identifier": "s1", "payload": {"stripe_customer_id": "c", "value": "2"}},
        {"event_name": "calls", "identifier": "s2", "payload": {"value": "2"}},
        {"event_name": "calls", "identifier": "s3", "payload": {"stripe_customer_id": "c", "value": "x"}},
    ]
    streamer.v2.billing.meter_event_stream.create({"events": batch})  # type: ignore[typeddict-item]
    assert [e["code"] for e in control.errors()] == ["meter_event_no_customer_defined", "meter_event_invalid_value"]
    assert len(control.ledger("calls")["events"]) == 2
    with pytest.raises(stripe.InvalidRequestError) as shape:  # Stripe's request schema: the whole batch
        streamer.v2.billing.meter_event_stream.create({"events": [{**batch[0], "colour": "red"}]})  # type: ignore[typeddict-item]
    assert shape.value.param == "events[0][colour]"


def test_request_shape_errors(client: stripe.StripeClient) -> None:
    make_meter(client, "calls")
    cases = [
        ({"payload": {"stripe_customer_id": "c"}}, "event_name", "parameter_missing"),
        ({"event_name": "calls"}, "payload", "parameter_missing"),
        ({"event_name": "calls", "payload": {"stripe_customer_id": "c"}, "identifier": "x" * 101}, "identifier", None),
        (
            {"event_name": "calls", "payload": {"stripe_customer_id": "c"}, "timestamp": "soon"},
            "timestamp",
            "parameter_invalid_integer",
        ),
    ]
    for params, param, code in cases:
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.billing.meter_events.create(params)  # type: ignore[arg-type]
        assert info.value.param == param
        if code:
            assert info.value.code == code


def test_cancellation_window(client: stripe.StripeClient, control: EmulatorControl) -> None:
    make_meter(client, "calls")
    send(client, "cus_a", "10", identifier="keep")
    send(client, "cus_a", "20", identifier="gone")
    adj = client.v1.billing.meter_event_adjustments.create(
        {"event_name": "calls", "type": "cancel", "cancel": {"identifier": "gone"}}
    )
    assert adj.object == "billing.meter_event_adjustment" and adj.status == "pending"
    assert adj.cancel is not None and adj.cancel.identifier == "gone"
    client.v1.billing.meter_event_adjustments.create(
        {"event_name": "calls", "type": "cancel", "cancel": {"identifier": "gone"}}
    )
    control.advance(DAY + 1)
    client.v1.billing.meter_event_adjustments.create(
        {"event_name": "calls", "type": "cancel", "cancel": {"identifier": "keep"}}
    )
    client.v1.billing.meter_event_adjustments.create(
        {"event_name": "calls", "type": "cancel", "cancel": {"identifier": "never"}}
    )
    log = control.ledger("calls")
    assert [(e["identifier"], e["cancelled"]) for e in log["events"]] == [("keep", False), ("gone", True)]
    assert [(c["identifier"], c["result"]) for c in log["cancellations"]] == [
        ("gone", "cancelled"),
        ("gone", "already_cancelled"),
        ("keep", "too_late"),
        ("never", "not_found"),
    ]
    assert all(c["received"] >= c["event_received"] for c in log["cancellations"] if c["event_received"])
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.billing.meter_event_adjustments.create({"event_name": "calls", "type": "cancel"})
    assert info.value.param == "cancel"


def test_v2_meter_events_and_adjustments(client: stripe.StripeClient, control: EmulatorControl) -> None:
    make_meter(client, "calls")
    moment = dt.datetime.fromtimestamp(int(control.now()) - 120, tz=dt.UTC)
    ev = client.v2.billing.meter_events.create(
        {
            "event_name": "calls",
            "identifier": "v2-1",
            "payload": {"stripe_customer_id": "cus_v2", "value": "7"},
            "timestamp": moment.isoformat().replace("+00:00", "Z"),
        }
    )
    assert ev.object == "v2.billing.meter_event" and ev.identifier == "v2-1"
    assert ev.timestamp == moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v2.billing.meter_events.create(
            {"event_name": "calls", "identifier": "v2-1", "payload": {"stripe_customer_id": "cus_v2", "value": "7"}}
        )
    assert "already exists" in str(info.value.user_message)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v2.billing.meter_events.create(
            {"event_name": "calls", "payload": {"stripe_customer_id": "c", "value": "1"}, "timestamp": "yesterday"}
        )
    assert info.value.param == "timestamp"
    adj = client.v2.billing.meter_event_adjustments.create(
        {"event_name": "calls", "type": "cancel", "cancel": {"identifier": "v2-1"}}
    )
    assert adj.object == "v2.billing.meter_event_adjustment" and adj.id.startswith("mea_")
    assert control.ledger("calls")["cancellations"][0]["result"] == "cancelled"


def test_v2_stream(client: stripe.StripeClient, control: EmulatorControl, url: str) -> None:
    make_meter(client, "calls")
    streamer = open_stream(client, url)
    events = [
        {"event_name": "calls", "identifier": f"s{i}", "payload": {"stripe_customer_id": "cus_s", "value": str(i)}}
        for i in range(100)
    ]
    assert streamer.v2.billing.meter_event_stream.create({"events": events}) is None  # type: ignore[typeddict-item]
    # the stream validates asynchronously: duplicates dropped silently, bad events reported, request 200
    bad = [
        events[0],
        {"event_name": "calls", "identifier": "bad", "payload": {"stripe_customer_id": "cus_s", "value": "x"}},
        {"event_name": "nope", "payload": {"stripe_customer_id": "cus_s", "value": "1"}},
    ]
    streamer.v2.billing.meter_event_stream.create({"events": bad})  # type: ignore[typeddict-item]
    log = control.ledger("calls")["events"]
    assert len(log) == 100 and sum(e["value"] for e in log) == sum(range(100))
    assert {e["source"] for e in log} == {"v2_stream"}
    assert [e["code"] for e in control.errors()] == ["meter_event_invalid_value", "no_meter"]

    with pytest.raises(stripe.InvalidRequestError) as info:
        streamer.v2.billing.meter_event_stream.create({"events": events + events[:1]})  # type: ignore[typeddict-item]
    assert info.value.http_status == 400 and info.value.param == "events"
    with pytest.raises(stripe.AuthenticationError):
        client.v2.billing.meter_event_stream.create({"events": events[:1]})  # type: ignore[typeddict-item]

    control.advance(15 * 60)
    with pytest.raises(stripe.TemporarySessionExpiredError) as expired:
        streamer.v2.billing.meter_event_stream.create({"events": events[:1]})  # type: ignore[typeddict-item]
    assert expired.value.http_status == 401 and expired.value.code == "billing_meter_event_session_expired"
    fresh = client.v2.billing.meter_event_session.create()
    stream_client(url, fresh.authentication_token).v2.billing.meter_event_stream.create(
        {"events": [{"event_name": "calls", "payload": {"stripe_customer_id": "cus_s", "value": "1"}}]}
    )
    assert len(control.ledger("calls")["events"]) == 101


def test_async_variants(client: stripe.StripeClient, control: EmulatorControl, url: str) -> None:
    meter = make_meter(client, "calls")
    start = int(control.now()) // 3600 * 3600 - 3600

    async def scenario() -> None:
        async with async_client(url) as aclient:
            await events_and_cancels_async(aclient, "calls", "cus_x")
            session = await aclient.v2.billing.meter_event_session.create_async()
            customer = await aclient.v1.customers.create_async({"name": "Async"})
            assert (await aclient.v1.customers.retrieve_async(customer.id)).name == "Async"
        async with async_client(url, session.authentication_token) as streamer:
            event = {
                "event_name": "calls",
                "identifier": "a3",
                "payload": {"stripe_customer_id": "cus_x", "value": "4"},
            }
            await streamer.v2.billing.meter_event_stream.create_async({"events": [event]})  # type: ignore[list-item]
        async with async_client(url) as aclient:
            summary = await aclient.v1.billing.meters.event_summaries.list_async(
                meter.id, {"customer": "cus_x", "start_time": start, "end_time": start + 7200}
            )
            assert summary.data[0].aggregated_value == 4

    asyncio.run(scenario())
    log = control.ledger("calls")
    assert [(e["identifier"], e["cancelled"]) for e in log["events"]] == [("a1", True), ("a2", True), ("a3", False)]


def test_customers(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"name": "Jenny", "email": "j@example.com", "metadata": {"k": "v"}})
    assert customer.id.startswith("cus_") and customer.object == "customer"
    got = client.v1.customers.retrieve(customer.id)
    assert (got.name, got.email, got.metadata.to_dict()) == ("Jenny", "j@example.com", {"k": "v"})
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.retrieve("cus_missing")
    assert info.value.http_status == 404 and info.value.code == "resource_missing"
