"""Prometheus metrics of the processor process, served by :func:`start_metrics_server`.

The processor loop reports each batch with :func:`observe_batch` (its ``Output.stats`` counter, the time
the batch took and how many records it held) and, when it knows it, the lag of a partition with
:func:`set_lag`. Metric names:

- ``meterstream_processor_records_total{kind,result}``: events and cancellations by claim result
  (``event``/``new``, ``event``/``dup``, ``cancel``/``cancel``, ...);
- ``meterstream_processor_rejected_total{code}``: records sent to ``meter-event-errors``, by Stripe code;
- ``meterstream_processor_batch_seconds``: histogram of the time from consume to stored progress;
- ``meterstream_processor_batch_records``: histogram of records per batch;
- ``meterstream_processor_lag_records{topic,partition}``: records behind the high watermark;
- ``meterstream_processor_lag_seconds{topic,partition}``: how far behind in time — at scrape time, the
  age of the newest record processed on a partition that still has records waiting (0 when caught up).
  Computed when scraped, so it keeps growing while the processor is stuck (what an alert needs);
- ``meterstream_processor_last_record_timestamp_seconds{topic,partition}``: that record's Kafka timestamp.

The same counters (summed over every processor of the group) are also in Redis (``Keys.stats``) and
re-exported by the gateway's ``/metrics`` as ``meterstream_pipeline_*``; these per-process metrics add
latency and a per-instance view. The objects live in their own registry, not the global one, so importing
this module never changes what another component exports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "BATCH_RECORDS",
    "BATCH_SECONDS",
    "LAG",
    "RECORDS",
    "REGISTRY",
    "REJECTED",
    "clear_lag",
    "note_processed",
    "observe_batch",
    "set_lag",
    "start_metrics_server",
]

REGISTRY = CollectorRegistry(auto_describe=True)

RECORDS = Counter(
    "meterstream_processor_records",
    "Events and cancellations the processor judged, by kind and claim result.",
    ["kind", "result"],
    registry=REGISTRY,
)
REJECTED = Counter(
    "meterstream_processor_rejected",
    "Records rejected to meter-event-errors, by Stripe error code.",
    ["code"],
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "meterstream_processor_batch_seconds",
    "Time to process one batch, from consume to stored progress.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
BATCH_RECORDS = Histogram(
    "meterstream_processor_batch_records",
    "Records per processed batch.",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10_000, 50_000),
    registry=REGISTRY,
)
LAG = Gauge(
    "meterstream_processor_lag_records",
    "Records of a partition not processed yet (high watermark minus next offset).",
    ["topic", "partition"],
    registry=REGISTRY,
)


def observe_batch(stats: Mapping[str, int], seconds: float, records: int) -> None:
    """Record one batch: ``stats`` is the engine's counter (``"event:new"``, ``"rejected:no_meter"``, ...)."""
    for name, n in stats.items():
        if not n:
            continue
        head, _, tail = name.partition(":")
        if head == "rejected":
            REJECTED.labels(tail).inc(n)
        elif tail:
            RECORDS.labels(head, tail).inc(n)
    BATCH_SECONDS.observe(seconds)
    BATCH_RECORDS.observe(records)


class _LagSeconds(Collector):
    """``lag_seconds`` and ``last_record_timestamp_seconds`` per partition, computed when scraped."""

    def __init__(self, clock: Any = time.time) -> None:
        self._lock = threading.Lock()
        self._newest_ms: dict[tuple[str, str], int] = {}
        self._lag: dict[tuple[str, str], int] = {}
        self._clock = clock

    def processed(self, newest_ms: Mapping[tuple[str, int], int]) -> None:
        with self._lock:
            for (topic, partition), ms in newest_ms.items():
                key = (topic, str(partition))
                self._newest_ms[key] = max(ms, self._newest_ms.get(key, 0))

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        with self._lock:
            self._lag[(topic, str(partition))] = lag

    def forget(self, topic: str, partition: int) -> None:
        with self._lock:
            self._lag.pop((topic, str(partition)), None)
            self._newest_ms.pop((topic, str(partition)), None)

    def clear(self) -> None:
        with self._lock:
            self._lag.clear()
            self._newest_ms.clear()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._clock()
        seconds = GaugeMetricFamily(
            "meterstream_processor_lag_seconds",
            "Seconds the processor is behind on a partition: age of the newest processed record while records wait.",
            labels=["topic", "partition"],
        )
        newest = GaugeMetricFamily(
            "meterstream_processor_last_record_timestamp_seconds",
            "Kafka timestamp of the newest record processed on a partition.",
            labels=["topic", "partition"],
        )
        with self._lock:
            for key, lag in sorted(self._lag.items()):
                ms = self._newest_ms.get(key)
                behind = 0.0 if lag <= 0 or ms is None else max(0.0, now - ms / 1000)
                seconds.add_metric(list(key), behind)
            for key, ms in sorted(self._newest_ms.items()):
                newest.add_metric(list(key), ms / 1000)
        yield seconds
        yield newest


LAG_SECONDS = _LagSeconds()
REGISTRY.register(LAG_SECONDS)


def note_processed(records: Iterable[Any]) -> None:
    """Remember the newest Kafka timestamp per partition of a processed batch (``RawRecord``-like:
    ``topic``, ``partition``, ``received_ms``)."""
    newest: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        if r.received_ms > newest.get(key, -1):
            newest[key] = r.received_ms
    LAG_SECONDS.processed(newest)


def set_lag(topic: str, partition: int, lag: int) -> None:
    """The lag of one partition (``topic`` without the prefix)."""
    LAG.labels(topic, str(partition)).set(max(0, lag))
    LAG_SECONDS.set_lag(topic, partition, max(0, lag))


def clear_lag(topic: str, partition: int) -> None:
    """Forget a partition's lag (revoked: another member reports it now)."""
    LAG_SECONDS.forget(topic, partition)
    try:
        LAG.remove(topic, str(partition))
    except KeyError:
        pass


def start_metrics_server(port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY) -> None:
    """Serve ``/metrics`` of ``registry`` (the processor's by default; the sink passes its own) on ``port``
    from a daemon thread (returns at once). Port 0 is refused: the scrape target must be known."""
    if not 0 < port < 65536:
        raise ValueError(f"metrics port must be 1..65535, got {port}")
    start_http_server(port, addr, registry=registry)
