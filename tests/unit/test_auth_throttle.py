"""The gateway's failed-authentication throttle (processor/wire/auth.py), on a fake clock."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from processor.wire.auth import FailedAuthThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_free_failures_then_exponential_delays_capped() -> None:
    clock = Clock()
    t = FailedAuthThrottle(free=2, base_s=0.5, max_s=4.0, clock=clock)
    delays = []
    for _ in range(8):
        delays.append(t.failed("a"))
        clock.now += 100  # answered long ago: no queue
    assert delays == [0, 0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert t.failed("b") == 0  # per client


def test_concurrent_failures_are_spaced_not_parallel() -> None:
    clock = Clock()
    t = FailedAuthThrottle(free=0, base_s=1.0, max_s=1.0, clock=clock)
    assert [t.failed("a") for _ in range(4)] == [1.0, 2.0, 3.0, 4.0]  # all at the same instant


def test_failures_are_forgotten_after_a_quiet_period() -> None:
    clock = Clock()
    t = FailedAuthThrottle(free=1, base_s=1.0, forget_s=60, clock=clock)
    t.failed("a")
    assert t.failed("a") == 1.0
    clock.now += 61
    assert t.failed("a") == 0


def test_saturation_refuses_before_the_key_is_checked() -> None:
    clock = Clock()
    t = FailedAuthThrottle(free=0, base_s=0.01, max_waiting=2, clock=clock)

    async def scenario() -> list[bool]:
        seen = []
        holds = [asyncio.create_task(t.hold("a", 0.05)) for _ in range(2)]
        t.failed("a")
        await asyncio.sleep(0)
        seen.append(t.saturated("a"))
        await asyncio.gather(*holds)
        seen.append(t.saturated("a"))
        return seen

    assert asyncio.run(scenario()) == [True, False]


@given(st.lists(st.text(min_size=1, max_size=3), max_size=300))
def test_the_table_is_bounded(clients: list[str]) -> None:
    t = FailedAuthThrottle(max_clients=50, clock=Clock())
    for c in clients:
        t.failed(c)
    assert len(t._clients) <= 50
