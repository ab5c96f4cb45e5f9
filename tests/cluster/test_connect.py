"""processor/state/connect.py chooses the client the same way for every component: asked (auto) or forced."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.cluster import RedisCluster

from processor.config import load_settings
from processor.embedded import EmbeddedRedis, EmbeddedRedisCluster
from processor.errors import StateError
from processor.state.connect import async_redis, is_cluster, sync_redis, sync_redis_url

pytestmark = [pytest.mark.integration]


def test_auto_detects_a_cluster_and_a_single_server(cluster: EmbeddedRedisCluster, tmp_path: Path) -> None:
    settings = load_settings({"METERSTREAM_REDIS_URL": cluster.url})
    assert settings.redis_cluster is None
    client = sync_redis(settings, decode_responses=True)
    try:
        assert isinstance(client, RedisCluster)
        client.set("{connect}k", "v")  # routed to the slot's owner, wherever it is
        assert client.get("{connect}k") == "v"
    finally:
        client.close()

    async def use_async() -> str | None:
        aclient = async_redis(settings, decode_responses=True)
        try:
            assert isinstance(aclient, aioredis.RedisCluster)
            value: str | None = await aclient.get("{connect}k")
            return value
        finally:
            await aclient.aclose()

    assert asyncio.run(use_async()) == "v"

    with EmbeddedRedis(workdir=tmp_path) as single:
        assert not is_cluster(single.url)
        plain = sync_redis(load_settings({"METERSTREAM_REDIS_URL": single.url}))
        try:
            assert type(plain) is redis.Redis
        finally:
            plain.close()
        with pytest.raises(StateError):  # forced cluster mode on a single server fails at start, not later
            sync_redis(load_settings({"METERSTREAM_REDIS_URL": single.url, "METERSTREAM_REDIS_CLUSTER": "true"}))


def test_forced_single_node_client_on_a_cluster_node(cluster: EmbeddedRedisCluster) -> None:
    settings = load_settings({"METERSTREAM_REDIS_URL": cluster.url, "METERSTREAM_REDIS_CLUSTER": "false"})
    client = sync_redis(settings)
    try:
        assert type(client) is redis.Redis
        assert client.info("cluster")["cluster_enabled"] == 1
    finally:
        client.close()
    forced = sync_redis_url(cluster.url, cluster=True)
    try:
        assert isinstance(forced, RedisCluster)
    finally:
        forced.close()


def test_auto_on_an_unreachable_server_starts_with_the_single_server_client() -> None:
    """Like any redis-py client, it connects lazily: the gateway starts and reports Redis down on /healthz."""
    from processor.embedded import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    client = sync_redis_url(url)
    try:
        assert type(client) is redis.Redis
        with pytest.raises(redis.ConnectionError):
            client.ping()
    finally:
        client.close()
    with pytest.raises(StateError):
        is_cluster(url)
