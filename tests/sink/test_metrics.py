"""Sink counters: in-process totals, deltas shipped to the Redis stats hash (real Redis)."""

from __future__ import annotations

import asyncio

import pytest
import redis

from processor.config import Settings
from processor.sink.metrics import COUNTERS, SinkMetrics
from processor.state.connect import async_redis
from processor.state.keys import Keys


def test_counters_and_deltas() -> None:
    metrics = SinkMetrics("v1")
    metrics.incr("delivered", 3)
    metrics.incr("retried")
    assert metrics.snapshot() == {name: {"delivered": 3, "retried": 1}.get(name, 0) for name in COUNTERS}
    assert metrics.take_deltas() == {"delivered:v1": 3, "retried:v1": 1}
    assert metrics.take_deltas() == {}
    metrics.restore({"delivered:v1": 3})
    assert metrics.take_deltas() == {"delivered:v1": 3}
    with pytest.raises(KeyError):
        metrics.incr("deliverd")


@pytest.mark.integration
def test_flush_adds_into_the_stats_hash(settings: Settings, redis_client: redis.Redis) -> None:
    key = Keys(settings.redis_prefix).stats("sink")
    redis_client.hset(key, "delivered:v2_stream", 5)  # another sink process's count

    async def run() -> None:
        client = async_redis(settings, decode_responses=True)
        metrics = SinkMetrics("v2_stream")
        metrics.incr("delivered", 2)
        metrics.incr("dead_lettered")
        await metrics.flush(client, key)
        await metrics.flush(client, key)  # nothing new: no double counting
        await client.aclose()

    asyncio.run(run())
    assert redis_client.hgetall(key) == {"delivered:v2_stream": "7", "dead_lettered:v2_stream": "1"}
