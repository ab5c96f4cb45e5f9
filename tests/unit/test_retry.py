"""The one retry loop (processor/retry.py), run without waiting: the sleep, the clock and the randomness
are injected, so every wait it asks for is recorded and checked exactly."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.retry import Backoff, retry, retry_async


class Flaky(Exception):
    """The transient error of these tests."""


class Broken(Exception):
    """An error that is not transient."""


class _Top(random.Random):
    """Always the top of the jitter window, so the waits are the ceilings."""

    def uniform(self, a: float, b: float) -> float:
        return b


class FakeTime:
    """A clock that only moves when the loop sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def clock(self) -> float:
        return self.now


def failing(errors: list[Exception], result: str = "ok") -> tuple[Callable[[], str], list[int]]:
    """A call that raises ``errors`` in turn, then returns ``result``; and the count of its calls."""
    calls = [0]

    def call() -> str:
        calls[0] += 1
        if errors:
            raise errors.pop(0)
        return result

    return call, calls


def test_ceiling_doubles_from_the_base_and_caps() -> None:
    policy = Backoff(base_s=0.5, cap_s=30.0)
    assert [policy.ceiling(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert policy.ceiling(10_000) == 30.0  # no overflow however long the outage
    with pytest.raises(ValueError):
        policy.ceiling(0)


@given(retry_number=st.integers(min_value=1, max_value=200), seed=st.integers())
def test_delay_is_within_zero_and_the_ceiling(retry_number: int, seed: int) -> None:
    policy = Backoff(base_s=0.5, cap_s=30.0)
    assert 0.0 <= policy.delay(retry_number, random.Random(seed)) <= policy.ceiling(retry_number)


def test_full_jitter_spreads_over_the_whole_window() -> None:
    policy = Backoff(base_s=8.0, cap_s=8.0)
    rng = random.Random(7)
    draws = [policy.delay(1, rng) for _ in range(2000)]
    assert min(draws) < 0.5 and max(draws) > 7.5  # not clustered at the top (that would be no jitter)
    assert policy.delay(1, random.Random(1)) == policy.delay(1, random.Random(1))  # seeded: reproducible


def test_transient_errors_are_waited_out_with_growing_waits() -> None:
    t = FakeTime()
    call, calls = failing([Flaky(), Flaky(), Flaky()])
    seen: list[tuple[str, int, float]] = []
    result = retry(
        call,
        policy=Backoff(base_s=1.0, cap_s=3.0),
        transient=Flaky,
        on_retry=lambda exc, failures, delay: seen.append((type(exc).__name__, failures, delay)),
        sleep=t.sleep,
        clock=t.clock,
        rng=_Top(),
    )
    assert result == "ok" and calls == [4]
    assert t.sleeps == [1.0, 2.0, 3.0]
    assert seen == [("Flaky", 1, 1.0), ("Flaky", 2, 2.0), ("Flaky", 3, 3.0)]


def test_an_error_that_is_not_transient_propagates_at_once() -> None:
    t = FakeTime()
    call, calls = failing([Flaky(), Broken()])
    with pytest.raises(Broken):
        retry(call, policy=Backoff(1.0, 1.0), transient=Flaky, sleep=t.sleep, clock=t.clock, rng=_Top())
    assert calls == [2] and t.sleeps == [1.0]


def test_a_predicate_decides_what_is_transient() -> None:
    t = FakeTime()
    call, calls = failing([ValueError("busy"), ValueError("bad")])
    with pytest.raises(ValueError, match="bad"):
        retry(call, policy=Backoff(1.0, 1.0), transient=lambda e: str(e) == "busy", sleep=t.sleep, clock=t.clock)
    assert calls == [2]


def test_max_attempts_counts_calls_and_the_last_error_propagates() -> None:
    t = FakeTime()
    last = Flaky("third")
    call, calls = failing([Flaky("first"), Flaky("second"), last, Flaky("never raised")])
    with pytest.raises(Flaky) as raised:
        retry(call, policy=Backoff(1.0, 8.0, max_attempts=3), transient=Flaky, sleep=t.sleep, clock=t.clock, rng=_Top())
    assert raised.value is last and calls == [3] and t.sleeps == [1.0, 2.0]


def test_a_deadline_stops_before_a_wait_that_would_end_past_it() -> None:
    t = FakeTime()
    call, calls = failing([Flaky() for _ in range(10)])
    with pytest.raises(Flaky):
        retry(
            call, policy=Backoff(1.0, 4.0, deadline_s=10.0), transient=Flaky, sleep=t.sleep, clock=t.clock, rng=_Top()
        )
    # waits 1 + 2 + 4 = 7 s; the next (4 s) would end at 11 s, past the 10 s deadline
    assert t.sleeps == [1.0, 2.0, 4.0] and calls == [4]


def test_at_once_resends_without_a_wait_the_first_time_only() -> None:
    t = FakeTime()
    call, calls = failing([Flaky("renewed"), Flaky("renewed"), Flaky("busy")])
    result = retry(
        call,
        policy=Backoff(1.0, 8.0),
        transient=Flaky,
        at_once=lambda e: str(e) == "renewed",
        sleep=t.sleep,
        clock=t.clock,
        rng=_Top(),
    )
    # the immediate resend does not advance the backoff: the second "renewed" waits the first ceiling
    assert result == "ok" and calls == [4] and t.sleeps == [0.0, 1.0, 2.0]


def test_the_async_loop_follows_the_same_schedule() -> None:
    t = FakeTime()
    errors: list[Exception] = [Flaky(), Flaky(), Broken()]

    async def call() -> str:
        raise errors.pop(0)

    with pytest.raises(Broken):
        asyncio.run(
            retry_async(call, policy=Backoff(0.5, 1.0), transient=(Flaky,), sleep=t.asleep, clock=t.clock, rng=_Top())
        )
    assert t.sleeps == [0.5, 1.0] and errors == []


def test_the_async_loop_is_cancelled_in_its_wait() -> None:
    """Cancelling the caller (a sink shutting down during a Stripe outage) ends the loop: never retried."""

    async def main() -> int:
        calls = 0

        async def call() -> None:
            nonlocal calls
            calls += 1
            raise Flaky()

        async def park(seconds: float) -> None:
            await asyncio.Event().wait()  # a wait that only ends by cancellation

        task = asyncio.create_task(retry_async(call, policy=Backoff(1.0, 1.0), transient=Flaky, sleep=park))
        while calls == 0:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return calls

    assert asyncio.run(main()) == 1
