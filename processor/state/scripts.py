"""Running a registered Lua script once per hash slot, on one Redis server or on Redis Cluster.

The store's two steps and the ops swap tool group their script calls so that each call's keys share one
hash slot; :func:`run_scripts` sends them pipelined (one pipeline per node on a cluster) and re-sends on
its own, through the cluster client and the one retry loop (:mod:`processor.retry`), each call a node
refused while the cluster reshapes. Callers make their calls idempotent, so a re-sent call that did run
the first time changes nothing.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis
from redis.cluster import RedisCluster

from processor.retry import Backoff, retry

__all__ = ["CLUSTER_PATIENCE_S", "CLUSTER_RETRY", "lua_source", "run_scripts"]


#: Answers that mean "not here / not now" rather than "this call is wrong": retried via the cluster client.
_REDIRECTS = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.NoScriptError,
    redis.ConnectionError,
    redis.TimeoutError,
)

#: Cluster states that pass by themselves: a slot half moved (TRYAGAIN for a multi-key call until the move
#: ends), a failover in progress (CLUSTERDOWN, connections refused), redis-py's redirect budget spent meanwhile.
_TRANSIENT = (
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.ClusterError,
    redis.exceptions.SlotNotCoveredError,
    redis.ConnectionError,
    redis.TimeoutError,
)
#: How long a script call keeps retrying a transient cluster state before the step fails (the processor then
#: stops, and a restart resumes exactly where Redis says it is).
CLUSTER_PATIENCE_S = 60.0
#: Waits from 50 ms up to 1 s while the cluster reshapes, for at most CLUSTER_PATIENCE_S.
CLUSTER_RETRY = Backoff(base_s=0.05, cap_s=1.0, deadline_s=CLUSTER_PATIENCE_S)


def _patiently(script: Any, keys: list[str], args: list[Any]) -> Any:
    """One script call through the cluster client, retried (the one retry loop) while the cluster is reshaping."""
    return retry(lambda: script(keys=keys, args=args), policy=CLUSTER_RETRY, transient=_TRANSIENT)


def run_scripts(client: redis.Redis | RedisCluster, script: Any, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
    """Run ``script`` (a registered Script) once per ``(keys, args)`` call, pipelined; results in order. Every
    call's keys must share one hash slot. On a single server: one pipeline. On Redis Cluster: see
    :func:`_run_cluster`. Callers make their calls idempotent (a call may run twice on Redis Cluster)."""
    if not calls:
        return []
    if isinstance(client, RedisCluster):
        return _run_cluster(client, script, calls)
    if len(calls) == 1:
        keys, args = calls[0]
        return [script(keys=keys, args=args)]
    pipe = client.pipeline(transaction=False)
    for keys, args in calls:
        script(keys=keys, args=args, client=pipe)
    return list(pipe.execute())


def _run_cluster(client: RedisCluster, script: Any, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
    """One pipeline per primary of the script calls whose slot it owns (per our slot map), then each call
    the node refused — MOVED/ASK (a slot moved or is moving), TRYAGAIN, CLUSTERDOWN, a connection lost in a
    failover — again on its own through the cluster client, which follows the redirect, refreshes the slot
    map, and loads the script where it is missing (NOSCRIPT on a promoted replica). Re-running a call is
    safe: callers' calls are idempotent, so a call that did run before the error changes nothing the second
    time.

    redis-py's cluster pipeline refuses EVALSHA, hence the plain per-node pipelines (which load missing
    scripts themselves before they run)."""
    outs: list[Any] = [None] * len(calls)
    retry: list[int] = []
    by_node: dict[str, tuple[Any, list[int]]] = {}
    for i, (keys, _) in enumerate(calls):
        try:
            node = client.get_node_from_key(keys[0])  # type: ignore[no-untyped-call]
        except redis.RedisError:
            retry.append(i)
            continue
        by_node.setdefault(node.name, (node, []))[1].append(i)
    for node, idxs in by_node.values():
        try:
            pipe = client.get_redis_connection(node).pipeline(transaction=False)
            for i in idxs:
                keys, args = calls[i]
                script(keys=keys, args=args, client=pipe)
            results = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            retry.extend(idxs)  # the node is gone or changing role: let the cluster client find the owner
            continue
        for i, res in zip(idxs, results, strict=True):
            if isinstance(res, _REDIRECTS):
                retry.append(i)
            elif isinstance(res, Exception):
                raise res
            else:
                outs[i] = res
    for i in sorted(retry):
        keys, args = calls[i]
        outs[i] = _patiently(script, keys, args)
    return outs


def lua_source(name: str) -> str:
    """The text of ``processor/state/lua/<name>``."""
    return resources.files("processor.state").joinpath("lua", name).read_text("utf-8")
