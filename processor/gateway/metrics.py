"""The gateway's Prometheus metrics, and the pipeline's counters re-exported from Redis.

Own metrics (one registry per gateway instance, so several in one process never collide):

- ``meterstream_gateway_requests_total{route,method,status}`` and
  ``meterstream_gateway_request_seconds{route}`` (route = the URL pattern, so ids never become labels);
- ``meterstream_gateway_errors_total{code}``: Stripe error codes answered (or the error type when Stripe
  has no code);
- ``meterstream_gateway_events_total{endpoint,result}``: meter events and cancellations by outcome
  (``acked``, ``invalid``, ``failed``, ``rate_limited``).

Pipeline metrics, read from the Redis stats hashes that the processor and the sink update after every
batch (so one scrape of any gateway shows the whole group's totals):

- ``meterstream_pipeline_processor_records_total{kind,result}`` (kind ``event``/``cancel``, result
  ``new``, ``dup``, ...), ``meterstream_pipeline_processor_rejected_total{code}``;
- ``meterstream_pipeline_sink_records_total{counter,mode}`` (delivered, retried, dead_lettered, ...);
- ``meterstream_pipeline_consumer_lag{group,topic,partition}`` (best effort, see pipeline.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

__all__ = ["GatewayMetrics", "PipelineSnapshot"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class PipelineSnapshot:
    """What the last look at Redis (and Kafka, for lag) found."""

    processor: dict[str, int] = field(default_factory=dict)
    sink: dict[str, int] = field(default_factory=dict)
    lag: list[tuple[str, str, int, int]] = field(default_factory=list)  # group, topic, partition, lag


class _PipelineCollector(Collector):
    def __init__(self) -> None:
        self.snapshot = PipelineSnapshot()

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        snap = self.snapshot
        records = CounterMetricFamily(
            "meterstream_pipeline_processor_records",
            "Records the processor judged, by kind and result (from Redis stats).",
            labels=["kind", "result"],
        )
        rejected = CounterMetricFamily(
            "meterstream_pipeline_processor_rejected",
            "Records the processor rejected to meter-event-errors, by Stripe error code (from Redis stats).",
            labels=["code"],
        )
        for name, value in sorted(snap.processor.items()):
            head, _, tail = name.partition(":")
            if head == "rejected":
                rejected.add_metric([tail], value)
            elif tail:
                records.add_metric([head, tail], value)
        sink = CounterMetricFamily(
            "meterstream_pipeline_sink_records",
            "Sink counters by name and Stripe mode (from Redis stats).",
            labels=["counter", "mode"],
        )
        for name, value in sorted(snap.sink.items()):
            counter, _, mode = name.rpartition(":")
            sink.add_metric([counter or mode, mode if counter else ""], value)
        lag = GaugeMetricFamily(
            "meterstream_pipeline_consumer_lag",
            "Records not yet consumed by a group, per partition (best effort: high watermark - next offset).",
            labels=["group", "topic", "partition"],
        )
        for group, topic, partition, n in snap.lag:
            lag.add_metric([group, topic, str(partition)], n)
        yield records
        yield rejected
        yield sink
        yield lag


class GatewayMetrics:
    """The metric objects of one gateway, in their own registry.

    With ``multiprocess_dir`` (``meterstream gateway --workers N``: prometheus_client's multiprocess mode,
    switched on by ``PROMETHEUS_MULTIPROC_DIR`` in the workers' environment), every worker writes its
    values to files there and each ``/metrics`` answer adds up all workers, so a scrape through the shared
    port sees the whole gateway whichever worker answers.
    """

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "meterstream_gateway_requests",
            "HTTP requests answered, by route pattern, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "meterstream_gateway_request_seconds",
            "Time to answer an HTTP request, by route pattern.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "meterstream_gateway_errors",
            "Stripe-shaped errors answered, by code (or type when there is no code).",
            ["code"],
            registry=self.registry,
        )
        self.events = Counter(
            "meterstream_gateway_events",
            "Meter events and cancellations received, by endpoint and outcome.",
            ["endpoint", "result"],
            registry=self.registry,
        )
        self._pipeline = _PipelineCollector()
        self.registry.register(self._pipeline)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def count_events(self, endpoint: str, result: str, n: int = 1) -> None:
        if n:
            self.events.labels(endpoint, result).inc(n)

    def render(self, snapshot: PipelineSnapshot) -> bytes:
        """The Prometheus text exposition, with ``snapshot`` as the pipeline's numbers."""
        self._pipeline.snapshot = snapshot
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        registry.register(self._pipeline)
        return generate_latest(registry)


def int_fields(raw: Mapping[str, str]) -> dict[str, int]:
    """A stats hash with integer values (fields that are not integers are skipped)."""
    out: dict[str, int] = {}
    for name, value in raw.items():
        try:
            out[name] = int(value)
        except ValueError:
            continue
    return out
