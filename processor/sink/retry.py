"""When to retry a Stripe request and how patient the sink is; the loop itself is :mod:`processor.retry`.

The decisions are pure functions (randomness is injected); :func:`retry_transient` is how every Stripe
call of the sink goes through the one retry loop (record deliveries in the engine, meter calls in the
registry) with the sink's policy: Stripe's notion of transient, :data:`STRIPE_BACKOFF`, and "resend at
once after a session renewal".

The policy is stripe-python's own (``_http_client.py`` ``_should_retry``), made explicit because the sink
runs the SDK with ``max_network_retries=0`` and retries itself: the SDK would retry one HTTP call, but the
sink must hold the customer's later records back while it waits, keep counting, and let a drain stop it.

Order of the decision (:func:`should_retry`):

1. a connection error (no HTTP answer): retry when the SDK says it may (its ``should_retry`` flag);
2. a ``Stripe-Should-Retry`` header decides when present (``true`` / ``false``);
3. 409 (conflict, e.g. a concurrent request with the same idempotency key), 429 and 5xx are transient;
4. anything else (400, 401, 402, 403, 404, ...) is final: retrying would get the same answer.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import stripe

from processor.errors import RetryableSinkError
from processor.retry import Backoff, retry_async

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_CAP_S",
    "STRIPE_BACKOFF",
    "retry_transient",
    "should_retry",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The first retry waits up to half a second (stripe-python's initial delay) ...
BACKOFF_BASE_S = 0.5
#: ... and no retry waits more than 30 s: long enough to ride out a rate-limit window or a short Stripe
#: incident without hammering, short enough that a recovered Stripe is used again quickly.
BACKOFF_CAP_S = 30.0
#: The sink's patience with Stripe: no bound on attempts (see :func:`retry_transient`).
STRIPE_BACKOFF = Backoff(base_s=BACKOFF_BASE_S, cap_s=BACKOFF_CAP_S)


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:  # a plain dict: match case-insensitively, as HTTP does
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def should_retry(error: stripe.StripeError) -> bool:
    """Whether the request that failed with ``error`` may succeed if sent again unchanged."""
    if isinstance(error, stripe.APIConnectionError):
        return bool(error.should_retry)
    advice = _header(error.headers, "Stripe-Should-Retry")
    if advice is not None and advice.strip().lower() in ("true", "false"):
        return advice.strip().lower() == "true"
    status = error.http_status
    if status is None:
        return False
    return status in (409, 429) or status >= 500


async def _nothing() -> None:
    return None


def _renewed(exc: Exception) -> bool:
    """A v2 session was renewed (``retry_after == 0``): the resend should work at once."""
    return isinstance(exc, RetryableSinkError) and exc.retry_after == 0.0


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    rng: random.Random,
    before_retry: Callable[[], Awaitable[None]] = _nothing,
    on_retry: Callable[[], None] = lambda: None,
) -> T:
    """Await ``call()`` until it does not raise :class:`RetryableSinkError`, through the one retry loop
    (:func:`processor.retry.retry_async`) with :data:`STRIPE_BACKOFF`: no limit on attempts (a transient
    failure is waited out, and the caller is cancelled at shutdown). An error with ``retry_after == 0`` (a
    renewed session) is resent at once, the first time only. ``before_retry`` runs before each resend
    (the engine takes a rate token there). Anything else the call raises propagates."""
    calls = 0

    async def attempt() -> T:
        nonlocal calls
        calls += 1
        if calls > 1:
            await before_retry()
        return await call()

    def note(exc: Exception, failures: int, delay: float) -> None:
        on_retry()
        (log.warning if failures >= 4 else log.debug)("%s failed (%s); retry %d in %.2f s", what, exc, failures, delay)

    return await retry_async(
        attempt,
        policy=STRIPE_BACKOFF,
        transient=RetryableSinkError,
        at_once=_renewed,
        on_retry=note,
        rng=rng,
    )
