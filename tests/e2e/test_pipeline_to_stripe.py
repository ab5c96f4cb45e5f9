"""The whole pipeline against the Stripe emulator: producer → processor → Redis, and accepted topic →
sink → "Stripe", with 20 % 429s and 5 % 500s injected and the sink killed (kill -9) and restarted
mid-stream. In the end, for every meter and customer, Stripe's event summaries (read through the official
SDK by `meterstream reconcile`) equal the Redis aggregates, and no identifier was billed twice."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from processor.cli import main
from processor.config import Settings
from processor.emulator import EmulatorConfig, EmulatorServer
from processor.emulator.faults import FaultConfig
from processor.meters.model import Meter
from processor.state.keys import Keys
from tests.helpers import child_env
from tests.pipeline import cancel_value, event_value, producer, put_meters, run_processor
from topics import Topic, topic_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "sk_test_e2epipeline"
METERS = [
    Meter("mtr_e2es", "Sum", "e2e_sum", "sum", created=1),
    Meter("mtr_e2ec", "Count", "e2e_cnt", "count", created=1),
    Meter("mtr_e2el", "Last", "e2e_last", "last", created=1),
    Meter("mtr_e2ep", "Pre-aggregated hour", "e2e_pre", "sum", "hour", created=1),
]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _delivered(url: str) -> tuple[set[str], int, list[str]]:
    """Identifiers Stripe holds, how many cancellations, and identifiers it holds more than once."""
    idents: list[str] = []
    cancels = 0
    for m in METERS:
        try:
            ledger = _get(f"{url}/_emulator/events?event_name={m.event_name}")
        except urllib.error.HTTPError:  # the sink has not created this meter in Stripe yet
            continue
        idents += [f"{m.event_name}/{e['identifier']}" for e in ledger["events"]]
        cancels += len(ledger["cancellations"])
    twice = sorted({i for i in idents if idents.count(i) > 1})
    return set(idents), cancels, twice


def test_stripe_ends_equal_to_redis_despite_faults_and_a_killed_sink(
    settings_factory: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    faults = FaultConfig(fail_429=0.2, fail_500=0.05)
    with EmulatorServer(EmulatorConfig(port=0, api_key=KEY, faults=faults, seed=5)) as emu:
        settings = settings_factory(
            METERSTREAM_STRIPE_API_KEY=KEY, METERSTREAM_STRIPE_API_BASE=emu.url, METERSTREAM_STRIPE_RATE="200"
        )
        now = int(time.time())
        put_meters(settings, METERS, (now - 3600) * 1000)
        for m in METERS:  # the registry's Redis mirror, which the sink reads
            redis_client.hset(Keys(settings.redis_prefix).meters, m.id, m.to_json())

        rnd = random.Random(3)
        p = producer(settings)
        expected_events: set[str] = set()
        cancels = 0
        for i in range(1500):
            m = rnd.choice(METERS)
            cust = f"cus_{rnd.randrange(12)}"
            ident = f"i{i}"
            ts = now - rnd.randrange(0, 3 * 86400)
            p.produce(
                topic_name(Topic.EVENTS, settings.topic_prefix),
                key=cust,
                value=event_value(m.event_name, cust, rnd.randrange(-20, 500), ident, ts),
            )
            expected_events.add(f"{m.event_name}/{ident}")
            if rnd.random() < 0.05:
                p.produce(
                    topic_name(Topic.EVENTS, settings.topic_prefix),
                    key=cust,  # a duplicate: never billed twice
                    value=event_value(m.event_name, cust, 999, ident, ts),
                )
            if rnd.random() < 0.05:
                p.produce(
                    topic_name(Topic.ADJUSTMENTS, settings.topic_prefix),
                    key=ident,
                    value=cancel_value(m.event_name, ident),
                )
                cancels += 1
        assert p.flush(30) == 0
        run_processor(settings)

        env = child_env(settings)

        def start_sink() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "processor", "sink"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        sink = start_sink()
        try:
            deadline = time.monotonic() + 180
            while len(_delivered(emu.url)[0]) < len(expected_events) // 3:
                assert time.monotonic() < deadline, "the sink made no progress"
                time.sleep(0.2)
            sink.send_signal(signal.SIGKILL)
            sink.wait(10)
            sink = start_sink()
            deadline = time.monotonic() + 300
            while True:
                got, n_cancels, twice = _delivered(emu.url)
                if got >= expected_events and n_cancels >= cancels:
                    break
                assert time.monotonic() < deadline, f"{len(got)}/{len(expected_events)} events delivered"
                time.sleep(0.5)
        finally:
            sink.send_signal(signal.SIGTERM)
            sink.wait(60)
        assert got == expected_events
        assert twice == []

        start = now - now % 86400 - 4 * 86400
        end = now - now % 86400 + 86400
        for m in METERS:
            result = CliRunner().invoke(
                main, ["reconcile", "--meter", m.id, "--from", str(start), "--to", str(end)], env=settings.to_env()
            )
            assert result.exit_code == 0, result.output
            assert "\n0 of 12 customer(s) drift (0 bucket(s))" in result.output, result.output
