"""The rate limit every Stripe request of a sink process goes through.

:class:`TokenBucket` is pure (time is passed in, in integer nanoseconds) so its arithmetic is exact and
unit-testable; :class:`AsyncRateLimiter` puts it on the event loop's clock. The bucket *reserves*: a
caller always gets a slot and is told how long to wait for it. Reservations are first come first served,
so concurrent workers never starve each other and the long-run rate is the configured one exactly (the
classic "take a token or poll" bucket overshoots or undershoots when many callers poll at once).

It is the token bucket in its virtual-scheduling form (GCRA): instead of a token count refilled by a
timer, it keeps ``tat``, the time at which the bucket would be full again. One request costs one
``interval`` (1 s / rate); a request may go ahead as long as ``tat`` is at most ``burst`` intervals in the
future. Both forms allow the same traffic; this one needs no refill step and no fractions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["DEFAULT_BURST_SECONDS", "AsyncRateLimiter", "TokenBucket"]

_NS = 1_000_000_000
#: Burst capacity as a fraction of one second of traffic: small, so that a short measurement (the
#: benchmark's few seconds, a dashboard's rate over 10 s) already sees the configured rate.
DEFAULT_BURST_SECONDS = 0.1


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` of them saved up. Times are integer nanoseconds."""

    __slots__ = ("_tat", "burst", "interval_ns")

    def __init__(self, rate: float, burst: int | None = None) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        #: Nanoseconds per token. Rounding to an integer costs at most 0.5 ns per request (at 100,000
        #: requests/s that is 0.005 %), and every later step is exact integer arithmetic.
        self.interval_ns = max(1, round(_NS / rate))
        self.burst = burst if burst is not None else max(1, int(rate * DEFAULT_BURST_SECONDS))
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst}")
        self._tat: int | None = None  # None: never used, so the bucket is full

    def reserve(self, now_ns: int) -> int:
        """Take one token; return how many nanoseconds to wait before using it (0: go now)."""
        tat = now_ns if self._tat is None else max(self._tat, now_ns)
        allowed_at = tat - (self.burst - 1) * self.interval_ns
        self._tat = tat + self.interval_ns
        return max(0, allowed_at - now_ns)

    def available(self, now_ns: int) -> int:
        """Tokens that could be taken right now without waiting (0 … burst)."""
        if self._tat is None or self._tat <= now_ns:
            return self.burst
        backlog = -(-(self._tat - now_ns) // self.interval_ns)  # whole intervals still owed, rounded up
        return max(0, self.burst - backlog)


class AsyncRateLimiter:
    """A :class:`TokenBucket` on a monotonic clock: ``await limiter.acquire()`` before each request.

    One instance is shared by every request of the process (meter lookups, sessions, events, retries),
    because Stripe's limit is per account, not per endpoint.
    """

    def __init__(self, rate: float, *, burst: int | None = None, clock: Callable[[], int] = time.monotonic_ns):
        self.bucket = TokenBucket(rate, burst)
        self._clock = clock
        self.acquired = 0

    async def acquire(self) -> None:
        wait_ns = self.bucket.reserve(self._clock())
        self.acquired += 1
        if wait_ns:
            await asyncio.sleep(wait_ns / _NS)
