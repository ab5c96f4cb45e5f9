"""The token bucket: exact rate over any window, bounded burst, FIFO reservations (injected clock)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.sink.ratelimit import AsyncRateLimiter, TokenBucket

NS = 1_000_000_000


def test_full_bucket_allows_burst_then_one_per_interval() -> None:
    bucket = TokenBucket(rate=10, burst=3)  # one token per 100 ms
    assert bucket.interval_ns == 100_000_000
    assert [bucket.reserve(0) for _ in range(3)] == [0, 0, 0]
    assert bucket.reserve(0) == 100_000_000
    assert bucket.reserve(0) == 200_000_000
    assert bucket.available(0) == 0


def test_tokens_refill_with_time_up_to_burst() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    for _ in range(3):
        bucket.reserve(0)
    assert bucket.available(100_000_000) == 1
    assert bucket.available(250_000_000) == 2
    assert bucket.available(10 * NS) == 3  # never more than the burst
    assert bucket.reserve(10 * NS) == 0


def test_default_burst_is_a_tenth_of_a_second() -> None:
    assert TokenBucket(rate=1000).burst == 100
    assert TokenBucket(rate=25).burst == 2
    assert TokenBucket(rate=0.5).burst == 1


@pytest.mark.parametrize("rate", [0, -1])
def test_rejects_non_positive_rate(rate: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate)


@given(
    rate=st.integers(min_value=1, max_value=100_000),
    burst=st.integers(min_value=1, max_value=50),
    arrivals=st.lists(st.integers(min_value=0, max_value=5 * NS), min_size=1, max_size=300),
)
def test_granted_times_never_exceed_rate_plus_burst(rate: int, burst: int, arrivals: list[int]) -> None:
    """Whatever the arrival pattern, in any window [a, b] the requests *granted* (arrival + wait) number at
    most burst + (b - a) / interval, and grants are in reservation order (FIFO)."""
    bucket = TokenBucket(rate=rate, burst=burst)
    arrivals.sort()
    granted = [t + bucket.reserve(t) for t in arrivals]
    assert granted == sorted(granted)
    interval = bucket.interval_ns
    for i in range(len(granted)):
        for j in range(i, min(len(granted), i + 60)):
            span = granted[j] - granted[i]
            assert j - i + 1 <= burst + span // interval


@given(rate=st.integers(min_value=1, max_value=10_000), n=st.integers(min_value=1, max_value=2000))
def test_backlog_is_served_at_exactly_the_rate(rate: int, n: int) -> None:
    bucket = TokenBucket(rate=rate, burst=1)
    waits = [bucket.reserve(0) for _ in range(n)]
    assert waits == [k * bucket.interval_ns for k in range(n)]


def test_async_limiter_waits_for_the_bucket() -> None:
    now = [0]
    limiter = AsyncRateLimiter(1000, burst=1, clock=lambda: now[0])

    async def run() -> float:
        loop = asyncio.get_running_loop()
        await limiter.acquire()  # immediate
        start = loop.time()
        await limiter.acquire()  # must wait one interval (1 ms) on the injected clock
        return loop.time() - start

    assert asyncio.run(run()) >= 0.0009
    assert limiter.acquired == 2
