"""The emulator's error reports, through the official SDK, as Stripe's (and the meterstream gateway's):
event destinations created, listed, retrieved and deleted with the SDK and refused with the gateway's
codes; asynchronous errors of a v2 stream delivered as thin ``v1.billing.meter.error_report_triggered`` /
``no_meter_found`` notifications that ``StripeClient.parse_event_notification`` verifies, the full events
fetched with ``client.v2.core.events.retrieve``; a refused delivery is delivered again later."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from processor.emulator import EmulatorConfig, EmulatorServer
from processor.errors import InvalidRequestError
from processor.notify.destinations import checked_create
from tests.helpers import EmulatorControl, Hook, make_meter, open_stream, wait_until

REPORT = "v1.billing.meter.error_report_triggered"
NO_METER = "v1.billing.meter.no_meter_found"
INCLUDE = ["webhook_endpoint.signing_secret", "webhook_endpoint.url"]


@pytest.fixture(scope="module")
def reporting_server() -> Iterator[EmulatorServer]:
    """An emulator of its own with 1-second report windows and short retry waits, so a test is quick."""
    config = EmulatorConfig(port=0, seed=7, report_window_s=1, report_retry_s=0.2, report_poll_s=0.05)
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def url(reporting_server: EmulatorServer) -> str:
    EmulatorControl(reporting_server.url).reset()
    return reporting_server.url


@pytest.fixture
def client(url: str) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_emulator", base_addresses={"api": url, "meter_events": url})


def destination(client: stripe.StripeClient, hook: Hook, events: list[str], name: str = "errors") -> Any:
    return client.v2.core.event_destinations.create(
        {
            "name": name,
            "type": "webhook_endpoint",
            "event_payload": "thin",
            "enabled_events": events,  # type: ignore[typeddict-item]
            "webhook_endpoint": {"url": hook.url + "/hook"},
            "include": INCLUDE,  # type: ignore[typeddict-item]
        }
    )


def secret_of(dest: Any) -> str:
    secret = dest.webhook_endpoint.signing_secret
    assert isinstance(secret, str) and secret.startswith("whsec_")
    return secret


def test_error_reports_are_signed_thin_events_and_the_full_events_fetched_with_the_sdk(
    client: stripe.StripeClient, url: str, hook: Hook
) -> None:
    meter = make_meter(client, "noted")
    both = destination(client, hook, [REPORT, NO_METER])
    secret = secret_of(both)
    streamer = open_stream(client, url)
    streamer.v2.billing.meter_event_stream.create(
        {
            "events": [
                {"event_name": "noted", "identifier": "bad-1", "payload": {"stripe_customer_id": "c1", "value": "x"}},
                {"event_name": "noted", "identifier": "ok-1", "payload": {"stripe_customer_id": "c1", "value": "2"}},
                {"event_name": "ghost", "identifier": "bad-2", "payload": {"stripe_customer_id": "c1", "value": "2"}},
                {"event_name": "noted", "identifier": "bad-3", "payload": {"value": "3"}},
            ]
        }
    )
    events: dict[str, Any] = {}  # event id -> full event, of every notification received

    def all_errors_reported() -> bool:
        for body, signature, _ in hook.accepted():
            notification = client.parse_event_notification(body, signature, secret)
            if notification.id not in events:
                events[notification.id] = client.v2.core.events.retrieve(notification.id)
        return sum(e.data.reason.error_count for e in events.values()) >= 3

    wait_until(all_errors_reported, "every error reported", timeout=60)
    assert len(hook.accepted()) == len(events)  # one notification per event
    thin = json.loads(hook.accepted()[0][0])
    assert thin["object"] == "v2.core.event" and "data" not in thin
    with pytest.raises(stripe.SignatureVerificationError):
        client.parse_event_notification(hook.accepted()[0][0], hook.accepted()[0][1], "whsec_other")

    # The errors of one request fall in one window, or two when it straddles a window's end.
    reports = [e for e in events.values() if e.type == REPORT]
    assert reports and all(e.related_object.id == meter.id for e in reports)
    assert reports[0].related_object.url == f"/v1/billing/meters/{meter.id}"
    assert all(e.data.validation_start < e.data.validation_end and e.data.developer_message_summary for e in reports)
    samples = {
        t.code: (t.error_count, t.sample_errors[0].request.identifier)
        for e in reports
        for t in e.data.reason.error_types
    }
    assert samples == {"meter_event_invalid_value": (1, "bad-1"), "meter_event_no_customer_defined": (1, "bad-3")}
    missing = [e for e in events.values() if e.type == NO_METER]
    assert len(missing) == 1 and getattr(missing[0], "related_object", None) is None
    assert missing[0].data.reason.error_count == 1
    assert [(t.code, t.sample_errors[0].request.identifier) for t in missing[0].data.reason.error_types] == [
        ("no_meter", "bad-2")
    ]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v2.core.events.retrieve("evt_test_nope")
    assert err.value.code == "resource_missing"


def test_a_destination_receives_only_the_types_it_enabled(client: stripe.StripeClient, url: str, hook: Hook) -> None:
    make_meter(client, "noted")
    only_missing = destination(client, hook, [NO_METER])
    open_stream(client, url).v2.billing.meter_event_stream.create(
        {
            "events": [
                {"event_name": "noted", "identifier": "bad-1", "payload": {"value": "1"}},
                {"event_name": "ghost", "identifier": "bad-2", "payload": {"stripe_customer_id": "c1", "value": "2"}},
            ]
        }
    )
    got = wait_until(hook.accepted, "the no_meter_found notification", timeout=60)
    assert [client.parse_event_notification(b, s, secret_of(only_missing)).type for b, s, _ in got] == [NO_METER]
    assert len(hook.received) == 1  # the meter's report was never sent here


def test_a_refused_delivery_is_delivered_again_later(client: stripe.StripeClient, url: str, hook: Hook) -> None:
    dest = destination(client, hook, [NO_METER])
    hook.failing = True
    open_stream(client, url).v2.billing.meter_event_stream.create(
        {"events": [{"event_name": "ghost", "identifier": "bad", "payload": {"stripe_customer_id": "c1"}}]}
    )
    wait_until(lambda: len(hook.received) >= 2, "the refused notification sent again", timeout=60)
    assert not hook.accepted() and len({body for body, _, _ in hook.received}) == 1
    hook.failing = False
    body, signature, _ = wait_until(hook.accepted, "the notification accepted", timeout=60)[0]
    assert body == hook.received[0][0]
    notification = client.parse_event_notification(body, signature, secret_of(dest))
    assert client.v2.core.events.retrieve(notification.id).data.reason.error_types[0].code == "no_meter"


def test_destinations_are_listed_retrieved_and_deleted_with_the_sdk(client: stripe.StripeClient, hook: Hook) -> None:
    first = destination(client, hook, [REPORT], name="first")
    second = destination(client, hook, [REPORT, NO_METER], name="second")
    assert first.object == "v2.core.event_destination" and first.status == "enabled"
    assert first.event_payload == "thin" and first.type == "webhook_endpoint" and first.events_from == ["@self"]
    assert first.webhook_endpoint.url == hook.url + "/hook"
    listed = client.v2.core.event_destinations.list()
    assert sorted(d.id for d in listed.data) == sorted([first.id, second.id])
    assert all(d.webhook_endpoint.signing_secret is None for d in listed.data)  # type: ignore[union-attr]
    got = client.v2.core.event_destinations.retrieve(second.id, {"include": INCLUDE})  # type: ignore[typeddict-item]
    assert got.enabled_events == [REPORT, NO_METER] and got.webhook_endpoint is not None
    assert got.webhook_endpoint.signing_secret == second.webhook_endpoint.signing_secret
    assert client.v2.core.event_destinations.retrieve(second.id).webhook_endpoint.signing_secret is None  # type: ignore[union-attr]
    deleted = client.v2.core.event_destinations.delete(first.id)
    assert deleted.id == first.id and deleted.deleted
    assert [d.id for d in client.v2.core.event_destinations.list().data] == [second.id]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v2.core.event_destinations.retrieve(first.id)
    assert err.value.code == "resource_missing"


GOOD: dict[str, Any] = {
    "name": "errors",
    "type": "webhook_endpoint",
    "event_payload": "thin",
    "enabled_events": [NO_METER],
    "webhook_endpoint": {"url": "http://127.0.0.1:9/hook"},
}


@pytest.mark.parametrize(
    ("change", "param", "code"),
    [
        ({"type": "amazon_eventbridge"}, "type", "parameter_invalid_string"),
        ({"event_payload": "snapshot"}, "event_payload", "parameter_invalid_string"),
        ({"enabled_events": None}, "enabled_events", "parameter_missing"),
        ({"enabled_events": []}, "enabled_events", "parameter_invalid_array"),
        ({"enabled_events": ["invoice.paid"]}, "enabled_events[0]", "parameter_invalid_string"),
        ({"webhook_endpoint": None}, "webhook_endpoint[url]", "parameter_missing"),
        ({"webhook_endpoint": {"url": "ftp://x/y"}}, "webhook_endpoint[url]", "parameter_invalid_string"),
        ({"events_from": ["other"]}, "events_from", "parameter_invalid_string"),
        ({"name": None}, "name", "parameter_missing"),
        ({"colour": "red"}, "colour", "parameter_unknown"),
    ],
)
def test_a_bad_destination_is_refused_with_the_gateways_codes(
    client: stripe.StripeClient, change: dict[str, Any], param: str, code: str
) -> None:
    params = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(InvalidRequestError) as gateway:  # the check the gateway runs on the same request
        checked_create(json.loads(json.dumps(params)))
    assert (gateway.value.param, gateway.value.code) == (param, code)
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v2.core.event_destinations.create(params)  # type: ignore[arg-type]
    assert (err.value.param, err.value.code, err.value.http_status) == (param, code, 400)
    assert client.v2.core.event_destinations.list().data == []


def test_windows_follow_the_emulator_clock_and_signatures_the_wall_clock(
    client: stripe.StripeClient, url: str, hook: Hook
) -> None:
    """A frozen clock a day ahead: the window closes when the clock is moved past its end, and the
    notification still verifies (its signature's timestamp is real time, as the SDK's tolerance expects)."""
    control = EmulatorControl(url)
    dest = destination(client, hook, [NO_METER])
    start = control.set_time(int(time.time()) + 86_400, freeze=True)
    open_stream(client, url).v2.billing.meter_event_stream.create(
        {"events": [{"event_name": "ghost", "identifier": "bad", "payload": {"stripe_customer_id": "c1"}}]}
    )
    control.advance(2)
    body, signature, _ = wait_until(hook.accepted, "the notification", timeout=60)[0]
    event = client.v2.core.events.retrieve(client.parse_event_notification(body, signature, secret_of(dest)).id)
    assert dt.datetime.fromisoformat(event.data.validation_start).timestamp() == start
