"""The delivery engine without a consumer group: records are submitted directly, Stripe is the emulator
over HTTP (the real SDK), meters come from real Redis. ``ack`` and ``dead_letter`` are plain callbacks
recording what the app would commit and produce."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from processor.config import Settings, load_settings
from processor.emulator import EmulatorConfig, EmulatorServer, FaultConfig
from processor.errors import ConfigError
from processor.meters.model import Meter
from processor.sink.engine import SinkEngine
from processor.sink.meters import StripeMeters
from processor.sink.metrics import SinkMetrics
from processor.sink.ratelimit import AsyncRateLimiter
from processor.sink.stripe_api import StripeApi
from processor.state.connect import async_redis
from processor.state.keys import Keys
from tests.helpers import EmulatorControl, FrozenClock
from tests.sink.conftest import API_KEY, cancel, event

pytestmark = pytest.mark.integration

METER = Meter(id="mtr_local_1", display_name="Calls", event_name="calls", formula="sum")
LAST = Meter(id="mtr_local_2", display_name="Level", event_name="level", formula="last")
PARTITION = ("accepted", 0)


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(port=0, api_key=API_KEY, faults=FaultConfig(), seed=5)) as srv:
        yield srv


@pytest.fixture
def engine_settings(redis_url: str, unique: str, server: EmulatorServer) -> Callable[..., Settings]:
    def make(**env: str) -> Settings:
        base = {
            "METERSTREAM_REDIS_URL": redis_url,
            "METERSTREAM_REDIS_PREFIX": f"eng{unique}",
            "METERSTREAM_STRIPE_API_BASE": server.url,
            "METERSTREAM_STRIPE_API_KEY": API_KEY,
            "METERSTREAM_STRIPE_RATE": "1000",
        }
        base.update(env)
        return load_settings(base)

    return make


@dataclass
class Harness:
    engine: SinkEngine
    acked: list[int] = field(default_factory=list)
    dead: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    offset: int = 0

    async def submit(self, customer: str, value: bytes) -> None:
        await self.engine.submit(PARTITION, self.offset, customer.encode(), value, self.offset)
        self.offset += 1

    async def settle(self, timeout: float = 60.0) -> None:
        async def done() -> None:
            while self.engine.planner.queued or self.engine.planner.in_flight_items or self.engine.failure:
                if self.engine.failure:
                    raise self.engine.failure
                await asyncio.sleep(0.02)

        await asyncio.wait_for(done(), timeout)


async def _harness(settings: Settings, redis_client: aioredis.Redis, **kwargs: Any) -> Harness:
    metrics = SinkMetrics(settings.stripe_mode)
    limiter = AsyncRateLimiter(settings.stripe_rate)

    def count(name: str) -> None:
        metrics.incr("requests")
        if name == "v2.meter_event_session":
            metrics.incr("sessions")

    gateway = StripeApi(settings, acquire=limiter.acquire, on_request=count, **kwargs)
    await gateway.open()
    holder: list[Harness] = []

    async def dead_letter(customer: str, value: bytes) -> None:
        holder[0].dead.append((customer, json.loads(value)))

    engine = SinkEngine(
        mode=settings.stripe_mode,
        stripe=gateway,
        registry=StripeMeters(settings, gateway, redis_client, rng=random.Random(4)),
        limiter=limiter,
        metrics=metrics,
        dead_letter=dead_letter,
        ack=lambda ref: holder[0].acked.append(ref),
        rng=random.Random(3),
    )
    harness = Harness(engine)
    holder.append(harness)
    await engine.start()
    return harness


def _run(
    settings: Settings, script: Callable[[Harness], Awaitable[None]], *, drain: float = 5, **kwargs: Any
) -> Harness:
    """Start an engine (``kwargs`` go to its StripeApi), run ``script`` against it, drain it and close its
    connections; the harness holds what it acknowledged and dead-lettered."""

    async def run() -> Harness:
        client = async_redis(settings, decode_responses=True)
        h = await _harness(settings, client, **kwargs)
        try:
            await script(h)
            await h.engine.drain(drain)
        finally:
            await h.engine.stripe.close()
            await client.aclose()
        return h

    return asyncio.run(run())


def _mirror(redis_sync: redis.Redis, settings: Settings, *meters: Meter) -> None:
    for meter in meters:
        redis_sync.hset(Keys(settings.redis_prefix).meters, meter.id, meter.to_json())


def _log(server: EmulatorServer, event_name: str) -> dict[str, Any]:
    return EmulatorControl(server.url).ledger(event_name)


@pytest.mark.parametrize("mode", ["v2_stream", "v1"])
def test_order_and_acks_under_faults(
    mode: str, engine_settings: Callable[..., Settings], server: EmulatorServer, redis_client: redis.Redis
) -> None:
    settings = engine_settings(METERSTREAM_STRIPE_MODE=mode)
    _mirror(redis_client, settings, METER, LAST)
    EmulatorControl(server.url).faults(fail_429=0.2, fail_500=0.05)
    expected: dict[str, list[str]] = {}

    async def script(h: Harness) -> None:
        for i in range(10):
            for c in range(20):
                customer = f"cus_{c}"
                meter = LAST if i % 2 else METER
                identifier = f"{customer}-{i}"
                await h.submit(customer, event(meter, customer, identifier, i))
                expected.setdefault(customer, []).append(identifier)
        await h.settle()

    h = _run(settings, script)
    assert h.acked == list(range(200))  # every offset acknowledged, in offset order
    received = sorted(_log(server, "calls")["events"] + _log(server, "level")["events"], key=lambda e: e["seq"])
    for customer, identifiers in expected.items():
        assert [e["identifier"] for e in received if e["customer"] == customer] == identifiers
    snapshot = h.engine.metrics.snapshot()
    assert snapshot["delivered"] == 200 and snapshot["retried"] > 0 and snapshot["dead_lettered"] == 0


def test_expired_session_is_renewed_and_the_batch_resent(
    engine_settings: Callable[..., Settings], server: EmulatorServer, redis_client: redis.Redis
) -> None:
    settings = engine_settings()
    _mirror(redis_client, settings, METER)
    control = EmulatorControl(server.url)

    async def script(h: Harness) -> None:
        await h.submit("cus_1", event(METER, "cus_1", "before", 1))
        await h.settle()
        control.advance(16 * 60)  # Stripe's clock passes the 15-minute session lifetime; ours does not
        await h.submit("cus_1", event(METER, "cus_1", "after", 1))
        await h.settle()

    h = _run(settings, script)
    assert [e["identifier"] for e in _log(server, "calls")["events"]] == ["before", "after"]
    snapshot = h.engine.metrics.snapshot()
    assert snapshot["sessions"] == 2 and snapshot["retried"] == 1 and snapshot["delivered"] == 2


def test_session_is_renewed_before_it_expires(
    engine_settings: Callable[..., Settings], server: EmulatorServer, redis_client: redis.Redis
) -> None:
    settings = engine_settings()
    _mirror(redis_client, settings, METER)
    clock = FrozenClock(1000.0)

    async def script(h: Harness) -> None:
        await h.submit("cus_1", event(METER, "cus_1", "one", 1))
        await h.settle()
        clock.advance(14 * 60 + 1)  # within the last minute of the session: renew before sending
        await h.submit("cus_1", event(METER, "cus_1", "two", 1))
        await h.settle()

    h = _run(settings, script, clock=clock)
    snapshot = h.engine.metrics.snapshot()
    assert snapshot["sessions"] == 2 and snapshot["retried"] == 0 and snapshot["delivered"] == 2


def test_v1_resend_of_a_delivered_identifier_counts_as_delivered(
    engine_settings: Callable[..., Settings], server: EmulatorServer, redis_client: redis.Redis
) -> None:
    settings = engine_settings(METERSTREAM_STRIPE_MODE="v1")
    _mirror(redis_client, settings, METER)

    async def script(h: Harness) -> None:
        await h.submit("cus_1", event(METER, "cus_1", "same", 5))
        await h.submit("cus_1", event(METER, "cus_1", "same", 5))  # a replay of the accepted topic
        await h.submit("cus_1", cancel(METER, "cus_1", "same"))
        await h.settle()

    h = _run(settings, script)
    log = _log(server, "calls")
    assert [e["identifier"] for e in log["events"]] == ["same"] and log["events"][0]["cancelled"]
    assert [c["result"] for c in log["cancellations"]] == ["cancelled"]
    snapshot = h.engine.metrics.snapshot()
    assert snapshot["delivered"] == 3 and snapshot["duplicates_ok"] == 1 and not h.dead
    assert h.acked == [0, 1, 2]


def test_v1_permanent_rejection_is_dead_lettered_and_the_customer_moves_on(
    engine_settings: Callable[..., Settings], server: EmulatorServer, redis_client: redis.Redis
) -> None:
    settings = engine_settings(METERSTREAM_STRIPE_MODE="v1")
    _mirror(redis_client, settings, METER)

    async def script(h: Harness) -> None:
        await h.submit("cus_1", event(METER, "cus_1", "old", 1, timestamp=1_000_000))  # 1970: too far in the past
        await h.submit("cus_1", event(METER, "cus_1", "fine", 1))
        await h.settle()

    h = _run(settings, script)
    assert [e["identifier"] for e in _log(server, "calls")["events"]] == ["fine"]
    [(customer, dead)] = h.dead
    assert customer == "cus_1" and dead["record"]["identifier"] == "old"
    assert dead["error"]["code"] == "timestamp_too_far_in_past" and dead["http_status"] == 400
    assert h.acked == [0, 1]


def test_refused_api_key_stops_the_engine_without_acknowledging(
    engine_settings: Callable[..., Settings], server: EmulatorServer, redis_client: redis.Redis
) -> None:
    settings = engine_settings(METERSTREAM_STRIPE_API_KEY="sk_test_wrong_key_123")
    _mirror(redis_client, settings, METER)

    async def script(h: Harness) -> None:
        # The meter lookup is the first call: it is refused, and intake stops right there.
        intake = asyncio.create_task(h.submit("cus_1", event(METER, "cus_1", "e1", 1)))
        for _ in range(200):
            if h.engine.failure is not None:
                break
            await asyncio.sleep(0.05)
        intake.cancel()

    h = _run(settings, script, drain=1)
    assert isinstance(h.engine.failure, ConfigError)
    assert "METERSTREAM_STRIPE_API_KEY" in str(h.engine.failure)
    assert "sk_test_wrong" not in str(h.engine.failure)
    assert h.acked == [] and h.dead == []
