"""The gateway's Redis batcher on the real test Valkey: concurrent commands share round trips, each gets its
own reply or error, scripts load themselves, and a dead server is Stripe's retryable StateError."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib

import pytest
from redis.exceptions import ResponseError

from processor.config import Settings
from processor.errors import StateError
from processor.gateway.redis_batch import RedisBatcher
from processor.state.connect import async_redis

SCRIPT = "return redis.call('GET', KEYS[1])"


def test_replies_errors_and_scripts(gw_settings: Settings) -> None:
    async def scenario() -> None:
        client = async_redis(gw_settings, decode_responses=True)
        batcher = RedisBatcher(client)
        p = gw_settings.redis_prefix
        try:
            sets = [batcher.call("SET", f"{p}:b:{i}", f"v{i}", "NX", "PX", 60_000, "GET") for i in range(200)]
            assert await asyncio.gather(*sets) == [None] * 200  # new keys: nothing was there
            again = await batcher.call("SET", f"{p}:b:7", "other", "NX", "PX", 60_000, "GET")
            assert again == "v7"  # SET NX GET returns what is stored (also on Redis Cluster)
            results = await asyncio.gather(
                batcher.call("INCR", f"{p}:b:1"), batcher.call("GET", f"{p}:b:2"), return_exceptions=True
            )
            assert isinstance(results[0], ResponseError) and results[1] == "v2"  # one error, its own
            sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
            assert await batcher.script(sha, SCRIPT, 1, f"{p}:b:3") == "v3"  # loaded on NOSCRIPT, then run
            assert await batcher.script(sha, SCRIPT, 1, f"{p}:b:4") == "v4"
            assert await batcher.call("SET", f"{p}:b:é", "ünïcode", "EX", 60) in ("OK", True)
            assert await batcher.call("GET", f"{p}:b:é") == "ünïcode"
        finally:
            await batcher.aclose()
            await client.aclose()

    asyncio.run(scenario())


def test_a_dead_server_is_a_state_error(gw_settings: Settings) -> None:
    from processor.embedded import free_port

    dead = dataclasses.replace(gw_settings, redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_cluster=False)

    async def scenario() -> None:
        client = async_redis(dead, decode_responses=True)
        batcher = RedisBatcher(client)
        try:
            with pytest.raises(StateError):
                await batcher.call("GET", "x")
        finally:
            await batcher.aclose()
            await client.aclose()

    asyncio.run(scenario())
