"""The Redis edge of the processor: the two Lua steps (claim, apply), stored progress, the customers index.

Works on a standalone server (each step is one script call for a whole batch) and on Redis Cluster (the
ops of a step are grouped by hash slot, one script call per slot, pipelined per node). Every op of a step
is idempotent by record position, so the grouping never changes the result — only the round trips.

Redis errors are translated to :class:`~processor.errors.StateError` here, so callers see one error type.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any, NamedTuple

import msgpack
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from processor.errors import StateError
from processor.state.connect import sync_redis_url
from processor.state.keys import BEST_TTL_S, CANDIDATES_TTL_S, CLAIM_TTL_S, MINUTES_TTL_S, WATERMARK_TTL_S, Keys

__all__ = ["ApplyOp", "ClaimOp", "StateStore", "connect_redis", "run_scripts"]


def connect_redis(url: str, *, cluster: bool | None = None) -> redis.Redis | RedisCluster:
    """A bytes client for ``url``: see :func:`processor.state.connect.sync_redis_url` (the one place that decides
    cluster or single node)."""
    return sync_redis_url(url, cluster=cluster)


@contextlib.contextmanager
def map_redis_errors(what: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise StateError(f"Redis failed during {what}: {exc}") from exc


class ClaimOp(NamedTuple):
    """One record's identifier step: ``kind`` 'E' (event) or 'C' (cancellation)."""

    kind: str
    key: str
    received_ms: int
    ref: str
    customer: str = ""
    ts: int = 0
    value: str = ""


class ApplyOp(NamedTuple):
    """One aggregate change. ``kind``: '+'/'-' additive, 'c+'/'c-' candidate, 'l+'/'l-' raw last (apply.lua)."""

    kind: str
    wm_key: str
    hour_key: str
    day_key: str
    cand_key: str
    best_key: str
    src: str
    offset: int
    ident: str
    rank: str
    value: str
    ts: int
    formula: str
    minutes_key: str


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


def _patiently(script: Any, keys: list[str], args: list[Any]) -> Any:
    """One script call through the cluster client, retried with backoff while the cluster is reshaping."""
    deadline = time.monotonic() + CLUSTER_PATIENCE_S
    delay = 0.05
    while True:
        try:
            return script(keys=keys, args=args)
        except _TRANSIENT:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


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


_NEW = ["new", ""]
_PENDING = ["pending"]


def _script(name: str) -> str:
    return resources.files("processor.state").joinpath("lua", name).read_text("utf-8")


class StateStore:
    """Processor state in Redis under one prefix. Constructing it does no I/O."""

    def __init__(self, client: redis.Redis | RedisCluster, prefix: str) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.cluster = isinstance(client, RedisCluster)
        self._claim = client.register_script(_script("claim.lua"))
        self._apply = client.register_script(_script("apply.lua"))

    # ---- grouping ---------------------------------------------------------------------------------
    def _groups(self, ops: Sequence[Any], first_key: str) -> list[list[Any]]:
        if not self.cluster:
            return [list(ops)] if ops else []
        groups: dict[int, list[Any]] = {}
        for op in ops:
            groups.setdefault(key_slot(getattr(op, first_key).encode()), []).append(op)
        return list(groups.values())

    # ---- claim -------------------------------------------------------------------------------------
    def claim(self, ops: Sequence[ClaimOp], now_ms: int | None = None) -> list[list[str]]:
        """Run the identifier step for ``ops``; returns one result list per op, in order (see claim.lua)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        results: dict[int, list[str]] = {}
        index = {id(op): i for i, op in enumerate(ops)}
        calls = []
        for group in self._groups(ops, "key"):
            keys: list[str] = []
            kidx: dict[str, int] = {}
            packed: list[Any] = []
            for op in group:
                ki = kidx.get(op.key)
                if ki is None:
                    keys.append(op.key)
                    ki = kidx[op.key] = len(keys)
                lag = max(0, now_ms - op.received_ms)
                ttl = CLAIM_TTL_S * 1000 + lag
                fields = (op.kind, str(op.received_ms), op.ref, op.customer, str(op.ts), op.value, "", "")
                entry = "".join(f"{len(f.encode())}:{f}" for f in fields)
                packed.append((op.kind, ki, op.received_ms, op.ref, op.customer, op.ts, op.value, ttl, entry))
            calls.append((group, keys, [msgpack.packb(packed)]))
        with map_redis_errors("the claim step"):
            outs = self._run(self._claim, [(k, a) for _, k, a in calls])
        for (group, _, _), out in zip(calls, outs, strict=True):
            for op, res in zip(group, out, strict=True):
                if isinstance(res, bytes):  # the two common answers come as one letter
                    results[index[id(op)]] = _NEW if res == b"n" else _PENDING
                else:
                    results[index[id(op)]] = [x.decode() if isinstance(x, bytes) else str(x) for x in res]
        return [results[i] for i in range(len(ops))]

    # ---- apply -------------------------------------------------------------------------------------
    def apply(self, ops: Sequence[ApplyOp]) -> int:
        """Apply aggregate changes (skipping any already applied); returns how many were applied now."""
        calls = []
        for group in self._groups(ops, "hour_key"):
            keys: list[str] = []
            kidx: dict[str, int] = {}

            def ix(key: str, keys: list[str] = keys, kidx: dict[str, int] = kidx) -> int:
                if not key:
                    return 0
                i = kidx.get(key)
                if i is None:
                    keys.append(key)
                    i = kidx[key] = len(keys)
                return i

            packed: list[Any] = []
            for op in group:
                packed.append(
                    (
                        op.kind,
                        ix(op.wm_key),
                        ix(op.hour_key),
                        ix(op.day_key),
                        ix(op.cand_key),
                        ix(op.best_key),
                        op.src,
                        op.offset,
                        op.ident,
                        op.rank,
                        op.value,
                        op.ts,
                        op.formula,
                        ix(op.minutes_key),
                    )
                )
            ttls = msgpack.packb(
                (CANDIDATES_TTL_S * 1000, BEST_TTL_S * 1000, WATERMARK_TTL_S * 1000, MINUTES_TTL_S * 1000)
            )
            calls.append((keys, [ttls, msgpack.packb(packed)]))
        with map_redis_errors("the apply step"):
            outs = self._run(self._apply, calls)
        return sum(int(o) for o in outs)

    def _run(self, script: Any, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        return run_scripts(self.client, script, calls)

    # ---- indexes and progress ----------------------------------------------------------------------
    def touch_customers(self, latest: dict[tuple[str, str], int]) -> None:
        """Raise each (meter, customer)'s score in the customers index to the latest timestamp seen.

        ``ZADD GT`` only ever raises a score, so repeating it (a replayed batch) changes nothing.
        """
        if not latest:
            return
        per_meter: dict[str, dict[str, int]] = {}
        for (meter_id, customer), ts in latest.items():
            per_meter.setdefault(meter_id, {})[customer] = ts
        with map_redis_errors("the customers index update"):
            pipe = self.client.pipeline(transaction=False)
            for meter_id, members in per_meter.items():
                pipe.zadd(self.keys.customers(meter_id), members, gt=True)
            pipe.execute()

    def load_progress(self, group: str) -> dict[str, int]:
        """Stored next offsets, ``"<topic>/<partition>" → offset``."""
        with map_redis_errors("loading progress"):
            raw = self.client.hgetall(self.keys.progress(group))
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}

    def store_progress(self, group: str, offsets: dict[str, int]) -> None:
        if not offsets:
            return
        with map_redis_errors("storing progress"):
            self.client.hset(self.keys.progress(group), mapping=offsets)  # type: ignore[arg-type]

    def bump_stats(self, component: str, counts: dict[str, int]) -> None:
        if not counts:
            return
        with map_redis_errors("updating stats"):
            pipe = self.client.pipeline(transaction=False)
            for name, n in counts.items():
                pipe.hincrby(self.keys.stats(component), name, n)
            pipe.execute()
