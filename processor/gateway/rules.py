"""Synchronous judgement of meter events at the gateway, with the processor's own rules.

Stripe answers ``POST /v1/billing/meter_events`` and ``POST /v2/billing/meter_events`` with a 400 for what it
can decide at request time; the gateway does the same, from its meter cache and the rule functions of
:mod:`processor.aggregator.validate` (one implementation: the gateway refuses exactly what the processor
would reject, with the same code and message). The processor stays the authority: it judges every record
again (a meter deactivated a moment ago by another gateway, two gateways racing on one identifier).

- :class:`MeterCache`: meters by event_name. A meter's id, event_name and keys never change, only its
  status, so an entry is re-read from Redis (one ``HGET``) when older than ``MAX_AGE_S``; this gateway's own
  meter writes update it at once. Unknown names are asked again at most every ``MAX_AGE_S``.
- :func:`judge`: the rules in the SPEC §3 order — no meter, inactive meter, no customer, value, digits,
  timestamp window — raising :class:`MeterEventRejectedError` (400, Stripe's code, ``param``,
  ``Stripe-Should-Retry: false``).
- :meth:`Judge.held`: whether the processor already holds an identifier (Stripe's synchronous duplicate
  answer), read from the processor's claim key with ``processor/state/lua/held.lua``; :meth:`Judge.admit`
  claims the request's Idempotency-Key in the same script call.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from importlib import resources
from typing import Any, cast

from processor.aggregator.validate import (
    CUSTOMER_REFUSED,
    as_customer,
    meter_problem,
    meter_value,
    timestamp_problem,
)
from processor.errors import DuplicateEventError, EventValidationError
from processor.gateway.idempotency import Claim
from processor.gateway.redis_batch import RedisBatcher
from processor.meters import Meter
from processor.state.connect import AsyncRedis
from processor.state.keys import DAY_S, DEDUP_WINDOW_MS, IDEMPOTENCY_LOCK_MS, Keys, claim_digest

__all__ = ["MAX_AGE_S", "MeterCache", "MeterEventRejectedError", "judge"]

MAX_AGE_S = 1.0
_MAX_ENTRIES = 10_000
_RESERVATION_PREFIX = "pending:"  # processor/meters/registry.py: an event_name being claimed, no meter yet

#: Where each rule's error points (Stripe's ``param``).
_PARAM = {
    "no_meter": "event_name",
    "archived_meter": "event_name",
    "timestamp_too_far_in_past": "timestamp",
    "timestamp_in_future": "timestamp",
}


class MeterEventRejectedError(EventValidationError):
    """A meter event a rule refuses (400 with the rule's Stripe code). Not retryable."""


class MeterCache:
    """event_name → (meter or None, when read). Coroutines only (one event loop)."""

    def __init__(self, client: AsyncRedis, keys: Keys, *, max_age_s: float = MAX_AGE_S) -> None:
        self._redis = client
        self._keys = keys
        self.max_age_s = max_age_s
        self._entries: dict[str, tuple[Meter | None, float]] = {}
        self._ids: dict[str, str] = {}  # event_name -> meter id, for good (never changes)

    def put(self, meter: Meter) -> None:
        """A meter this process just wrote: seen at once, whatever the cache held."""
        self._ids[meter.event_name] = meter.id
        self._remember(meter.event_name, meter)

    def fresh(self, event_name: str) -> tuple[bool, Meter | None]:
        """``(True, meter or None)`` when the cached entry is young enough, else ``(False, None)``."""
        entry = self._entries.get(event_name)
        if entry is None or time.monotonic() - entry[1] > self.max_age_s:
            return False, None
        return True, entry[0]

    async def get(self, event_name: str) -> Meter | None:
        ok, meter = self.fresh(event_name)
        if ok:
            return meter
        meter_id = self._ids.get(event_name)
        if meter_id is None:
            owner = cast(str | None, await self._redis.hget(self._keys.meter_names, event_name))
            if owner is None or owner.startswith(_RESERVATION_PREFIX):
                self._remember(event_name, None)
                return None
            meter_id = owner
        raw = cast(str | None, await self._redis.hget(self._keys.meters, meter_id))
        meter = None if raw is None else Meter.from_json(raw)
        if meter is not None and meter.event_name == event_name:
            self._ids[event_name] = meter.id
        else:
            meter = None
        self._remember(event_name, meter)
        return meter

    def _remember(self, event_name: str, meter: Meter | None) -> None:
        if len(self._entries) >= _MAX_ENTRIES and event_name not in self._entries:
            self._entries.clear()
        self._entries[event_name] = (meter, time.monotonic())


def _reject(code: str, message: str, meter: Meter | None) -> MeterEventRejectedError:
    param = _PARAM.get(code)
    if param is None and meter is not None:
        key = meter.customer_key if code in ("meter_event_no_customer_defined", CUSTOMER_REFUSED) else meter.value_key
        param = f"payload[{key}]"
    return MeterEventRejectedError(message, param=param, code=code)


def judge(event_name: str, meter: Meter | None, payload: Mapping[str, Any], timestamp: int, now_s: int) -> None:
    """Raise :class:`MeterEventRejectedError` when the processor would reject this event received at
    ``now_s`` (its first failing rule, in the processor's order)."""
    customer = None if meter is None else as_customer(payload.get(meter.customer_key))
    problem = meter_problem(event_name, meter, customer)
    if problem is None and meter is not None and meter.formula != "count":
        value = meter_value(meter, payload)
        if isinstance(value, tuple):
            problem = value
    if problem is None:
        problem = timestamp_problem(timestamp, now_s)
    if problem is not None:
        raise _reject(problem[0], problem[1], meter)


class Judge:
    """The duplicate check: one script on the processor's claim key (held.lua), in the shared batch; with
    an Idempotency-Key, the same script claims the key too."""

    def __init__(self, batcher: RedisBatcher, keys: Keys) -> None:
        self._batcher = batcher
        self._keys = keys
        self._script = resources.files("processor.state").joinpath("lua", "held.lua").read_text("utf-8")
        self._sha = hashlib.sha1(self._script.encode()).hexdigest()  # Redis names scripts by SHA-1

    def _where(self, meter: Meter, identifier: str) -> tuple[str, int, bytes]:
        """(claim bucket of today, now in ms, field) of ``identifier`` (held.lua's KEYS[1] and ARGV)."""
        now_ms = int(time.time() * 1000)
        shard, field = claim_digest(identifier)
        return self._keys.claims(meter.id, shard, now_ms // (DAY_S * 1000)), now_ms, field

    async def held(self, meter: Meter, identifier: str) -> bool:
        key, now_ms, field = self._where(meter, identifier)
        found = await self._batcher.script(self._sha, self._script, 1, key, now_ms, DEDUP_WINDOW_MS, field)
        return bool(int(cast(int, found)))

    async def refuse_duplicate(self, meter: Meter, identifier: str) -> None:
        """Stripe's synchronous duplicate answer when an accepted event of the last 24 h holds it."""
        if await self.held(meter, identifier):
            raise DuplicateEventError(identifier)

    async def admit(self, meter: Meter, identifier: str | None, claim: Claim | None) -> None:
        """The duplicate check of a given ``identifier`` and the request's idempotency ``claim``, each when
        there is one: on a single Redis server, both in one script call (one round trip instead of two);
        on a cluster, where the two keys live in different slots, the claim first, then the check.
        Raises :class:`DuplicateEventError` (the key then stays unclaimed, or is released by the
        middleware) or :class:`~processor.gateway.idempotency.KeyTakenError`."""
        if claim is None:
            if identifier is not None:
                await self.refuse_duplicate(meter, identifier)
            return
        if identifier is None or not self._batcher.single_server:
            await claim.take()
            if identifier is not None:
                await self.refuse_duplicate(meter, identifier)
            return
        key, now_ms, field = self._where(meter, identifier)
        token = claim.store.token(claim.fp)
        found = await self._batcher.script(
            self._sha, self._script, 2, key, claim.name, now_ms, DEDUP_WINDOW_MS, field, token, IDEMPOTENCY_LOCK_MS
        )
        if claim.settle(token, found):
            raise DuplicateEventError(identifier)


def error_record(
    code: str, message: str, event: Any, *, source: str, received_ms: int, meter_id: str | None, identifier: str | None
) -> bytes:
    """A ``meter-event-errors`` value for an event the gateway refused inside a v2 stream batch: the
    processor's fields (``topic``/``partition``/``offset`` name the gateway, not a Kafka position, since
    the event never reached ``meter-events``) plus ``meter_id`` and ``identifier`` for the notifier."""
    return json.dumps(
        {
            "code": code,
            "message": message,
            "event": event,
            "topic": source,
            "partition": -1,
            "offset": -1,
            "received_at": received_ms,
            "meter_id": meter_id,
            "identifier": identifier,
        },
        separators=(",", ":"),
        default=str,
    ).encode()
