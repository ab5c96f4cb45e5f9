"""Fault tests: kill -9 at random moments, a group member dying, malformed input. The final Redis state
must equal a clean single run of the engine over the same topics (tests/pipeline.py reference_state)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from processor.config import Settings
from processor.meters.model import Meter
from tests.helpers import child_env, wait_until
from tests.pipeline import (
    event_value,
    make_workload,
    producer,
    put_meters,
    put_workload,
    read_all,
    reference_state,
    run_processor,
    snapshot_diff,
    stored_progress,
    usage_snapshot,
)
from topics import Topic, topic_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 3


@pytest.fixture
def spawn(settings: Settings) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        env = child_env(settings)
        proc = subprocess.Popen(
            [sys.executable, "-m", "processor", "processor"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def _wait_done(client: redis.Redis, settings: Settings, total: int, timeout: float = 300) -> None:
    wait_until(
        lambda: stored_progress(client, settings) >= total,
        f"progress past all {total} records",
        timeout,
        interval=0.5,
        on_timeout=lambda: f"stuck at {stored_progress(client, settings)}",
    )


def _accepted(settings: Settings) -> set[tuple[str, str]]:
    out = set()
    for msg in read_all(settings, [Topic.ACCEPTED], PARTITIONS):
        body = json.loads(msg.value())
        out.add((body["kind"], body["identifier"]))
    return out


def _assert_as_a_perfect_run(settings: Settings, redis_client: redis.Redis) -> None:
    """Redis holds exactly what one uninterrupted run over every record gives, and nothing was lost on the
    way out: every accepted event and cancellation reached the accepted topic."""
    ref_prefix = settings.redis_prefix + "ref"
    expected_accepted = reference_state(settings, ref_prefix, PARTITIONS)
    diff = snapshot_diff(usage_snapshot(redis_client, settings.redis_prefix), usage_snapshot(redis_client, ref_prefix))
    assert not diff, "\n".join(diff)
    assert _accepted(settings) == expected_accepted


def test_kill_9_five_times_while_100k_events_flow(
    settings_factory: Callable[..., Settings], spawn: Callable[[], subprocess.Popen[bytes]], redis_client: redis.Redis
) -> None:
    settings = settings_factory(partitions=PARTITIONS)
    w = make_workload(100_000, seed=42)
    put_workload(settings, w, PARTITIONS)
    total = len(w.events) + len(w.cancels)
    rnd = random.Random(1)
    kills = 0
    proc = spawn()
    while kills < 5:
        # wait until this incarnation made progress, then kill it at a random moment
        base = stored_progress(redis_client, settings)
        wait_until(lambda b=base: b != stored_progress(redis_client, settings) or b >= total, "progress", 120)
        time.sleep(rnd.uniform(0.0, 1.5))  # fault injection: the kill lands at a random moment of the run
        if stored_progress(redis_client, settings) >= total:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
        proc = spawn()
    assert kills == 5, "the stream finished before five kills: make the workload bigger"
    _wait_done(redis_client, settings, total)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0

    _assert_as_a_perfect_run(settings, redis_client)


def test_two_processors_one_killed(
    settings_factory: Callable[..., Settings], spawn: Callable[[], subprocess.Popen[bytes]], redis_client: redis.Redis
) -> None:
    settings = settings_factory(partitions=PARTITIONS)
    w = make_workload(60_000, seed=9)
    put_workload(settings, w, PARTITIONS)
    total = len(w.events) + len(w.cancels)
    a, b = spawn(), spawn()
    wait_until(lambda: stored_progress(redis_client, settings) >= total // 4, "a quarter applied", 120, interval=0.05)
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    _wait_done(redis_client, settings, total)
    b.send_signal(signal.SIGTERM)
    assert b.wait(30) == 0
    _assert_as_a_perfect_run(settings, redis_client)


def test_malformed_records_never_block_a_partition(settings: Settings, redis_client: redis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    put_meters(settings, [Meter("mtr_m", "M", "m", "sum", created=1)], now_ms - 60_000)
    p = producer(settings)
    topic = topic_name(Topic.EVENTS, settings.topic_prefix)
    huge = json.dumps(
        {"event_name": "m", "payload": {"stripe_customer_id": "c", "value": 1, "blob": "x" * 900_000}}
    ).encode()
    bad = [
        b"not json",
        b"[]",
        b'"str"',
        b"{}",
        b'{"event_name": 5, "payload": {}}',
        b'{"event_name":"m"}',
        b'{"event_name":"m","payload":[]}',
        b"\xff\xfe\x00",
        b"{" * 50_000,
        b"x" * 990_000,  # ~1 MB: librdkafka's default message.max.bytes is 1,000,000
        json.dumps({"event_name": "m", "payload": {"stripe_customer_id": "c", "value": {"nested": 1}}}).encode(),
    ]
    for i, value in enumerate(bad):
        p.produce(topic, key="c", value=value, timestamp=now_ms + i)
    p.produce(topic, key="c", value=huge, timestamp=now_ms + 100)  # valid, just big: counts
    p.produce(topic, key="c", value=event_value("m", "c", 41, "after"), timestamp=now_ms + 101)
    p.produce(topic, key="c", value=None, timestamp=now_ms + 102)  # a tombstone-like record without value
    assert p.flush(60) == 0
    run_processor(settings)
    assert (
        sum(int(v) for v in usage_snapshot(redis_client, settings.redis_prefix)[":usage:{mtr_m:c}:day"].values())
        == 41  # the 900 KB event is over the 262,144-byte limit: invalid_event
    )
    errors = [json.loads(m.value()) for m in read_all(settings, [Topic.ERRORS], PARTITIONS)]
    codes = sorted(e["code"] for e in errors)
    assert codes.count("invalid_event") == 12  # ten malformed values, the record without a value, the huge one
    assert codes.count("meter_event_invalid_value") == 1
    assert len(errors) == 13
    assert all(len(json.dumps(e)) < 20_000 for e in errors)  # the error record carries a preview, not 1 MB
