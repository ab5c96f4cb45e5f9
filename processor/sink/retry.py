"""When to retry a Stripe request, and how long to wait. Pure functions (randomness is injected).

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

import random
from collections.abc import Mapping

import stripe

__all__ = ["BACKOFF_BASE_S", "BACKOFF_CAP_S", "backoff_ceiling", "backoff_delay", "full_jitter", "should_retry"]

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
