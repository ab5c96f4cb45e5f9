"""``meterstream replay`` against the Stripe emulator through the official SDK: it resends what Stripe can
still deduplicate, sends what the delivery record proves Stripe never got, and nothing else."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from processor.config import Settings
from processor.meters.model import Meter
from processor.ops.replay import decide
from processor.sink.delivery import DeliveryStatus
from processor.sink.records import parse_accepted
from processor.state.connect import async_redis
from processor.state.keys import DAY_S, HOUR_S, Keys, identifier_digest
from tests.ops.conftest import Emulator
from tests.ops.helpers import cli
from tests.pipeline import producer
from topics import Topic, topic_name

METER = Meter("mtr_replay", "Replay", "replay_api", "sum", created=1)


def accepted(
    ident: str, received_s: int, *, kind: str = "event", ts: int | None = None, customer: str = "cus_r"
) -> bytes:
    body: dict[str, Any] = {
        "kind": kind,
        "meter_id": METER.id,
        "event_name": METER.event_name,
        "identifier": ident,
        "customer": customer,
        "received_at": received_s * 1000,
        "source": f"{Topic.EVENTS}/0/{ident}",
    }
    if kind == "event":
        body["timestamp"] = received_s - 60 if ts is None else ts
        body["payload"] = {"stripe_customer_id": customer, "value": "10"}
    return json.dumps(body).encode()


def mark(client: redis.Redis, settings: Settings, ident: str, received_s: int, status: str) -> None:
    day = received_s - received_s % DAY_S
    client.hset(Keys(settings.redis_prefix).delivery(METER.id, day), "e" + identifier_digest(ident), status)


def test_decide_rules(now: int) -> None:
    now_ms = now * 1000
    rec = parse_accepted(accepted("x", now - 30 * HOUR_S))
    assert decide(rec, DeliveryStatus("unknown"), now_ms) == decide(
        rec, DeliveryStatus("attempted", rec.raw["received_at"]), now_ms
    )
    assert not decide(rec, DeliveryStatus("unknown"), now_ms).send
    assert decide(rec, DeliveryStatus("never"), now_ms).send
    assert decide(rec, DeliveryStatus("refused", 1), now_ms).send
    assert not decide(rec, DeliveryStatus("never"), now_ms, cancelled_in_range=True).send
    assert not decide(rec, DeliveryStatus("delivered", 1), now_ms).send
    # a late first attempt keeps Stripe's dedup window open longer than the received time alone
    assert decide(rec, DeliveryStatus("attempted", now_ms - HOUR_S * 1000), now_ms).send
    fresh = parse_accepted(accepted("y", now - HOUR_S))
    assert decide(fresh, DeliveryStatus("unknown"), now_ms).send
    assert not decide(fresh, DeliveryStatus("delivered", 1), now_ms).send
    stale = parse_accepted(accepted("z", now - HOUR_S, ts=now - 36 * DAY_S))
    assert not decide(stale, DeliveryStatus("never"), now_ms).send


def test_replay_sends_exactly_what_cannot_double_bill(
    stripe_settings: Settings, redis_client: redis.Redis, emulator: Emulator, now: int
) -> None:
    settings = stripe_settings
    redis_client.hset(Keys(settings.redis_prefix).meters, METER.id, METER.to_json())
    emulator.client.v1.billing.meters.create(
        {"display_name": "Replay", "event_name": METER.event_name, "default_aggregation": {"formula": "sum"}}
    )
    old, older = now - 30 * HOUR_S, now - 45 * HOUR_S
    # What Stripe already has: one recent event, and one it got 30 h ago (beyond its dedup window now).
    for clock, identifier, timestamp in ((None, "recent-sent", now - 120), (old, "old-attempted", old - 60)):
        emulator.set_clock(clock)
        emulator.client.v1.billing.meter_events.create(
            {
                "event_name": METER.event_name,
                "identifier": identifier,
                "payload": {"stripe_customer_id": "cus_r", "value": "10"},
                "timestamp": timestamp,
            }
        )
    emulator.set_clock(None)

    keys = Keys(settings.redis_prefix)
    redis_client.set(keys.delivery_since, str((now - 40 * HOUR_S) * 1000))
    mark(redis_client, settings, "old-attempted", old, f"a{old * 1000}")
    mark(redis_client, settings, "old-delivered", old, f"d{old * 1000}")
    mark(redis_client, settings, "old-refused", old, f"r{old * 1000}")
    records = [
        accepted("recent-sent", now - 60),  # Stripe has it, can still dedup: resent, dropped by Stripe
        accepted("recent-new", now - 60),  # never sent: sent
        accepted("old-attempted", old),  # Stripe may have it and cannot dedup any more: not sent
        accepted("old-delivered", old),  # delivered: not sent
        accepted("old-refused", old),  # Stripe refused it: sent
        accepted("old-never", old),  # recorded since before it, no attempt: sent
        accepted("older-unknown", older),  # before the record began: not sent
        accepted("old-cancelled", old),  # never sent, but cancelled: neither is sent
        accepted("old-cancelled", old + 60, kind="cancel"),
        accepted("ancient-ts", old, ts=now - 36 * DAY_S),  # Stripe refuses timestamps older than 35 days
    ]
    p = producer(settings)
    for value in records:
        p.produce(topic_name(Topic.ACCEPTED, settings.topic_prefix), key=b"cus_r", value=value)
    assert p.flush(30) == 0

    span = ("--from", str(now - 3 * DAY_S), "--to", str(now + 60))
    dry = cli(settings, "replay", *span, "--dry-run", "--list", "-q")
    assert dry.exit_code == 0, dry.output
    assert "will send 4:" in dry.output and "will not send 6:" in dry.output
    assert "older than 24 h and not proven undelivered" in dry.output
    assert emulator.counted(METER.event_name) == ["old-attempted", "recent-sent"]  # a dry run sends nothing

    run = cli(settings, "replay", *span, "-q")
    assert run.exit_code == 0, run.output
    assert "sent 4 record(s) to Stripe (1 it already had)" in run.output
    assert emulator.counted(METER.event_name) == sorted(
        ["old-attempted", "recent-sent", "recent-new", "old-refused", "old-never"]
    )

    again = cli(settings, "replay", *span, "-q")  # everything it sent is recorded as delivered now
    assert again.exit_code == 0, again.output
    assert "will send 0:" in again.output
    assert emulator.counted(METER.event_name) == sorted(
        ["old-attempted", "recent-sent", "recent-new", "old-refused", "old-never"]
    )


def test_recording_gateway_keeps_the_delivery_record(
    stripe_settings: Settings, redis_client: redis.Redis, emulator: Emulator, now: int
) -> None:
    """What the sink gets by using RecordingStripeApi: `a` before a request, `d` / `r` after Stripe answered."""
    import asyncio

    from processor.errors import StripeRejectedError
    from processor.sink.delivery import DeliveryLog, RecordingStripeApi, lookup_statuses

    settings = stripe_settings
    keys = Keys(settings.redis_prefix)
    emulator.client.v1.billing.meters.create(
        {"display_name": "Replay", "event_name": METER.event_name, "default_aggregation": {"formula": "sum"}}
    )
    good = parse_accepted(accepted("g1", now - 60))
    bad = parse_accepted(accepted("b1", now - 60, ts=now - 40 * DAY_S))  # Stripe refuses: too old

    async def run() -> None:
        client = async_redis(settings)
        seen: list[str] = []

        async def acquire() -> None:
            seen.append("token")

        gateway = RecordingStripeApi(settings, DeliveryLog(client, keys), acquire=acquire)
        await gateway.open()
        try:
            await gateway.send_v1_event(good)
            with pytest.raises(StripeRejectedError):
                await gateway.send_v1_event(bad)
            assert [s.state for s in lookup_statuses(redis_client, keys, [good, bad])] == ["delivered", "refused"]
            await gateway.log.attempting([bad])  # a later attempt of a refused record may reach Stripe
        finally:
            await gateway.close()
            await client.aclose()

    asyncio.run(run())
    before = parse_accepted(accepted("n0", now - 60))  # received before the record began: unknown
    after = parse_accepted(accepted("n1", int(time.time()) + 60))  # after: provably never sent
    statuses = lookup_statuses(redis_client, keys, [good, bad, before, after])
    assert [s.state for s in statuses] == ["delivered", "attempted", "unknown", "never"]
    assert emulator.counted(METER.event_name) == ["g1"]
