"""Everything one gateway process holds: settings, clients, caches. Built without I/O; connected at app
start-up (:meth:`Gateway.start`) and closed at clean-up (:meth:`Gateway.close`).

Clients and why each exists:

- ``redis`` (asyncio) for the reads the event loop does itself (sessions, stats, customers);
- ``sync_redis`` for :func:`processor.state.summaries.summarize`, which is synchronous and runs in a
  worker thread so a long range never stalls other requests;
- :class:`~processor.meters.MeterRegistry` (synchronous: it waits for Kafka) for every meter call, in a
  worker thread;
- :class:`~processor.gateway.ingest.AckingProducer` for events and cancellations.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiohttp import web

from processor.config import Settings
from processor.errors import ConfigError, InvalidRequestError, RateLimitedError
from processor.gateway.idempotency import IdempotencyStore
from processor.gateway.ingest import AckingProducer, EventIn
from processor.gateway.metrics import GatewayMetrics
from processor.gateway.pipeline import PipelineProbe
from processor.gateway.redis_batch import RedisBatcher
from processor.gateway.rules import Judge, MeterCache
from processor.gateway.sessions import SessionStore
from processor.gateway.stream_errors import ErrorPublisher
from processor.meters import Meter, MeterRegistry
from processor.meters.model import DEFAULT_CUSTOMER_KEY
from processor.state.connect import AsyncRedis, SyncRedis, async_redis, sync_redis
from processor.state.keys import GATEWAY_SESSION_TTL_S, Keys
from processor.wire import KeyChecker
from processor.wire.auth import FailedAuthThrottle

__all__ = ["GATEWAY", "Gateway", "check_settings"]

#: An event_name with no meter is looked up again at most this often (a meter may be created any time).
_MISS_TTL_S = 1.0
_MAX_MISSES = 10_000


def check_settings(settings: Settings) -> None:
    """Fail at start, naming the variable, when the gateway cannot run with these settings."""
    if not settings.api_keys:
        raise ConfigError(
            "METERSTREAM_API_KEYS is not set: the gateway needs at least one API key (`meterstream up` generates one)"
        )
    settings.require_redis_url()
    settings.kafka_config()


class Gateway:
    """The state of one gateway process (lives in the aiohttp app)."""

    def __init__(
        self,
        settings: Settings,
        *,
        max_in_flight: int | None = None,
        session_ttl_s: int = GATEWAY_SESSION_TTL_S,
        metrics_dir: str | None = None,
    ) -> None:
        check_settings(settings)
        self.settings = settings
        self.keys = Keys(settings.redis_prefix)
        self.checker = KeyChecker([k.reveal() for k in settings.api_keys])
        self.producer = (
            AckingProducer(settings) if max_in_flight is None else AckingProducer(settings, max_in_flight=max_in_flight)
        )
        self.registry = MeterRegistry(settings)
        self.redis: AsyncRedis = async_redis(settings, decode_responses=True)
        self.sync_redis: SyncRedis = sync_redis(settings, decode_responses=True)
        self.sessions = SessionStore(
            self.redis, self.keys, ttl_s=session_ttl_s, api_keys=[k.reveal() for k in settings.api_keys]
        )
        self.auth_throttle = FailedAuthThrottle()
        self.metrics = GatewayMetrics(metrics_dir)
        self.pipeline = PipelineProbe(settings, self.redis, self.keys)
        self._meters_by_name: dict[str, Meter] = {}
        self._misses: dict[str, float] = {}
        # issue 14: idempotency keys, synchronous event rules, per-event stream errors
        self.batcher = RedisBatcher(self.redis)
        self.idempotency = IdempotencyStore(self.batcher, settings.redis_prefix)
        self.meter_cache = MeterCache(self.redis, self.keys)
        self.judge = Judge(self.batcher, self.keys)
        self.stream_errors = ErrorPublisher(settings)

    async def start(self) -> None:
        self.producer.start()

    async def close(self) -> None:
        await self.producer.aclose()
        await asyncio.to_thread(self.stream_errors.close)
        await self.batcher.aclose()
        await asyncio.to_thread(self.registry.close)
        await asyncio.to_thread(self.pipeline.close)
        await self.redis.aclose()
        self.sync_redis.close()

    async def publish(self, endpoint: str, events: Sequence[EventIn]) -> None:
        """Produce ``events`` and wait for Kafka's acknowledgement, counting the outcome by ``endpoint``."""
        try:
            await self.producer.send_events(events)
        except BaseException as exc:
            self.metrics.count_events(endpoint, _outcome(exc), len(events))
            raise
        self.metrics.count_events(endpoint, "acked", len(events))

    async def publish_cancel(self, endpoint: str, event_name: str, identifier: str) -> None:
        """Produce one cancellation and wait for Kafka's acknowledgement."""
        try:
            await self.producer.send_cancel(event_name, identifier)
        except BaseException as exc:
            self.metrics.count_events(endpoint, _outcome(exc))
            raise
        self.metrics.count_events(endpoint, "acked")

    async def meter(self, meter_id: str) -> Meter:
        """The meter with this id (:class:`~processor.errors.MeterNotFoundError` when there is none)."""
        return await asyncio.to_thread(self.registry.get, meter_id)

    def known_customer_key(self, event_name: str) -> str | None:
        """The customer key of a meter already seen (no I/O), else ``None``: the hot path of events."""
        meter = self._meters_by_name.get(event_name)
        return None if meter is None else meter.customer_key

    async def customer_key(self, event_name: str) -> str:
        """The payload key holding the customer for events of ``event_name``: the meter's
        ``customer_mapping.event_payload_key``, or Stripe's default when no meter has that name (the
        processor then rejects the event with ``no_meter``, as Stripe does asynchronously).

        A meter's event_name and customer key never change, so found meters are cached for good."""
        meter = self._meters_by_name.get(event_name)
        if meter is not None:
            return meter.customer_key
        now = time.monotonic()
        missed = self._misses.get(event_name)
        if missed is None or now - missed > _MISS_TTL_S:
            found = await asyncio.to_thread(self.registry.find_by_event_name, event_name)
            if found is not None:
                self._meters_by_name[event_name] = found
                self._misses.pop(event_name, None)
                return found.customer_key
            if len(self._misses) >= _MAX_MISSES:
                self._misses.clear()
            self._misses[event_name] = now
        return DEFAULT_CUSTOMER_KEY


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, RateLimitedError):
        return "rate_limited"
    if isinstance(exc, InvalidRequestError):
        return "invalid"
    return "failed"


GATEWAY = web.AppKey("gateway", Gateway)
