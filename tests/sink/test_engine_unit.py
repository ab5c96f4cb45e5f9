"""The delivery engine's logic against an in-memory Stripe (tests/sink/fake_stripe.py): batching, retries,
splitting a refused batch, the DLQ, in-order acknowledgement, fatal stops. No broker, Redis or HTTP: the
same scenarios over the real SDK and the emulator are in test_engine.py."""

from __future__ import annotations

import asyncio
import json
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest

from processor.errors import RetryableSinkError, SinkError
from processor.meters.model import Meter
from processor.sink.engine import SinkEngine
from processor.sink.metrics import SinkMetrics
from processor.sink.ratelimit import AsyncRateLimiter
from tests.sink.conftest import cancel, event
from tests.sink.fake_stripe import InMemoryStripe, KnownMeters

SUM = Meter(id="mtr_local_1", display_name="Calls", event_name="calls", formula="sum")
PARTITION = ("accepted", 0)


class _NoWait(random.Random):
    """Backoff with no wait: full jitter draws the lower bound, so retries are immediate in these tests."""

    def uniform(self, a: float, b: float) -> float:
        return a


@dataclass
class Run:
    stripe: InMemoryStripe
    engine: SinkEngine
    acked: list[int] = field(default_factory=list)
    dead: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fatal: list[BaseException] = field(default_factory=list)
    offset: int = 0

    async def submit(self, customer: str, value: bytes) -> None:
        await self.engine.submit(PARTITION, self.offset, customer.encode(), value, self.offset)
        self.offset += 1

    async def settle(self) -> None:
        while self.engine.planner.queued or self.engine.planner.in_flight_items:
            if self.engine.failure is not None:
                return
            await asyncio.sleep(0)


def _run(mode: str, stripe: InMemoryStripe, **kwargs: Any) -> Run:
    holder: list[Run] = []

    async def dead_letter(customer: str, value: bytes) -> None:
        holder[0].dead.append((customer, json.loads(value)))

    engine = SinkEngine(
        mode=mode,
        stripe=stripe,
        registry=KnownMeters({SUM.id: SUM}),
        limiter=AsyncRateLimiter(1_000_000),
        metrics=SinkMetrics(mode),
        dead_letter=dead_letter,
        ack=lambda ref: holder[0].acked.append(ref),
        on_fatal=lambda exc: holder[0].fatal.append(exc),
        rng=_NoWait(),
        **kwargs,
    )
    holder.append(Run(stripe, engine))
    return holder[0]


async def _deliver(run: Run, records: list[tuple[str, bytes]]) -> None:
    await run.engine.start()
    for customer, value in records:
        await run.submit(customer, value)
    await asyncio.wait_for(run.settle(), 30)
    await run.engine.drain(5)


def _events(n: int, customers: int = 3) -> list[tuple[str, bytes]]:
    return [(f"cus_{i % customers}", event(SUM, f"cus_{i % customers}", f"id-{i}", i)) for i in range(n)]


@pytest.mark.parametrize("mode", ["v2_stream", "v1"])
def test_every_record_delivered_once_and_acknowledged_in_order(mode: str) -> None:
    run = _run(mode, InMemoryStripe())
    asyncio.run(_deliver(run, _events(250)))
    assert sorted(run.stripe.events) == sorted(f"id-{i}" for i in range(250))
    assert run.acked == list(range(250))
    sent = [identifier for _name, ids in run.stripe.requests for identifier in ids]
    assert sorted(sent) == sorted(run.stripe.events)  # nothing sent twice without a failure
    if mode == "v2_stream":
        assert all(len(ids) <= 100 for _name, ids in run.stripe.requests)
    assert run.engine.metrics.snapshot()["delivered"] == 250


def test_transient_failures_are_retried_until_delivered() -> None:
    stripe = InMemoryStripe(transient=deque(RetryableSinkError("429") for _ in range(5)))
    run = _run("v2_stream", stripe)
    asyncio.run(_deliver(run, _events(20)))
    assert len(stripe.events) == 20 and run.acked == list(range(20)) and not run.dead
    assert run.engine.metrics.snapshot()["retried"] == 5


def test_a_refused_batch_is_split_and_only_the_culprit_dead_lettered() -> None:
    stripe = InMemoryStripe(refuse={"id-7"})
    run = _run("v2_stream", stripe)
    asyncio.run(_deliver(run, _events(30)))
    assert sorted(stripe.events) == sorted(f"id-{i}" for i in range(30) if i != 7)
    assert [(customer, dead["record"]["identifier"]) for customer, dead in run.dead] == [("cus_1", "id-7")]
    assert run.dead[0][1]["error"]["code"] == "resource_missing"
    assert run.acked == list(range(30))  # the dead-lettered record is done too


def test_already_exists_counts_as_delivered() -> None:
    stripe = InMemoryStripe()
    run = _run("v1", stripe)
    records = _events(4)
    asyncio.run(_deliver(run, records + records[:2]))  # a redelivery after a crash
    snapshot = run.engine.metrics.snapshot()
    assert snapshot["delivered"] == 6 and snapshot["duplicates_ok"] == 2 and not run.dead
    assert run.acked == list(range(6))


@pytest.mark.parametrize("mode", ["v2_stream", "v1"])
def test_a_cancellation_reaches_stripe_after_its_event(mode: str) -> None:
    stripe = InMemoryStripe(transient=deque([RetryableSinkError("503")]))
    run = _run(mode, stripe)
    records = [*_events(5, customers=1), ("cus_0", cancel(SUM, "cus_0", "id-2"))]
    asyncio.run(_deliver(run, records))
    assert stripe.cancelled == ["id-2"] and not run.dead
    assert run.acked == list(range(6))


def test_a_fatal_error_stops_and_acknowledges_nothing_more() -> None:
    stripe = InMemoryStripe(fatal=SinkError("Stripe refused the API key"))
    run = _run("v2_stream", stripe)
    asyncio.run(_deliver(run, _events(10)))
    assert isinstance(run.engine.failure, SinkError) and run.fatal == [run.engine.failure]
    assert run.acked == [] and not stripe.events


def test_an_unparsable_record_is_dead_lettered_at_intake() -> None:
    run = _run("v2_stream", InMemoryStripe())
    asyncio.run(_deliver(run, [("cus_0", b"{not json"), *_events(2)]))
    assert [dead["error"]["code"] for _c, dead in run.dead] == ["invalid_accepted_record"]
    assert run.acked == [0, 1, 2]
