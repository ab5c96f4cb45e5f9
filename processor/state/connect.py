"""The one place that opens Redis connections (sync and asyncio) for the whole product.

Every component — processor, sink, gateway, registry, CLI, ops tools — asks here, so single-node and Redis
Cluster are chosen the same way everywhere:

- ``METERSTREAM_REDIS_CLUSTER=true``  → a Redis Cluster client (``redis.cluster.RedisCluster``), which
  follows MOVED/ASK redirects, refreshes the slot map after a failover, and routes each key by hash slot;
- ``METERSTREAM_REDIS_CLUSTER=false`` → a plain client on one server;
- ``auto`` (the default) → ask the server once per URL (``INFO cluster`` → ``cluster_enabled``). A wrong
  guess would be fatal either way (a plain client on a cluster gets MOVED on most keys; a cluster client
  on a plain server cannot start), so asking is safer than any default. The answer is cached per URL for
  the life of the process: a server does not change modes without a restart. A server that cannot be reached
  at that moment gets the single-server client (with a warning) and is asked again next time; set the mode
  explicitly for a cluster.

The probe is synchronous even for the asyncio clients: it runs once, at construction, which happens in
start-up code (constructors), where a short blocking call is harmless.

Errors connecting are :class:`~processor.errors.StateError` (the URL is never in the message: it may hold a
password).
"""

from __future__ import annotations

import logging
import threading
from typing import TypeAlias

import redis
import redis.asyncio as aioredis
from redis.cluster import RedisCluster

from processor.config import Settings
from processor.errors import StateError

__all__ = [
    "AsyncRedis",
    "SyncRedis",
    "async_redis",
    "is_cluster",
    "sync_redis",
    "sync_redis_url",
]

log = logging.getLogger(__name__)

#: What :func:`sync_redis` returns; both expose the same data commands (routing differs).
SyncRedis: TypeAlias = redis.Redis | RedisCluster
#: What :func:`async_redis` returns.
AsyncRedis: TypeAlias = aioredis.Redis | aioredis.RedisCluster

#: Seconds to wait for a TCP connection (probe and clients): a dead server must fail start-up, not hang it.
CONNECT_TIMEOUT_S = 5.0

#: What redis-py raises when it cannot connect: RedisClusterException ("no reachable node", "cluster mode is
#: not enabled") is not a RedisError.
_CONNECT_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException)

_modes: dict[str, bool] = {}
_modes_lock = threading.Lock()


def is_cluster(url: str, mode: bool | None = None) -> bool:
    """Whether ``url`` is to be spoken to as a Redis Cluster: ``mode`` when given, else the server's answer."""
    if mode is not None:
        return mode
    with _modes_lock:
        known = _modes.get(url)
    if known is not None:
        return known
    probe = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S)
    try:
        enabled = bool(probe.info("cluster").get("cluster_enabled"))
    except redis.RedisError as exc:
        raise StateError(f"cannot reach Redis to tell whether it is a cluster: {type(exc).__name__}: {exc}") from exc
    finally:
        probe.close()
    with _modes_lock:
        _modes[url] = enabled
    return enabled


def _choose(url: str, mode: bool | None) -> bool:
    """:func:`is_cluster`, except that an unreachable server in ``auto`` mode gets the single-server client
    (nothing cached): like any redis-py client it connects lazily, so a component that tolerates Redis being
    down at start (the gateway reports it on /healthz) still starts. Clusters should set the mode explicitly."""
    try:
        return is_cluster(url, mode)
    except StateError as exc:
        log.warning(
            "%s; using the single-server client (set METERSTREAM_REDIS_CLUSTER=true or false to decide without asking)",
            exc,
        )
        return False


def sync_redis_url(url: str, *, cluster: bool | None = None, decode_responses: bool = False) -> SyncRedis:
    """A blocking client for ``url`` (``cluster``: as :func:`is_cluster`). Constructing a cluster client
    reads the slot map from the server, so it fails here, not at first use, when the cluster is down."""
    try:
        if _choose(url, cluster):
            return RedisCluster.from_url(
                url,
                decode_responses=decode_responses,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_keepalive=True,
            )
        return redis.Redis.from_url(
            url, decode_responses=decode_responses, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_keepalive=True
        )
    except _CONNECT_ERRORS as exc:
        raise StateError(f"cannot connect to Redis: {type(exc).__name__}: {exc}") from exc


def sync_redis(settings: Settings, *, decode_responses: bool = False) -> SyncRedis:
    """A blocking client for the configured Redis (``METERSTREAM_REDIS_URL`` / ``METERSTREAM_REDIS_CLUSTER``)."""
    return sync_redis_url(
        settings.require_redis_url(), cluster=settings.redis_cluster, decode_responses=decode_responses
    )


def async_redis(settings: Settings, *, decode_responses: bool = False) -> AsyncRedis:
    """An asyncio client for the configured Redis. The cluster client connects lazily (at first command)."""
    url = settings.require_redis_url()
    try:
        if _choose(url, settings.redis_cluster):
            return aioredis.RedisCluster.from_url(
                url, decode_responses=decode_responses, socket_connect_timeout=CONNECT_TIMEOUT_S
            )
        return aioredis.Redis.from_url(url, decode_responses=decode_responses, socket_connect_timeout=CONNECT_TIMEOUT_S)
    except _CONNECT_ERRORS as exc:
        raise StateError(f"cannot connect to Redis: {type(exc).__name__}: {exc}") from exc
