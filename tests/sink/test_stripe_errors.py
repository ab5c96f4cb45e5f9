"""map_stripe_errors: every stripe-python exception becomes one of ours, with Stripe's details kept."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import stripe

from processor.errors import ConfigError, RetryableSinkError, StripeRejectedError
from processor.sink.stripe_api import base_addresses, is_already_exists, map_stripe_errors


def _raise(exc: BaseException) -> None:
    with map_stripe_errors("test call"):
        raise exc


def _body(message: str, *, type_: str = "invalid_request_error", code: str | None = None) -> dict[str, object]:
    error: dict[str, object] = {"type": type_, "message": message}
    if code:
        error["code"] = code
    return {"error": error}


def test_rejection_keeps_error_object_status_and_request_id() -> None:
    body = _body("Missing required param: event_name.")
    exc = stripe.InvalidRequestError(
        "Missing required param: event_name.", "event_name", None, "{}", 400, body, {"request-id": "req_123"}
    )
    with pytest.raises(StripeRejectedError) as info:
        _raise(exc)
    assert info.value.stripe_error == body["error"]
    assert info.value.http_status == 400 and info.value.request_id == "req_123"
    assert info.value.__cause__ is exc
    assert not is_already_exists(info.value)


def test_duplicate_identifier_is_recognised() -> None:
    message = "An event already exists with identifier id-1."
    exc = stripe.InvalidRequestError(message, "identifier", None, "{}", 400, _body(message), {})
    with pytest.raises(StripeRejectedError) as info:
        _raise(exc)
    assert is_already_exists(info.value)


@pytest.mark.parametrize(
    "exc",
    [
        stripe.RateLimitError("slow down", "{}", 429, _body("slow down", code="rate_limit"), {}),
        stripe.APIError("boom", "{}", 500, _body("boom", type_="api_error"), {}),
        stripe.APIConnectionError("reset", should_retry=True),
        stripe.InvalidRequestError("busy", None, None, "{}", 409, _body("busy"), {}),
        aiohttp.ClientPayloadError("truncated body"),
        TimeoutError(),
    ],
)
def test_transient_failures_are_retryable(exc: BaseException) -> None:
    with pytest.raises(RetryableSinkError) as info:
        _raise(exc)
    assert info.value.retry_after is None


def test_should_retry_false_header_makes_a_500_final() -> None:
    exc = stripe.APIError("no", "{}", 500, _body("no", type_="api_error"), {"Stripe-Should-Retry": "false"})
    with pytest.raises(StripeRejectedError):
        _raise(exc)


def test_expired_session_is_retried_at_once() -> None:
    exc = stripe.TemporarySessionExpiredError(
        "expired", "{}", 401, _body("expired", type_="temporary_session_expired"), {}
    )
    with pytest.raises(RetryableSinkError) as info:
        _raise(exc)
    assert info.value.retry_after == 0.0


@pytest.mark.parametrize("cls", [stripe.AuthenticationError, stripe.PermissionError])
def test_a_refused_api_key_is_a_configuration_error_not_a_dead_letter(cls: type[stripe.StripeError]) -> None:
    exc = cls("Invalid API Key provided: sk_test_****", "{}", 401, _body("bad key"), {})
    with pytest.raises(ConfigError, match="METERSTREAM_STRIPE_API_KEY"):
        _raise(exc)


def test_our_own_errors_pass_through() -> None:
    with pytest.raises(asyncio.CancelledError):
        _raise(asyncio.CancelledError())


def test_real_stripe_keeps_the_sdks_meter_events_host_other_bases_serve_both() -> None:
    assert base_addresses("https://api.stripe.com") == {"api": "https://api.stripe.com"}
    client = stripe.StripeClient("sk_test_x", base_addresses=base_addresses("https://api.stripe.com"))
    assert client._requestor._options.base_addresses["meter_events"] == "https://meter-events.stripe.com"
    assert base_addresses("http://127.0.0.1:12111") == {
        "api": "http://127.0.0.1:12111",
        "meter_events": "http://127.0.0.1:12111",
    }
