"""The synchronous rules of v1 and v2 ``meter_events`` (Stripe answers these with a 400 at request time),
judged with the processor's own rule functions: each Stripe code, its message, ``param`` and
``Stripe-Should-Retry: false``; and the duplicate answer once the processor holds an identifier."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import pytest
import stripe

from processor.config import Settings
from tests.fixtures import values
from tests.gateway.conftest import make_meter, run_processor
from topics import Topic

ReadTopic = Callable[..., list[Any]]
DAY = 86_400


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _create(client: stripe.StripeClient, version: str, params: dict[str, Any]) -> Any:
    if version == "v1":
        return client.v1.billing.meter_events.create(params)  # type: ignore[arg-type]
    if "timestamp" in params:
        params = {**params, "timestamp": _iso(params["timestamp"])}
    return client.v2.billing.meter_events.create(params)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_each_rule_answers_its_stripe_code(client: stripe.StripeClient, version: str) -> None:
    make_meter(client, "rated")
    gone = make_meter(client, "gone", "count")
    client.v1.billing.meters.deactivate(gone.id)
    now = int(time.time())
    ok = {"stripe_customer_id": "c1", "value": "3"}
    cases: list[tuple[dict[str, Any], str, str, str]] = [
        (
            {"event_name": "nothing", "payload": ok},
            "no_meter",
            "event_name",
            "No active meter was found for event_name nothing.",
        ),
        (
            {"event_name": "gone", "payload": ok},
            "archived_meter",
            "event_name",
            f"The meter {gone.id} for event_name gone is inactive.",
        ),
        (
            {"event_name": "rated", "payload": {"value": "3"}},
            "meter_event_no_customer_defined",
            "payload[stripe_customer_id]",
            "Customer mapping key stripe_customer_id not found in payload.",
        ),
        (
            {"event_name": "rated", "payload": {"stripe_customer_id": "c1", "value": "1.5"}},
            "meter_event_invalid_value",
            "payload[value]",
            "Value key value is not a whole number.",
        ),
        (
            {"event_name": "rated", "payload": {"stripe_customer_id": "c1"}},
            "meter_event_invalid_value",
            "payload[value]",
            "Value key value not found in payload.",
        ),
        (
            {"event_name": "rated", "payload": {"stripe_customer_id": "c1", "value": "1234567890123456"}},
            "meter_event_value_too_many_digits",
            "payload[value]",
            "The value in the event payload can have at most 15 digits. Received 1234567890123456.",
        ),
        (
            {"event_name": "rated", "payload": ok, "timestamp": now - 36 * DAY},
            "timestamp_too_far_in_past",
            "timestamp",
            "Timestamp must be within the past 35 days.",
        ),
        (
            {"event_name": "rated", "payload": ok, "timestamp": now + 3600},
            "timestamp_in_future",
            "timestamp",
            "Timestamp must not be more than 5 minutes in the future.",
        ),
    ]
    for params, code, param, message in cases:
        with pytest.raises(stripe.InvalidRequestError) as info:
            _create(client, version, params)
        err = info.value
        assert (err.http_status, err.code, err.param, err.user_message) == (400, code, param, message), params
        assert err.headers is not None and err.headers.get("Stripe-Should-Retry") == "false"
    assert _create(client, version, {"event_name": "rated", "payload": ok, "timestamp": now - 34 * DAY})


def test_an_identifier_the_processor_holds_is_a_duplicate(
    client: stripe.StripeClient, gw_settings: Settings, read_topic: ReadTopic
) -> None:
    meter = make_meter(client, "once")
    payload = {"stripe_customer_id": "c1", "value": "2"}
    client.v1.billing.meter_events.create({"event_name": "once", "payload": payload, "identifier": "dup-1"})
    # Not judged yet by the processor: accepted, and the processor (the authority) drops the second one.
    client.v2.billing.meter_events.create({"event_name": "once", "payload": payload, "identifier": "dup-1"})
    run_processor(gw_settings)
    for create in (client.v1.billing.meter_events.create, client.v2.billing.meter_events.create):
        with pytest.raises(stripe.InvalidRequestError) as info:
            create({"event_name": "once", "payload": payload, "identifier": "dup-1"})  # type: ignore[operator]
        assert (info.value.http_status, info.value.param) == (400, "identifier")
        assert info.value.user_message == "An event already exists with identifier dup-1."
        assert info.value.headers is not None and info.value.headers.get("Stripe-Should-Retry") == "false"
    accepted = values(read_topic(gw_settings, Topic.ACCEPTED, expect=1, idle=1.0))
    assert [(a["identifier"], a["meter_id"]) for a in accepted] == [("dup-1", meter.id)]


def test_a_stream_event_refused_by_the_gateway_can_be_replayed_once(
    client: stripe.StripeClient, url: str, gw_settings: Settings, read_topic: ReadTopic
) -> None:
    """The gateway's error record keeps the event and its identifier, so `meterstream errors replay`
    resends it once its cause is fixed (here: the meter did not exist yet)."""
    from tests.ops.helpers import cli

    token = client.v2.billing.meter_event_session.create().authentication_token
    streamer = stripe.StripeClient(token, base_addresses={"api": url, "meter_events": url})
    at = int(time.time()) - 3600
    moment = _iso(at)
    event = {"event_name": "later", "payload": {"stripe_customer_id": "c1", "value": "7"}, "timestamp": moment}
    streamer.v2.billing.meter_event_stream.create({"events": [event]})  # type: ignore[typeddict-item]
    (error,) = values(read_topic(gw_settings, Topic.ERRORS, expect=1))
    assert (error["code"], error["topic"], error["meter_id"]) == ("no_meter", "gateway:v2_stream", None)
    assert error["identifier"]

    meter = make_meter(client, "later")
    done = cli(gw_settings, "errors", "replay", "--code", "no_meter")
    assert done.exit_code == 0 and "replayed 1 record(s)" in done.output, done.output
    again = cli(gw_settings, "errors", "replay", "--code", "no_meter")
    assert "will replay 0:" in again.output, again.output
    run_processor(gw_settings)
    (accepted,) = values(read_topic(gw_settings, Topic.ACCEPTED, expect=1, idle=1.0))
    assert (accepted["identifier"], accepted["meter_id"]) == (error["identifier"], meter.id)
    assert accepted["timestamp"] == at  # the event's own time, not the replay's
