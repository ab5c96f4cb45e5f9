"""Make sure every meter the sink forwards events for exists in Stripe, with the same settings.

Events are sent by ``event_name``, so Stripe needs a meter with that event_name before the first event
arrives (otherwise it drops the event with an asynchronous ``no_meter`` error). For each local meter id
seen on the accepted topic the registry, once per process:

1. reads the local meter from the Redis mirror of the ``meters`` topic (``Keys.meters``);
2. finds the Stripe meter: first the remembered mapping (``Keys.sink_stripe_meters``, verified with a
   retrieve), else by listing Stripe's meters and matching ``event_name``; else creates it with the same
   settings (a concurrent creator in another sink process is detected by listing again);
3. reactivates it if Stripe has it inactive while ours is active (events would be refused);
4. remembers the mapping in Redis.

Stripe meters are immutable apart from the display name and status, so a Stripe meter whose formula,
window or payload keys differ from ours cannot be fixed here: that is logged as an error (the operator
must resolve it) and events still flow, since Stripe is the billing authority.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from processor.config import Settings
from processor.errors import StateError, StripeRejectedError
from processor.meters.model import Meter
from processor.sink.retry import retry_transient
from processor.sink.stripe_api import StripeApi
from processor.state.keys import Keys

__all__ = ["StripeMeters", "create_params", "order_sensitive", "settings_mismatch"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def order_sensitive(meter: Meter) -> bool:
    """Whether the order Stripe *receives* this meter's events in changes the bill: pre-aggregated
    meters keep the last received event of a window, and ``last`` breaks timestamp ties by receipt."""
    return meter.event_time_window is not None or meter.formula == "last"


def create_params(meter: Meter) -> dict[str, Any]:
    """``POST /v1/billing/meters`` params reproducing ``meter``'s settings."""
    params: dict[str, Any] = {
        "display_name": meter.display_name,
        "event_name": meter.event_name,
        "default_aggregation": {"formula": meter.formula},
        "customer_mapping": {"type": "by_id", "event_payload_key": meter.customer_key},
    }
    if meter.formula != "count":  # a count meter never reads a value
        params["value_settings"] = {"event_payload_key": meter.value_key}
    if meter.event_time_window is not None:
        params["event_time_window"] = meter.event_time_window
    return params


def settings_mismatch(meter: Meter, stripe_meter: dict[str, Any]) -> list[str]:
    """The settings in which a Stripe meter (as a dict) differs from ours, as readable strings."""
    theirs = {
        "formula": (stripe_meter.get("default_aggregation") or {}).get("formula"),
        "event_time_window": stripe_meter.get("event_time_window"),
        "customer key": (stripe_meter.get("customer_mapping") or {}).get("event_payload_key") or "stripe_customer_id",
    }
    ours: dict[str, object] = {
        "formula": meter.formula,
        "event_time_window": meter.event_time_window,
        "customer key": meter.customer_key,
    }
    if meter.formula != "count":
        theirs["value key"] = (stripe_meter.get("value_settings") or {}).get("event_payload_key") or "value"
        ours["value key"] = meter.value_key
    return [
        f"{name}: Stripe has {theirs[name]!r}, we have {ours[name]!r}" for name in ours if theirs[name] != ours[name]
    ]


class StripeMeters:
    """Local meter id → our :class:`Meter`, ensured in Stripe. Concurrency-safe (one ensure at a time)."""

    def __init__(
        self,
        settings: Settings,
        stripe: StripeApi,
        redis: aioredis.Redis | aioredis.RedisCluster,
        *,
        rng: random.Random | None = None,
        on_retry: Callable[[], None] = lambda: None,
    ) -> None:
        self._keys = Keys(settings.redis_prefix)
        self._stripe = stripe
        self._redis = redis
        self._rng = rng or random.Random()
        self._on_retry = on_retry
        self._ensured: dict[str, Meter] = {}
        self._stripe_ids: dict[str, str] = {}
        self._lock = asyncio.Lock()

    def get(self, meter_id: str) -> Meter | None:
        """The meter if it was already ensured in this process."""
        return self._ensured.get(meter_id)

    def stripe_id(self, meter_id: str) -> str | None:
        return self._stripe_ids.get(meter_id)

    async def ensure(self, meter_id: str) -> Meter:
        """Our meter, after making sure Stripe has it. Raises :class:`StateError` when the meter is not
        (yet) in the Redis mirror, :class:`RetryableSinkError` on transient Stripe trouble, and
        :class:`StripeRejectedError` when Stripe refuses to create it."""
        meter = self._ensured.get(meter_id)
        if meter is not None:
            return meter
        async with self._lock:
            meter = self._ensured.get(meter_id)
            if meter is not None:
                return meter
            meter = await self._local(meter_id)
            stripe_meter = await self._find_or_create(meter)
            problems = settings_mismatch(meter, stripe_meter)
            if problems:
                log.error(
                    "Stripe meter %s (event_name %r) differs from meter %s: %s. Stripe meters cannot be "
                    "changed; events are forwarded anyway and Stripe bills by its settings",
                    stripe_meter.get("id"),
                    meter.event_name,
                    meter.id,
                    "; ".join(problems),
                )
            if meter.active and stripe_meter.get("status") == "inactive":
                log.warning("reactivating Stripe meter %s (%s is active here)", stripe_meter.get("id"), meter.id)
                stripe_id = str(stripe_meter["id"])
                stripe_meter = await self._call(lambda: self._stripe.reactivate_meter(stripe_id), "reactivating")
            stripe_id = str(stripe_meter["id"])
            await self._remember(meter.id, stripe_id)
            self._ensured[meter_id] = meter
            self._stripe_ids[meter_id] = stripe_id
            log.info("meter %s (%s) is Stripe meter %s", meter.id, meter.event_name, stripe_id)
            return meter

    async def _local(self, meter_id: str) -> Meter:
        try:
            raw = await self._redis.hget(self._keys.meters, meter_id)
        except RedisError as exc:
            raise StateError(f"cannot read the meter mirror in Redis: {exc}") from exc
        if raw is None:
            raise StateError(f"meter {meter_id} is not in the Redis meter mirror ({self._keys.meters}) yet")
        try:
            return Meter.from_json(raw)
        except (KeyError, ValueError, TypeError) as exc:
            raise StateError(f"meter {meter_id} in the Redis mirror is malformed: {exc}") from exc

    async def _remembered(self, meter_id: str) -> str | None:
        try:
            raw = await self._redis.hget(self._keys.sink_stripe_meters, meter_id)
        except RedisError as exc:
            raise StateError(f"cannot read the sink's meter mapping in Redis: {exc}") from exc
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("api_base") != self._stripe.api_base:
            return None  # found for another Stripe account or server: look again
        stripe_id = data.get("stripe_id")
        return stripe_id if isinstance(stripe_id, str) else None

    async def _remember(self, meter_id: str, stripe_id: str) -> None:
        value = json.dumps({"stripe_id": stripe_id, "api_base": self._stripe.api_base}, separators=(",", ":"))
        try:
            await self._redis.hset(self._keys.sink_stripe_meters, meter_id, value)
        except RedisError as exc:
            raise StateError(f"cannot store the sink's meter mapping in Redis: {exc}") from exc

    async def _find_or_create(self, meter: Meter) -> dict[str, Any]:
        stripe_id = await self._remembered(meter.id)
        if stripe_id is not None:
            try:
                found = await self._call(lambda: self._stripe.retrieve_meter(stripe_id), "retrieving a meter")
            except StripeRejectedError as exc:
                log.info("remembered Stripe meter %s for %s is gone (%s); looking again", stripe_id, meter.id, exc)
            else:
                if found.get("event_name") == meter.event_name:
                    return found
        found_by_name = self._pick(await self._call(self._stripe.list_meters, "listing meters"), meter.event_name)
        if found_by_name is not None:
            return found_by_name
        params = create_params(meter)
        try:
            return await self._call(lambda: self._stripe.create_meter(params), "creating a meter")
        except StripeRejectedError:
            # Another sink process may have created it a moment ago (event_name taken): look once more.
            found_by_name = self._pick(await self._call(self._stripe.list_meters, "listing meters"), meter.event_name)
            if found_by_name is not None:
                return found_by_name
            raise

    async def _call(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """One Stripe call, transient failures retried on their own (a multi-step ensure keeps its
        progress instead of starting over)."""
        return await retry_transient(call, what=what, rng=self._rng, on_retry=self._on_retry)

    @staticmethod
    def _pick(meters: list[dict[str, Any]], event_name: str) -> dict[str, Any] | None:
        matches = [m for m in meters if m.get("event_name") == event_name]
        matches.sort(key=lambda m: m.get("status") != "active")  # an active one first
        return matches[0] if matches else None
