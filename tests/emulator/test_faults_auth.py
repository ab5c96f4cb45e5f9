"""Fault injection, rate limiting, idempotency, authentication and the control endpoints, through the SDK."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
import stripe

from processor.emulator import EmulatorConfig, EmulatorServer
from tests.emulator.conftest import make_meter
from tests.helpers import EmulatorControl

EVENT = {"event_name": "calls", "identifier": "ev-1", "payload": {"stripe_customer_id": "cus_a", "value": "1"}}


def test_injected_429_has_no_side_effect(client: stripe.StripeClient, control: EmulatorControl) -> None:
    control.faults(fail_429=1.0)
    with pytest.raises(stripe.RateLimitError) as info:
        make_meter(client, "calls")
    assert info.value.http_status == 429
    assert info.value.headers is not None and info.value.headers.get("Stripe-Should-Retry") == "true"
    assert info.value.request_id and info.value.request_id.startswith("req_")
    control.faults(fail_429=0.0)
    assert client.v1.billing.meters.list().data == []


def test_injected_500_has_no_side_effect(client: stripe.StripeClient, control: EmulatorControl) -> None:
    make_meter(client, "calls")
    control.faults(fail_500=1.0)
    with pytest.raises(stripe.APIError) as info:
        client.v1.billing.meter_events.create(EVENT)  # type: ignore[arg-type]
    assert info.value.http_status == 500
    control.faults(fail_500=0.0)
    assert control.ledger("calls")["events"] == []
    client.v1.billing.meter_events.create(EVENT)  # type: ignore[arg-type]  # the identifier was never claimed


def test_v2_rate_limit_is_rate_limit_error(client: stripe.StripeClient, control: EmulatorControl, url: str) -> None:
    session = client.v2.billing.meter_event_session.create()
    control.faults(fail_429=1.0)
    streamer = stripe.StripeClient(session.authentication_token, base_addresses={"api": url, "meter_events": url})
    with pytest.raises(stripe.RateLimitError):
        streamer.v2.billing.meter_event_stream.create({"events": [EVENT]})  # type: ignore[list-item]


def test_fault_rate_roughly_honoured(client: stripe.StripeClient, control: EmulatorControl) -> None:
    control.faults(fail_429=0.3, fail_500=0.1)
    limited = failed = ok = 0
    for _ in range(400):
        try:
            client.v1.billing.meters.list()
            ok += 1
        except stripe.RateLimitError:
            limited += 1
        except stripe.APIError:
            failed += 1
    # expected 120 (sd ~9) and 28 (sd ~5); the bounds are many standard deviations wide
    assert 70 <= limited <= 170
    assert 8 <= failed <= 60
    assert ok == 400 - limited - failed
    assert control.stats()["fault_429"] == limited


def test_rps_limit(client: stripe.StripeClient, control: EmulatorControl) -> None:
    control.faults(rps=0.2)  # one request per 5 s, burst of one
    client.v1.billing.meters.list()
    with pytest.raises(stripe.RateLimitError):
        client.v1.billing.meters.list()
    control.faults(rps=None)
    client.v1.billing.meters.list()


def test_sdk_retry_after_commit_is_replayed(client: stripe.StripeClient, control: EmulatorControl, url: str) -> None:
    """A 500 after commit: the SDK's retry carries the same Idempotency-Key and gets the saved answer, so
    the event counts once; a resend with a new key is the identifier's duplicate 400."""
    make_meter(client, "calls")
    control.faults(fail_after_commit=1.0)
    with pytest.raises(stripe.APIError):
        client.v1.billing.meter_events.create(EVENT, {"idempotency_key": "key-1"})  # type: ignore[arg-type]
    assert len(control.ledger("calls")["events"]) == 1
    replay = client.v1.billing.meter_events.create(EVENT, {"idempotency_key": "key-1"})  # type: ignore[arg-type]
    assert replay.identifier == "ev-1"
    assert replay.last_response.headers.get("Idempotent-Replayed") == "true"
    retrying = stripe.StripeClient(
        "sk_test_emulator", base_addresses={"api": url, "meter_events": url}, max_network_retries=2
    )
    second = dict(EVENT, identifier="ev-2")
    assert retrying.v1.billing.meter_events.create(second).identifier == "ev-2"  # type: ignore[arg-type]
    control.faults(fail_after_commit=0.0)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.billing.meter_events.create(second)  # type: ignore[arg-type]
    assert "already exists" in str(info.value.user_message)
    assert [e["identifier"] for e in control.ledger("calls")["events"]] == ["ev-1", "ev-2"]
    assert control.stats()["idempotent_replays"] >= 2


def test_idempotency_key_with_other_params(client: stripe.StripeClient, control: EmulatorControl) -> None:
    make_meter(client, "calls")
    client.v1.billing.meter_events.create(EVENT, {"idempotency_key": "same"})  # type: ignore[arg-type]
    with pytest.raises(stripe.IdempotencyError):
        client.v1.billing.meter_events.create(dict(EVENT, identifier="other"), {"idempotency_key": "same"})  # type: ignore[arg-type]


def test_bad_keys_are_401(url: str, control: EmulatorControl) -> None:
    for key in ("sk_live_abc", "rk_test_abc", "sk_test_"):
        bad = stripe.StripeClient(key, base_addresses={"api": url, "meter_events": url})
        with pytest.raises(stripe.AuthenticationError) as info:
            bad.v1.billing.meters.list()
        assert info.value.http_status == 401
        assert key not in str(info.value.http_body)


def test_configured_api_key() -> None:
    with EmulatorServer(EmulatorConfig(port=0, api_key="sk_test_only_this")) as server:
        good = stripe.StripeClient("sk_test_only_this", base_addresses={"api": server.url})
        assert good.v1.billing.meters.list().data == []
        other = stripe.StripeClient("sk_test_something_else", base_addresses={"api": server.url})
        with pytest.raises(stripe.AuthenticationError):
            other.v1.billing.meters.list()


def test_latency_and_control_endpoint(client: stripe.StripeClient, control: EmulatorControl) -> None:
    assert control.faults(latency_ms=5)["latency_ms"] == 5
    assert client.v1.billing.meters.list().data == []
    with pytest.raises(urllib.error.HTTPError) as info:
        control.faults(fail_429=2)
    assert info.value.code == 400
    body = json.loads(info.value.read())
    assert body["error"]["param"] == "fail_429"
    with pytest.raises(urllib.error.HTTPError):
        control.faults(colour="red")
    control.reset()
    assert control.call("GET", "/_emulator/faults")["latency_ms"] == 0


def test_request_id_on_every_answer(url: str) -> None:
    for path in ("/v1/billing/meters", "/v1/nowhere", "/_emulator/health"):
        try:
            with urllib.request.urlopen(url + path, timeout=10) as response:
                headers = response.headers
        except urllib.error.HTTPError as err:
            headers = err.headers
        assert headers["Request-Id"].startswith("req_")


def test_too_large_body(client: stripe.StripeClient, control: EmulatorControl) -> None:
    make_meter(client, "calls")
    payload = {"stripe_customer_id": "cus_a", "value": "1", "blob": "x" * (2 << 20)}
    with pytest.raises(stripe.StripeError) as info:
        client.v1.billing.meter_events.create({"event_name": "calls", "payload": payload})
    assert info.value.http_status == 413
