"""Pipeline health for ``/healthz``, ``/metrics`` and the dashboard: broker and Redis reachability, the
counters the processor and sink keep in Redis, and consumer lag.

Lag is best effort. ``lag = high watermark - next offset to read``, per partition, where the next offset is
the processor's stored progress (Redis, its source of truth) or the sink group's committed offset (Kafka).
The high watermark is *not* taken from ListOffsets, which the embedded Tansu broker answers wrongly
(SPEC §11), but from a Fetch response: a throwaway consumer (no group membership, never commits) fetches
from each partition's next offset and reads the watermark librdkafka caches from the answer. That is also
right on real Kafka. It costs one small fetch per partition, so results are cached for a few seconds.
A partition that does not answer in time is left out rather than guessed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import redis.asyncio as aioredis
from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from processor.config import Settings
from processor.gateway.metrics import PipelineSnapshot, int_fields
from processor.kafka.consume import fetched_high_watermarks, new_consumer
from processor.logs import mask_secrets
from processor.state.keys import Keys
from topics import Topic

if TYPE_CHECKING:
    from confluent_kafka import Consumer

__all__ = ["LagRow", "PipelineProbe"]

log = logging.getLogger(__name__)

PROCESSOR_TOPICS = (Topic.EVENTS, Topic.ADJUSTMENTS)
SINK_TOPICS = (Topic.ACCEPTED,)
LAG_MAX_AGE_S = 5.0
_PROBE_TIMEOUT_S = 3.0
_CHECK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class LagRow:
    group: str
    topic: str  # catalog (base) name, without the prefix
    partition: int
    next_offset: int
    high_watermark: int

    @property
    def lag(self) -> int:
        return max(0, self.high_watermark - self.next_offset)


class PipelineProbe:
    """Reads health, counters and lag. Kafka calls block, so they run in a worker thread."""

    def __init__(self, settings: Settings, client: aioredis.Redis | aioredis.RedisCluster, keys: Keys) -> None:
        self._settings = settings
        self._redis = client
        self._keys = keys
        self._kafka_lock = threading.Lock()
        self._probe: Consumer | None = None
        self._committed_readers: dict[str, Consumer] = {}
        self._lag: list[LagRow] = []
        self._lag_at = -1e9
        self._lag_task: asyncio.Task[list[LagRow]] | None = None

    def close(self) -> None:
        with self._kafka_lock:
            for consumer in [self._probe, *self._committed_readers.values()]:
                if consumer is not None:
                    consumer.close()
            self._probe = None
            self._committed_readers.clear()

    # ---- reachability ----------------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        """``{"status": "ok"|"degraded", "kafka": {...}, "redis": {...}}`` (errors masked)."""
        redis_check, kafka_check = await asyncio.gather(self._check_redis(), asyncio.to_thread(self._check_kafka))
        ok = redis_check["ok"] and kafka_check["ok"]
        return {"status": "ok" if ok else "degraded", "kafka": kafka_check, "redis": redis_check}

    async def _check_redis(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self._redis.ping(), _CHECK_TIMEOUT_S)
        except Exception as exc:
            return {"ok": False, "error": mask_secrets(f"{type(exc).__name__}: {exc}")[:300]}
        return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}

    def _check_kafka(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            with self._kafka_lock:
                metadata = self._consumer().list_topics(timeout=_CHECK_TIMEOUT_S)
        except KafkaException as exc:
            return {"ok": False, "error": mask_secrets(str(exc))[:300]}
        return {
            "ok": True,
            "brokers": len(metadata.brokers),
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    # ---- counters --------------------------------------------------------------------------------
    async def stats(self) -> tuple[dict[str, int], dict[str, int]]:
        """The processor's and the sink's counters (Redis stats hashes)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self._keys.stats("processor"))
        pipe.hgetall(self._keys.stats("sink"))
        processor, sink = await pipe.execute()
        return int_fields(processor), int_fields(sink)

    async def snapshot(self) -> PipelineSnapshot:
        (processor, sink), lag = await asyncio.gather(self.stats(), self.lag())
        return PipelineSnapshot(processor, sink, [(row.group, row.topic, row.partition, row.lag) for row in lag])

    # ---- lag -------------------------------------------------------------------------------------
    async def lag(self, max_age: float = LAG_MAX_AGE_S) -> list[LagRow]:
        """Lag rows, measured at most every ``max_age`` seconds (concurrent callers share one run)."""
        if time.monotonic() - self._lag_at <= max_age:
            return self._lag
        if self._lag_task is None or self._lag_task.done():
            self._lag_task = asyncio.ensure_future(self._measure())
        return await asyncio.shield(self._lag_task)

    async def _measure(self) -> list[LagRow]:
        progress = cast(dict[str, str], await self._redis.hgetall(self._keys.progress(self._settings.processor_group)))
        try:
            rows = await asyncio.to_thread(self._measure_sync, int_fields(progress))
        except KafkaException as exc:
            log.warning("lag measurement failed: %s", mask_secrets(str(exc)))
            rows = []
        self._lag, self._lag_at = rows, time.monotonic()
        return rows

    def _consumer(self, group: str | None = None) -> Consumer:
        """The probe consumer (``group`` None) or an offsets reader for ``group``; neither ever joins
        a group or commits, so neither disturbs the members."""
        if group is None:
            if self._probe is None:
                self._probe = self._new(f"meterstream-lag-probe-{uuid.uuid4().hex[:8]}")
            return self._probe
        reader = self._committed_readers.get(group)
        if reader is None:
            reader = self._committed_readers[group] = self._new(group)
        return reader

    def _new(self, group: str) -> Consumer:
        """A consumer that fetches little and answers fast: it only learns watermarks and offsets."""
        return new_consumer(
            self._settings,
            group,
            **{
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 50,
                "max.partition.fetch.bytes": 1024,
                "fetch.max.bytes": 65536,
                "message.max.bytes": 65536,
                "log_level": 3,
            },
        )

    def _measure_sync(self, progress: dict[str, int]) -> list[LagRow]:
        prefix = self._settings.topic_prefix
        with self._kafka_lock:
            probe = self._consumer()
            metadata = probe.list_topics(timeout=_CHECK_TIMEOUT_S)
            wanted: dict[tuple[str, int], tuple[str, int]] = {}  # (full topic, partition) -> (group, next)
            for base in PROCESSOR_TOPICS:
                topic = metadata.topics.get(prefix + base)
                for partition in sorted(topic.partitions) if topic is not None and topic.error is None else ():
                    nxt = progress.get(f"{base}/{partition}", 0)
                    wanted[(prefix + base, partition)] = (self._settings.processor_group, nxt)
            sink_tps = []
            for base in SINK_TOPICS:
                topic = metadata.topics.get(prefix + base)
                for partition in sorted(topic.partitions) if topic is not None and topic.error is None else ():
                    sink_tps.append(TopicPartition(prefix + base, partition))
            if sink_tps:
                group = self._settings.sink_group
                for tp in self._consumer(group).committed(sink_tps, timeout=_CHECK_TIMEOUT_S):
                    wanted[(tp.topic, tp.partition)] = (group, tp.offset if tp.offset >= 0 else 0)
            starts = {tp: nxt if nxt > 0 else OFFSET_BEGINNING for tp, (_, nxt) in wanted.items()}
            highs = fetched_high_watermarks(probe, starts, _PROBE_TIMEOUT_S)
        prefix_len = len(self._settings.topic_prefix)
        return [
            LagRow(group, topic[prefix_len:], partition, nxt, highs[(topic, partition)])
            for (topic, partition), (group, nxt) in sorted(wanted.items())
            if (topic, partition) in highs
        ]
