"""The gateway's Redis batcher on the real test Valkey: concurrent commands share round trips, each gets its
own reply or error, scripts load themselves, and a dead server is Stripe's retryable StateError."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from typing import Any

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


def test_pipelined_batches_keep_their_order_and_a_lost_connection_starts_over(gw_settings: Settings) -> None:
    """Batches are written without waiting for the replies of the ones before: each command still gets its
    own reply; when the connection dies, what waits on it fails as a StateError and the next call
    reconnects."""

    async def scenario() -> None:
        client = async_redis(gw_settings, decode_responses=True)
        batcher = RedisBatcher(client)
        p = gw_settings.redis_prefix
        try:
            if not batcher.single_server:
                pytest.skip("pipelining is for a single server; a cluster batch waits for the one before")

            async def later(i: int) -> Any:
                await asyncio.sleep(0)  # a later pass of the event loop: a later batch, in flight together
                return await batcher.call("INCRBY", f"{p}:pipe:{i % 3}", i)

            replies = await asyncio.gather(*(later(i) for i in range(30)), *(batcher.call("PING") for _ in range(5)))
            assert replies[30:] == ["PONG"] * 5
            totals = await asyncio.gather(*(batcher.call("GET", f"{p}:pipe:{k}") for k in range(3)))
            assert [int(t) for t in totals] == [sum(i for i in range(30) if i % 3 == k) for k in range(3)]

            me = await batcher.call("CLIENT", "ID")
            blocked = asyncio.ensure_future(batcher.call("BLPOP", f"{p}:pipe:never", 30))
            deadline = time.monotonic() + 10
            while "cmd=blpop" not in next(
                c for c in (await client.execute_command("CLIENT", "LIST")).splitlines() if f"id={me} " in c
            ):
                assert time.monotonic() < deadline, "the BLPOP did not reach the server"
                await asyncio.sleep(0.01)
            await client.execute_command("CLIENT", "KILL", "ID", me)  # from another connection
            with pytest.raises(StateError):
                await blocked  # waiting on the dead connection
            assert await batcher.call("SET", f"{p}:pipe:after", "1") == "OK"  # a new connection
            assert await batcher.call("CLIENT", "ID") != me
        finally:
            await batcher.aclose()
            await client.aclose()

    asyncio.run(scenario())
