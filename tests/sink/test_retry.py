"""The retry decision and the backoff, on real stripe-python exception objects."""

from __future__ import annotations

import asyncio
import random

import pytest
import stripe

from processor.errors import RetryableSinkError, StripeRejectedError
from processor.sink.retry import BACKOFF_CAP_S, STRIPE_BACKOFF, retry_transient, should_retry


def _error(status: int, headers: dict[str, str] | None = None) -> stripe.StripeError:
    body = {"error": {"type": "invalid_request_error", "message": "x"}}
    return stripe.InvalidRequestError("x", None, None, "{}", status, body, headers or {})


@pytest.mark.parametrize("status", [409, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status: int) -> None:
    assert should_retry(_error(status))


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 422])
def test_other_4xx_are_final(status: int) -> None:
    assert not should_retry(_error(status))


def test_stripe_should_retry_header_wins_both_ways() -> None:
    assert should_retry(_error(400, {"Stripe-Should-Retry": "true"}))
    assert not should_retry(_error(500, {"Stripe-Should-Retry": "false"}))
    assert not should_retry(_error(429, {"stripe-should-retry": "false"}))  # any header case
    assert should_retry(_error(500, {"Stripe-Should-Retry": "maybe"}))  # unknown value: ignored


def test_connection_errors_follow_the_sdk_flag() -> None:
    assert should_retry(stripe.APIConnectionError("reset", should_retry=True))
    assert not should_retry(stripe.APIConnectionError("bad certificate", should_retry=False))


def test_error_without_status_is_final() -> None:
    assert not should_retry(stripe.AuthenticationError("No API key provided"))


def test_stripe_backoff_doubles_from_half_a_second_caps_at_30_s_and_never_gives_up() -> None:
    assert [STRIPE_BACKOFF.ceiling(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert STRIPE_BACKOFF.ceiling(10_000) == BACKOFF_CAP_S
    assert STRIPE_BACKOFF.max_attempts is None and STRIPE_BACKOFF.deadline_s is None


class _NoWait(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return 0.0


def test_retry_transient_waits_out_transient_errors_and_renews_once_at_once() -> None:
    answers: list[BaseException | str] = [
        RetryableSinkError("429"),
        RetryableSinkError("session", retry_after=0.0),
        RetryableSinkError("session again", retry_after=0.0),  # the second one goes through backoff
        "ok",
    ]
    retries: list[int] = []
    resends: list[int] = []

    async def call() -> str:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def before_retry() -> None:
        resends.append(1)

    result = asyncio.run(
        retry_transient(call, what="t", rng=_NoWait(), before_retry=before_retry, on_retry=lambda: retries.append(1))
    )
    assert result == "ok" and len(retries) == 3 and len(resends) == 3

    async def rejected() -> str:
        raise StripeRejectedError("no")

    with pytest.raises(StripeRejectedError):
        asyncio.run(retry_transient(rejected, what="t", rng=_NoWait()))
