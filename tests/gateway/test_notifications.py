"""Error reports as Stripe delivers them: an event destination (created with the SDK) receives thin
``v1.billing.meter.error_report_triggered`` / ``no_meter_found`` notifications, signed so that
``StripeClient.parse_event_notification`` verifies them; the full events are fetched with the SDK; a
delivery the endpoint refused is retried, including by a notifier started after the first one stopped."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import stripe

from processor.config import Settings
from processor.events.producer import MeterEventProducer
from processor.notify.dispatcher import Notifier
from tests.gateway.conftest import make_meter, run_processor
from tests.helpers import Hook, wait_until

SECRET_INCLUDE = ["webhook_endpoint.signing_secret", "webhook_endpoint.url"]


class Running:
    """A notifier in a background thread (short windows and backoff, so a test is quick)."""

    def __init__(self, settings: Settings) -> None:
        self.notifier = Notifier(settings, window_s=1, grace_s=0.2, backoff_base_s=0.2, poll_s=0.1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.notifier.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        self.notifier.close()


def stream(client: stripe.StripeClient, events: list[dict[str, Any]]) -> None:
    token = client.v2.billing.meter_event_session.create().authentication_token
    base = client._requestor.base_addresses["api"]  # type: ignore[attr-defined]
    streamer = stripe.StripeClient(token, base_addresses={"api": base, "meter_events": base})
    streamer.v2.billing.meter_event_stream.create({"events": events})  # type: ignore[typeddict-item]


def test_signed_error_reports_fetched_with_the_sdk_and_kept_across_a_restart(
    client: stripe.StripeClient, gw_settings: Settings, hook: Hook
) -> None:
    meter = make_meter(client, "noted")
    dest = client.v2.core.event_destinations.create(
        {
            "name": "errors",
            "type": "webhook_endpoint",
            "event_payload": "thin",
            "enabled_events": ["v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found"],
            "webhook_endpoint": {"url": hook.url + "/hook"},
            "include": SECRET_INCLUDE,
        }
    )
    assert dest.object == "v2.core.event_destination" and dest.type == "webhook_endpoint"
    assert dest.webhook_endpoint is not None and dest.webhook_endpoint.signing_secret is not None
    secret = dest.webhook_endpoint.signing_secret
    assert secret.startswith("whsec_")
    listed = client.v2.core.event_destinations.list()
    assert [d.id for d in listed.data] == [dest.id] and listed.data[0].webhook_endpoint.signing_secret is None  # type: ignore[union-attr]
    # The SDK sends `include` on a GET as include[0]=…, include[1]=…: the secret and URL come back only then.
    got = client.v2.core.event_destinations.retrieve(dest.id, {"include": SECRET_INCLUDE})
    assert got.webhook_endpoint is not None and got.webhook_endpoint.signing_secret == secret
    assert got.webhook_endpoint.url == hook.url + "/hook"
    bare = client.v2.core.event_destinations.retrieve(dest.id)
    assert bare.webhook_endpoint is not None and bare.webhook_endpoint.signing_secret is None

    # errors the gateway finds in a stream batch, and errors the processor finds
    stream(
        client,
        [
            {"event_name": "noted", "identifier": "bad-1", "payload": {"value": "1"}},
            {"event_name": "noted", "identifier": "ok-1", "payload": {"stripe_customer_id": "c1", "value": "2"}},
            {"event_name": "ghost", "identifier": "bad-2", "payload": {"stripe_customer_id": "c1", "value": "2"}},
        ],
    )
    with MeterEventProducer(gw_settings) as producer:
        producer.send("noted", {"stripe_customer_id": "c1", "value": "abc"}, identifier="bad-3")
    run_processor(gw_settings)

    hook.failing = True  # the first attempts fail: the deliveries must be retried
    first = Running(gw_settings)
    try:
        wait_until(lambda: len({r[0] for r in hook.received}) >= 2, "two failed deliveries", timeout=90)
    finally:
        first.close()
    assert not hook.accepted()
    hook.failing = False
    events: dict[str, Any] = {}  # event id -> full event, of every acknowledged notification

    def all_errors_reported() -> bool:
        for body, signature, _ in hook.accepted():
            notification = client.parse_event_notification(body, signature, secret)
            if notification.id not in events:
                events[notification.id] = notification.fetch_event()
        return sum(e.data.reason.error_count for e in events.values()) >= 3

    second = Running(gw_settings)  # a restarted notifier resumes the deliveries it owes
    try:
        wait_until(all_errors_reported, "every error reported", timeout=90)
    finally:
        second.close()
    with pytest.raises(stripe.SignatureVerificationError):
        client.parse_event_notification(hook.accepted()[0][0], hook.accepted()[0][1], "whsec_other")

    # The gateway's and the processor's errors may fall in one window or two: one report per meter and window.
    reports = [e for e in events.values() if e.type == "v1.billing.meter.error_report_triggered"]
    assert reports and all(e.related_object.id == meter.id for e in reports)
    assert reports[0].related_object.url == f"/v1/billing/meters/{meter.id}"
    samples = {
        t.code: (t.error_count, t.sample_errors[0].request.identifier, t.sample_errors[0].error_message)
        for e in reports
        for t in e.data.reason.error_types
    }
    assert sorted(samples) == ["meter_event_invalid_value", "meter_event_no_customer_defined"]
    assert samples["meter_event_no_customer_defined"][:2] == (1, "bad-1")
    assert "stripe_customer_id" in samples["meter_event_no_customer_defined"][2]
    assert samples["meter_event_invalid_value"][:2] == (1, "bad-3")
    assert all(e.data.validation_start < e.data.validation_end and e.data.developer_message_summary for e in reports)
    notifications = [client.parse_event_notification(body, sig, secret) for body, sig, _ in hook.accepted()]
    report_notification = next(n for n in notifications if n.type == "v1.billing.meter.error_report_triggered")
    assert report_notification.fetch_related_object().id == meter.id  # type: ignore[attr-defined]
    by_type = {e.type: e for e in events.values()}
    assert sorted(by_type) == ["v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found"]

    missing = by_type["v1.billing.meter.no_meter_found"]
    assert missing.data.reason.error_count == 1 and missing.data.reason.error_types[0].code == "no_meter"
    assert client.v2.core.events.retrieve(missing.id).id == missing.id
    with pytest.raises(stripe.InvalidRequestError):
        client.v2.core.events.retrieve("evt_test_nope")
    # each report was acknowledged once, although two notifiers read the same records
    assert len(hook.accepted()) == len(events)
