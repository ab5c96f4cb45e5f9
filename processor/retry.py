"""Calling again after a failure that passes by itself: the one retry loop of meterstream.

Every place that waits out a transient failure goes through :func:`retry` (blocking code) or
:func:`retry_async` (asyncio): the sink's Stripe calls and its meter ensuring (processor/sink/retry.py
says which Stripe errors are transient), reconcile's Stripe reads, and the state store's script calls
while a Redis Cluster reshapes. Backoff, jitter, the bound (attempts or a deadline) and the "resend at
once" rule are therefore written, and tested, once; callers only say what is transient and how patient
to be (a :class:`Backoff`). A foundation module: it imports nothing of meterstream, so every layer may
use it.

The wait before retry ``n`` is drawn uniformly from ``[0, min(cap, base·2^(n-1))]`` ("full jitter"):
processes that failed together (every sink after a Stripe incident, every processor after a failover)
spread their retries over the whole window instead of retrying in lockstep. The sleep function, the
clock and the random source are injectable, so the tests run the loop without waiting.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Backoff", "OnRetry", "Transient", "retry", "retry_async"]

T = TypeVar("T")

#: Which errors may go away if the call is made again: a predicate, or exception classes.
Transient = Callable[[Exception], bool] | type[Exception] | tuple[type[Exception], ...]
#: Told of every retry before its wait: the error, how many calls have failed so far, the wait in seconds.
OnRetry = Callable[[Exception, int, float], None]

_RNG = random.Random()


@dataclass(frozen=True)
class Backoff:
    """How patient a caller is: exponential waits from ``base_s``, each at most ``cap_s``, and a bound.

    ``max_attempts`` counts calls (the first included): after that many failures the last error
    propagates. ``deadline_s`` gives up instead when the next wait would end more than that many seconds
    after the first call. Neither set: retried until the call succeeds or the caller is cancelled (the
    sink waits out a Stripe outage that way)."""

    base_s: float
    cap_s: float
    max_attempts: int | None = None
    deadline_s: float | None = None

    def ceiling(self, retry_number: int) -> float:
        """Upper bound of the wait before retry number ``retry_number`` (1 = the first retry). The exponent
        is bounded so a very long outage cannot overflow the float."""
        if retry_number < 1:
            raise ValueError(f"retry_number must be >= 1, got {retry_number}")
        return min(self.cap_s, self.base_s * 2.0 ** min(retry_number - 1, 62))

    def delay(self, retry_number: int, rng: random.Random) -> float:
        """A wait drawn uniformly from ``[0, ceiling]`` (full jitter); a seeded ``rng`` makes it reproducible."""
        return rng.uniform(0.0, self.ceiling(retry_number))


def _never(exc: Exception) -> bool:
    return False


def _quiet(exc: Exception, failures: int, delay: float) -> None:
    return None


class _Schedule:
    """The state of one retried call: decides, after each failure, the wait before the next call, or
    re-raises the error when it is not transient or the bound is reached."""

    __slots__ = (
        "_at_once",
        "_at_once_used",
        "_backoffs",
        "_clock",
        "_on_retry",
        "_rng",
        "_start",
        "_transient",
        "failures",
        "policy",
    )

    def __init__(
        self,
        policy: Backoff,
        transient: Transient,
        at_once: Callable[[Exception], bool],
        on_retry: OnRetry,
        rng: random.Random | None,
        clock: Callable[[], float],
    ) -> None:
        self.policy = policy
        if isinstance(transient, type | tuple):
            kinds = transient
            self._transient: Callable[[Exception], bool] = lambda exc: isinstance(exc, kinds)
        else:
            self._transient = transient
        self._at_once = at_once
        self._on_retry = on_retry
        self._rng = rng or _RNG
        self._clock = clock
        self._start = clock()
        self._at_once_used = False
        self._backoffs = 0
        #: calls that failed so far
        self.failures = 0

    def wait_after(self, exc: Exception) -> float:
        """Seconds to wait before calling again after ``exc``; raises ``exc`` when the call must not be made
        again. An error ``at_once`` accepts (a renewed session: the resend should work now) is resent without
        a wait, the first time only, so a server that keeps asking for it still meets the backoff."""
        self.failures += 1
        policy = self.policy
        if not self._transient(exc) or (policy.max_attempts is not None and self.failures >= policy.max_attempts):
            raise exc
        if not self._at_once_used and self._at_once(exc):
            self._at_once_used = True
            delay = 0.0
        else:
            self._backoffs += 1
            delay = policy.delay(self._backoffs, self._rng)
        if policy.deadline_s is not None and self._clock() + delay > self._start + policy.deadline_s:
            raise exc
        self._on_retry(exc, self.failures, delay)
        return delay


def retry(
    call: Callable[[], T],
    *,
    policy: Backoff,
    transient: Transient,
    at_once: Callable[[Exception], bool] = _never,
    on_retry: OnRetry = _quiet,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> T:
    """``call()``, made again after each ``transient`` error as ``policy`` allows (see :class:`Backoff`);
    any other error, and the last transient one, propagates unchanged."""
    schedule = _Schedule(policy, transient, at_once, on_retry, rng, clock)
    while True:
        try:
            return call()
        except Exception as exc:
            sleep(schedule.wait_after(exc))


async def retry_async(
    call: Callable[[], Awaitable[T]],
    *,
    policy: Backoff,
    transient: Transient,
    at_once: Callable[[Exception], bool] = _never,
    on_retry: OnRetry = _quiet,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> T:
    """:func:`retry` for a coroutine: the same schedule, awaited. Cancelling the caller cancels the wait
    (:class:`asyncio.CancelledError` is not an ``Exception``, so it is never retried)."""
    schedule = _Schedule(policy, transient, at_once, on_retry, rng, clock)
    while True:
        try:
            return await call()
        except Exception as exc:
            await sleep(schedule.wait_after(exc))
