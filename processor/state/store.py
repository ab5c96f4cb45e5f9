"""The Redis edge of the processor: the two Lua steps (claim, apply), stored progress, the customers index.

Works on a standalone server (each step is one script call for a whole batch) and on Redis Cluster (the
ops of a step are grouped by hash slot, one script call per slot, pipelined per node). Every op of a step
is idempotent by record position, so the grouping never changes the result — only the round trips.

The ops and the scripts' answers are typed in steps.py (the one place that knows the scripts' array
positions); running a script per hash slot, and re-sending what a reshaping cluster refused, is
scripts.py. Redis errors are translated to :class:`~processor.errors.StateError` here, so callers see one
error type.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgpack
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from processor.errors import StateError
from processor.state.connect import sync_redis_url
from processor.state.keys import (
    BEST_TTL_S,
    CANDIDATES_TTL_S,
    CLAIM_TTL_S,
    DAY_S,
    USAGE_RETENTION_DAYS,
    WATERMARK_TTL_S,
    Keys,
    claim_digest,
)
from processor.state.scripts import lua_source, run_scripts
from processor.state.steps import (
    ApplyAnswer,
    ApplyOp,
    CancelClaim,
    ClaimOp,
    EventClaim,
    decode_apply_answer,
    decode_cancel_claim,
    decode_event_claim,
    pack_apply_op,
)

__all__ = ["StateStore", "connect_redis", "map_redis_errors"]


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


_DAY_MS = DAY_S * 1000
_EXP = struct.Struct(">HQ")  # claim.lua's expiry: key index, expire-at ms
#: How often a claim bucket's expiry is set again even though this store set it already (see _expiries).
EXPIRY_RECHECK_MS = 600_000


def _bucket_expiry(key: str, now_ms: int) -> int:
    """When a claim bucket may go: CLAIM_TTL_S after the end of its day, and later by the processing lag
    when catching up (a record received at the end of the day judged now: its identifier must be held for
    24 h of records still to come, which arrive as late as this one did)."""
    stop = (int(key.rsplit(":", 1)[1]) + 1) * _DAY_MS
    return max(stop, now_ms) + CLAIM_TTL_S * 1000 + max(0, now_ms - stop)


_OP = struct.Struct(">cIHI8scIHHI")  # claim.lua's 32-byte op: kind, identity, key, day, field, own entry


def _entries(raw: bytes | None, day: int) -> list[tuple[bytes, int]]:
    """(kind, received ms) of the packed entries of one claim field (claim.lua's layout)."""
    out: list[tuple[bytes, int]] = []
    pos, n = 0, len(raw or b"")
    while raw and pos < n:
        kind = raw[pos : pos + 1]
        out.append((kind, day * _DAY_MS + int.from_bytes(raw[pos + 1 : pos + 5], "big")))
        pos += 21 if kind in b"XAU" else 13
    return out


class StateStore:
    """Processor state in Redis under one prefix. Constructing it does no I/O."""

    def __init__(
        self, client: redis.Redis | RedisCluster, prefix: str, retention_days: int = USAGE_RETENTION_DAYS
    ) -> None:
        self.client = client
        #: hour, day and minute buckets are kept this long from their start (METERSTREAM_USAGE_RETENTION_DAYS)
        self.retention_s = retention_days * DAY_S
        self._usage_expiry: dict[str, tuple[int, int]] = {}  # usage key → (expiry set, when set)
        self._expiry_wanted: dict[str, int] = {}  # usage key → the expiry last asked for
        self._trimmed: dict[str, int] = {}  # usage key → UTC day (days since 1970) it was last trimmed
        self.keys = Keys(prefix)
        self.cluster = isinstance(client, RedisCluster)
        self._claim = client.register_script(lua_source("claim.lua"))
        self._apply = client.register_script(lua_source("apply.lua"))
        self._claim_keys: dict[tuple[str, int, int], str] = {}
        self._claim_expiry: dict[str, tuple[int, int]] = {}  # bucket key → (expiry set, when set)

    # ---- grouping ---------------------------------------------------------------------------------
    def _groups(self, ops: Sequence[Any], first_key: str) -> list[list[Any]]:
        if not self.cluster:
            return [list(ops)] if ops else []
        groups: dict[int, list[Any]] = {}
        for op in ops:
            groups.setdefault(key_slot(getattr(op, first_key).encode()), []).append(op)
        return list(groups.values())

    # ---- claim -------------------------------------------------------------------------------------
    def claim(
        self, events: Sequence[ClaimOp], cancels: Sequence[ClaimOp], now_ms: int | None = None
    ) -> tuple[list[EventClaim], list[CancelClaim]]:
        """Run the identifier step for ``events`` then ``cancels`` (one round trip for both): one answer per
        op, in order (claim.lua)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        keys_of = self._claim_keys
        if len(keys_of) > 100_000:
            keys_of.clear()
        # per call (hash slot): keys, key index, identity index, packed ops, positions of its ops in ``ops``
        calls: dict[int, tuple[list[str], dict[str, int], dict[tuple[str, bytes], int], list[bytes], list[int]]] = {}
        pack = _OP.pack
        n_events = len(events)
        ops = [*events, *cancels]
        for i, op in enumerate(ops):
            shard, fld = claim_digest(op.identifier)
            day = op.received_ms // _DAY_MS
            key = keys_of.get((op.meter_id, shard, day))
            if key is None:
                key = keys_of[(op.meter_id, shard, day)] = self.keys.claims(op.meter_id, shard, day)
            slot = key_slot(key.encode()) if self.cluster else 0
            call = calls.get(slot)
            if call is None:
                call = calls[slot] = ([], {}, {}, [], [])
            keys, kidx, iids, packed, where = call
            ki = kidx.get(key)
            if ki is None:
                keys.append(key)
                ki = kidx[key] = len(keys)
            iid = iids.setdefault((op.meter_id, fld), len(iids))
            kind = b"E" if i < n_events else b"C"
            rel = op.received_ms - day * _DAY_MS
            off = op.offset
            packed.append(pack(kind, iid, ki, day, fld, kind, rel, op.partition, off >> 32, off & 0xFFFFFFFF))
            where.append(i)
        plan = list(calls.values())
        args = []
        for keys, _, _, packed, _ in plan:
            args.append((keys, [b"".join(packed), self._expiries(keys, now_ms)]))
        with map_redis_errors("the claim step"):
            outs = self._run(self._claim, args)
        # every op is in exactly one call, so each placeholder is replaced by its answer below
        event_claims: list[EventClaim] = [EventClaim("dup")] * n_events
        cancel_claims: list[CancelClaim] = [CancelClaim("noop")] * len(cancels)
        for call, out in zip(plan, outs, strict=True):
            answers, expired = out[:-1], out[-1]  # one answer per op of the call, then the keys given an expiry
            for i, raw in zip(call[4], answers, strict=True):
                if i < n_events:
                    event_claims[i] = decode_event_claim(raw)
                else:
                    cancel_claims[i - n_events] = decode_cancel_claim(raw)
            for ki in expired:
                key = call[0][int(ki) - 1]
                self._claim_expiry[key] = (_bucket_expiry(key, now_ms), now_ms)
        return event_claims, cancel_claims

    def _expiries(self, keys: list[str], now_ms: int) -> bytes:
        """claim.lua's ARGV[2]: the expiry of each bucket key unless this store set one recently that is
        still high enough. Expiries only rise, so what we set is a lower bound while the key lives; asking
        again every EXPIRY_RECHECK_MS covers a key deleted and re-created meanwhile (ops tools, tests)."""
        known = self._claim_expiry
        if len(known) > 200_000:
            known.clear()
        parts = []
        for ki, key in enumerate(keys, start=1):
            want = _bucket_expiry(key, now_ms)
            have = known.get(key)
            if have is None or want > have[0] + EXPIRY_RECHECK_MS or now_ms - have[1] > EXPIRY_RECHECK_MS:
                parts.append(_EXP.pack(ki, want))
        return b"".join(parts)

    def holds_event(self, items: Sequence[tuple[str, str]], now_ms: int) -> list[bool]:
        """For each (meter id, identifier): does a claim hold an accepted event received within 24 h of
        ``now_ms`` (the identifier is taken)? Read-only (ops tools)."""
        pipe = self.client.pipeline(transaction=False)
        day = now_ms // _DAY_MS
        for meter_id, identifier in items:
            shard, fld = claim_digest(identifier)
            for d in (day - 1, day, day + 1):
                pipe.hget(self.keys.claims(meter_id, shard, d), fld)
        with map_redis_errors("reading claims"):
            raw = pipe.execute() if items else []
        out = []
        for i in range(len(items)):
            held = False
            for j, d in enumerate((day - 1, day, day + 1)):
                for kind, received_ms in _entries(raw[3 * i + j], d):
                    if kind in b"EXA" and abs(received_ms - now_ms) <= 86_400_000:
                        held = True
            out.append(held)
        return out

    # ---- apply -------------------------------------------------------------------------------------
    def apply(self, ops: Sequence[ApplyOp]) -> int:
        """Apply aggregate changes (skipping any already applied); returns how many were applied now.

        Additive changes ('+'/'-', raw sum and count) are summed here, per (customer watermark, source
        partition) run of ascending offsets, into one delta per bucket field: the script applies a run
        whole when its first offset is above the watermark (the common case, nothing of it applied yet)
        and otherwise asks for it again op by op (a replay after a crash; a second call)."""
        calls: list[tuple[list[str], list[Any]]] = []
        runs_of: list[list[list[ApplyOp]]] = []
        for group in self._groups(ops, "hour_key"):
            keys, args, runs = self._apply_args(group, detail=False)
            calls.append((keys, args))
            runs_of.append(runs)
        with map_redis_errors("the apply step"):
            answers = [decode_apply_answer(o) for o in self._run(self._apply, calls)]
            applied = sum(a.applied for a in answers)
            self._note_expiries(calls, answers)
            again: list[tuple[list[str], list[Any]]] = []
            for answer, runs in zip(answers, runs_of, strict=True):
                redo = [op for i in answer.redo for op in runs[i - 1]]
                if redo:
                    keys, args, _ = self._apply_args(redo, detail=True)
                    again.append((keys, args))
            if again:
                answers = [decode_apply_answer(o) for o in self._run(self._apply, again)]
                applied += sum(a.applied for a in answers)
                self._note_expiries(again, answers)
        return applied

    def _note_expiries(self, calls: list[tuple[list[str], list[Any]]], answers: list[ApplyAnswer]) -> None:
        now_ms = int(time.time() * 1000)
        for (keys, _), answer in zip(calls, answers, strict=True):
            for ki in answer.expired:
                key = keys[ki - 1]
                self._usage_expiry[key] = (self._expiry_wanted.get(key, 0), now_ms)

    def _apply_args(
        self, group: Sequence[ApplyOp], *, detail: bool
    ) -> tuple[list[str], list[Any], list[list[ApplyOp]]]:
        """apply.lua's KEYS and ARGV for one call; also the additive runs in the order ARGV[3] lists them."""
        keys: list[str] = []
        kidx: dict[str, int] = {}

        def ix(key: str) -> int:
            if not key:
                return 0
            i = kidx.get(key)
            if i is None:
                keys.append(key)
                i = kidx[key] = len(keys)
            return i

        packed: list[Any] = []
        runs: dict[tuple[str, str], tuple[list[ApplyOp], dict[tuple[str, int], int]]] = {}
        minute_keys: set[str] = set()
        newest: dict[str, int] = {}  # hour / day key → newest bucket (UTC day start) this call writes
        for op in group:
            kind = op.kind
            day_start = op.ts - op.ts % 86400
            if newest.get(op.hour_key, day_start - 1) < day_start:
                newest[op.hour_key] = newest[op.day_key] = day_start
            if not detail and (kind == "+" or kind == "-"):
                run = runs.get((op.wm_key, op.src))
                if run is None:
                    run = runs[(op.wm_key, op.src)] = ([], {})
                run[0].append(op)
                sums = run[1]
                delta = 1 if op.formula == "count" else int(op.value)
                if kind == "-":
                    delta = -delta
                ts = op.ts
                hour = (op.hour_key, ts - ts % 3600)
                day = (op.day_key, ts - ts % 86400)
                minute = (op.minutes_key, ts - ts % 60)
                sums[hour] = sums.get(hour, 0) + delta
                sums[day] = sums.get(day, 0) + delta
                sums[minute] = sums.get(minute, 0) + delta
                minute_keys.add(op.minutes_key)
                continue
            packed.append(pack_apply_op(op, ix))
        packed_runs = []
        for (wm_key, src), (run_ops, sums) in runs.items():
            offsets = [o.offset for o in run_ops]
            assert offsets == sorted(offsets), "a source's records are applied in offset order"
            flat: list[Any] = []
            for (key, bucket), delta in sums.items():
                if delta:
                    flat.extend((ix(key), str(bucket), str(delta)))
            packed_runs.append((ix(wm_key), src, offsets[0], offsets[-1], len(run_ops), flat))
        ttls = (CANDIDATES_TTL_S * 1000, BEST_TTL_S * 1000, WATERMARK_TTL_S * 1000, self.retention_s)
        args = [
            msgpack.packb(ttls),
            msgpack.packb(packed),
            msgpack.packb(packed_runs),
            msgpack.packb([ix(k) for k in minute_keys]),
            msgpack.packb(self._retention_args(newest, ix)),
        ]
        return keys, args, [r[0] for r in runs.values()]

    def _retention_args(self, newest: dict[str, int], ix: Callable[[str], int]) -> tuple[int, list[int], list[int]]:
        """apply.lua's ARGV[5]: the cutoff, the hour/day keys not trimmed today by this store, and the expiry
        of each key whose newest bucket moved on (or was set over EXPIRY_RECHECK_MS ago): a hash goes whole
        when its newest bucket is past retention. Expiries only rise, as for claim buckets."""
        now_ms = int(time.time() * 1000)
        today = now_ms // _DAY_MS
        cutoff = now_ms // 1000 - self.retention_s
        if len(self._trimmed) > 200_000:
            self._trimmed.clear()
        if len(self._usage_expiry) > 200_000:
            self._usage_expiry.clear()
            self._expiry_wanted.clear()
        trim: list[int] = []
        expire: list[int] = []
        for key, day_start in newest.items():
            if self._trimmed.get(key) != today:
                self._trimmed[key] = today
                trim.append(ix(key))
            want = (day_start + DAY_S + self.retention_s) * 1000
            have = self._usage_expiry.get(key)
            if have is None or want > have[0] or now_ms - have[1] > EXPIRY_RECHECK_MS:
                expire.extend((ix(key), want))
                self._expiry_wanted[key] = want
        return cutoff, trim, expire

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
