"""``meterstream reconcile`` end to end: events through the real processor into Redis, through the sink
engine (``replay``) into the Stripe emulator, then compared through the official SDK."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
import redis

from processor.config import Settings
from processor.meters.model import Meter
from processor.ops.reconcile import stripe_value
from processor.retry import Backoff
from processor.state.keys import Keys
from processor.windows import day_start, hour_start
from tests.ops.conftest import Emulator
from tests.ops.helpers import cli, progress_lines, run_processor
from tests.pipeline import event_value, put_meters, put_records

METER = Meter("mtr_rc", "Reconcile", "rc_api", "sum", created=1)


def mirror(client: redis.Redis, settings: Settings, meter: Meter) -> None:
    """The registry's Redis mirror of a meter (what `usage`/`reconcile` look meters up in)."""
    keys = Keys(settings.redis_prefix)
    client.hset(keys.meters, meter.id, meter.to_json())
    client.hset(keys.meter_names, meter.event_name, meter.id)


def send(settings: Settings, events: list[tuple[str, int, str, int]]) -> None:
    received = int(time.time() * 1000)
    put_records(
        settings,
        [
            (customer, event_value(METER.event_name, customer, value, ident, ts), received)
            for customer, value, ident, ts in events
        ],
    )


def test_stripe_values_are_read_exactly() -> None:
    assert stripe_value(25.0) == 25 and isinstance(stripe_value(25.0), int)
    assert stripe_value(2.5) == Decimal("2.5")
    assert stripe_value(10**20) == 10**20
    assert stripe_value(None) is None


def test_reconcile_finds_drift_per_bucket(
    stripe_settings: Settings, redis_client: redis.Redis, emulator: Emulator, now: int
) -> None:
    settings, today_start = stripe_settings, day_start(now)
    put_meters(settings, [METER], int(time.time() * 1000) - 60_000)
    mirror(redis_client, settings, METER)
    today = max(today_start, now - 120)  # (today's bucket even just after midnight)
    send(settings, [("c1", 10, "a", today), ("c1", 5, "b", today_start - 3600), ("c2", 7, "c", now - 60)])
    run_processor(settings)
    # the window is in received time: the records were produced after the test started
    sent = cli(settings, "replay", "--from", str(now - 86_400), "--to", str(int(time.time()) + 600), "-q")
    assert sent.exit_code == 0 and "sent 3 record(s)" in sent.output, sent.output

    span = ("--from", str(today_start - 86_400), "--to", str(today_start + 86_400))
    clean = cli(settings, "reconcile", "--meter", "rc_api", "--last", "2d")  # the same two days as span
    assert clean.exit_code == 0, clean.output
    assert clean.stdout.splitlines()[-1] == "0 of 2 customer(s) drift (0 bucket(s))"
    first_day = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(span[1])))
    assert f" {first_day} .. " in clean.stdout.splitlines()[0]
    # progress without a terminal: plain lines on stderr, with the total
    assert progress_lines(clean.stderr, "customers compared") == [(0, 2), (1, 2), (2, 2)]

    # Stripe gets one event the pipeline never saw (someone called Stripe directly)
    emulator.client.v1.billing.meter_events.create(
        {
            "event_name": "rc_api",
            "identifier": "rogue",
            "payload": {"stripe_customer_id": "c1", "value": "4"},
            "timestamp": today,
        }
    )
    # and the pipeline counts a customer Stripe has never heard of (its events were never forwarded)
    send(settings, [("c3", 8, "d", now - 30)])
    run_processor(settings)

    drift = cli(settings, "reconcile", "--meter", METER.id, *span)
    assert drift.exit_code == 1, drift.output
    assert "c1: 1 day(s) drift" in drift.output
    assert f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(today_start))}  redis=10  stripe=14" in drift.output
    assert "c3: 1 day(s) drift" in drift.output and "redis=8  stripe=-" in drift.output
    assert "2 of 3 customer(s) drift (2 bucket(s))" in drift.output

    one = cli(
        settings,
        "reconcile",
        "--meter",
        "rc_api",
        "--customer",
        "c2",
        "--group",
        "hour",
        "--from",
        str(hour_start(now) - 3 * 3600),
        "--to",
        str(hour_start(now) + 3600),
    )
    assert one.exit_code == 0, one.output
    assert "c2: no drift in 4 hour(s)" in one.output

    misaligned = cli(
        settings, "reconcile", "--meter", "rc_api", "--customer", "c2", "--from", str(now - 30), "--to", str(now)
    )
    assert misaligned.exit_code == 2 and "aligned" in misaligned.output


def test_reconcile_waits_out_stripes_rate_limit(
    stripe_settings: Settings,
    redis_client: redis.Redis,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    now: int,
) -> None:
    settings, today_start = stripe_settings, day_start(now)
    put_meters(settings, [METER], int(time.time() * 1000) - 60_000)
    mirror(redis_client, settings, METER)
    customers = [f"c{i}" for i in range(6)]
    send(settings, [(c, i + 1, f"rl-{c}", now - 60) for i, c in enumerate(customers)])
    run_processor(settings)
    sent = cli(settings, "replay", "--from", str(now - 86_400), "--to", str(int(time.time()) + 600), "-q")
    assert sent.exit_code == 0 and "sent 6 record(s)" in sent.output, sent.output

    # 40 % of Stripe's answers are 429s without Stripe-Should-Retry, which the SDK does not retry itself:
    # with 7 reads, a run without reconcile's own retries fails with probability 1 - 0.6**7 > 97 %. With 20
    # attempts per read (short waits for the test), one read fails for good with probability 0.4**20.
    monkeypatch.setattr("processor.ops.reconcile.READ_RETRY", Backoff(base_s=0.01, cap_s=0.05, max_attempts=20))
    emulator.faults(fail_429=0.4)
    try:
        span = ("--from", str(today_start - 86_400), "--to", str(today_start + 86_400))
        result = cli(settings, "reconcile", "--meter", METER.id, *span)
    finally:
        emulator.faults(fail_429=0)
    assert result.exit_code == 0, result.output
    assert "0 of 6 customer(s) drift" in result.output
