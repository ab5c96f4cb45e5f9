"""Summaries read from the Redis the real processor wrote, against a brute-force answer from the events."""

from __future__ import annotations

import random
import time

import pytest
import redis
from click.testing import CliRunner

from processor.cli import main
from processor.config import Settings
from processor.meters.model import Meter
from processor.state.keys import Keys
from processor.state.summaries import summarize
from tests.pipeline import event_value, producer, put_meters, run_processor
from topics import Topic, topic_name

pytestmark = pytest.mark.integration


def test_minute_hour_day_ranges_are_exact(settings: Settings, redis_client: redis.Redis) -> None:
    rnd = random.Random(11)
    now = int(time.time())
    now_ms = now * 1000
    meters = [
        Meter("mtr_s", "S", "s", "sum", created=1),
        Meter("mtr_l", "L", "l", "last", created=1),
        Meter("mtr_c", "C", "c", "count", created=1),
    ]
    put_meters(settings, meters, now_ms - 10**9)
    p = producer(settings)
    events: list[tuple[str, int, int]] = []  # (event_name, ts, value)
    for i in range(600):
        name = rnd.choice(["s", "l", "c"])
        ts = now - rnd.randrange(0, 3 * 86400)
        value = rnd.randrange(-50, 500)
        events.append((name, ts, value))
        p.produce(
            topic_name(Topic.EVENTS, settings.topic_prefix),
            key="cus_x",
            value=event_value(name, "cus_x", value, f"i{i}", ts),
            timestamp=now_ms + i,
        )
    assert p.flush(30) == 0
    run_processor(settings)

    keys = Keys(settings.redis_prefix)
    for _ in range(60):
        a = (now - rnd.randrange(0, 4 * 86400)) // 60 * 60
        b = a + rnd.randrange(1, 2 * 1440) * 60
        for meter in meters:
            inside = [(ts, v, n) for n, (name, ts, v) in enumerate(events) if name == meter.event_name and a <= ts < b]
            if meter.formula == "sum":
                want: int | None = sum(v for _, v, _ in inside) if inside else None
            elif meter.formula == "count":
                want = len(inside) if inside else None
            else:
                want = max(inside, key=lambda x: (x[0], x[2]))[1] if inside else None  # latest ts, ties: later received
            got = summarize(redis_client, keys, meter.id, meter.formula, "cus_x", a, b)[0].value
            if meter.formula != "last" and want is None:
                assert got in (None, 0)
            else:
                assert got == want, (meter.formula, a, b)

    day = now - now % 86400 - 86400
    hours = summarize(redis_client, keys, "mtr_s", "sum", "cus_x", day, day + 86400, "hour")
    assert len(hours) == 24
    total = summarize(redis_client, keys, "mtr_s", "sum", "cus_x", day, day + 86400, "day")[0].aggregated_value
    assert sum(h.aggregated_value for h in hours) == total

    # and the CLI prints the same numbers
    redis_client.hset(keys.meters, "mtr_s", meters[0].to_json())
    result = CliRunner().invoke(
        main,
        ["usage", "--meter", "mtr_s", "--customer", "cus_x", "--from", str(day), "--to", str(day + 86400), "--json"],
        env=settings.to_env(),
    )
    assert result.exit_code == 0, result.output
    assert f'"aggregated_value": {total}' in result.output or (total == 0 and "null" in result.output)
    bad = CliRunner().invoke(
        main,
        ["usage", "--meter", "mtr_s", "--customer", "cus_x", "--from", str(day + 1), "--to", str(day + 86400)],
        env=settings.to_env(),
    )
    assert bad.exit_code != 0 and "minute" in bad.output
