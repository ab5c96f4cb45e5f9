"""When to retry a Stripe request, how long to wait, and the one retry loop.

The decisions are pure functions (randomness is injected); :func:`retry_transient` is the loop every
Stripe call of the sink goes through (record deliveries in the engine, meter calls in the registry), so
backoff, jitter and the "resend at once after a session renewal" rule live in one place.

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

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import stripe

from processor.errors import RetryableSinkError

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_CAP_S",
    "backoff_ceiling",
    "backoff_delay",
    "full_jitter",
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


def backoff_ceiling(attempt: int, *, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Upper bound of the wait before retry number ``attempt`` (1 = first retry): ``base·2^(attempt-1)``,
    capped. The exponent is bounded so a very long outage cannot overflow the float."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    return min(cap, base * 2.0 ** min(attempt - 1, 62))


def full_jitter(ceiling: float, rng: random.Random) -> float:
    """A wait drawn uniformly from ``[0, ceiling]`` ("full jitter"): many sinks that failed together
    spread their retries over the whole window instead of retrying in lockstep. Kept apart from
    :func:`backoff_ceiling` so tests can pin the randomness with a seeded ``rng``."""
    return rng.uniform(0.0, ceiling)


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt``."""
    return full_jitter(backoff_ceiling(attempt), rng)


async def _nothing() -> None:
    return None


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    rng: random.Random,
    before_retry: Callable[[], Awaitable[None]] = _nothing,
    on_retry: Callable[[], None] = lambda: None,
) -> T:
    """Await ``call()`` until it does not raise :class:`RetryableSinkError`, sleeping
    :func:`backoff_delay` between attempts (no limit: a transient failure is waited out, and the caller
    is cancelled at shutdown). An error with ``retry_after == 0`` (a renewed session) is resent at once,
    the first time only, so a server that keeps refusing sessions still meets the backoff.
    ``before_retry`` runs before each resend (the engine takes a rate token there). Anything else the
    call raises propagates."""
    attempt = 0
    immediate_used = False
    while True:
        try:
            return await call()
        except RetryableSinkError as exc:
            on_retry()
            if exc.retry_after == 0.0 and not immediate_used:
                immediate_used, delay = True, 0.0
            else:
                attempt += 1
                delay = backoff_delay(attempt, rng)
            (log.warning if attempt >= 4 else log.debug)(
                "%s failed (%s); retry %d in %.2f s", what, exc, attempt, delay
            )
            await asyncio.sleep(delay)
            await before_retry()
