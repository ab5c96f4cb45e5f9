"""The sink's counters, kept in process and shipped to Redis as deltas for the dashboard.

Counters (each per Stripe mode, field ``<counter>:<mode>`` of the Redis hash ``Keys.stats("sink")``):

- ``delivered``      records Stripe accepted (events and cancellations), including ``duplicates_ok``;
- ``duplicates_ok``  records Stripe answered "already exists" for (a resend after a crash): delivered;
- ``dead_lettered``  records Stripe rejected for good, now on ``meter-events-stripe-dlq``;
- ``retried``        request attempts that failed transiently and were retried (429, 5xx, network);
- ``requests``       HTTP requests sent to Stripe (events, cancellations, sessions, meters);
- ``sessions``       v2 meter-event sessions created.

Several sink processes add into the same hash (HINCRBY of deltas), so the dashboard sees the group's
totals. Pure except for :meth:`SinkMetrics.flush`, which takes the Redis client.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily

__all__ = ["COUNTERS", "SinkMetrics", "start_sink_metrics_server"]

COUNTERS: tuple[str, ...] = ("delivered", "duplicates_ok", "dead_lettered", "retried", "requests", "sessions")


class SinkMetrics:
    """Counters by name for one mode; :meth:`take_deltas` hands out what was not shipped yet."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.totals: Counter[str] = Counter()
        self._unshipped: Counter[str] = Counter()

    def incr(self, name: str, amount: int = 1) -> None:
        if name not in COUNTERS:
            raise KeyError(f"unknown sink counter {name!r}")
        if amount:
            self.totals[name] += amount
            self._unshipped[name] += amount

    def snapshot(self) -> dict[str, int]:
        """Every counter (zeros included), for logs, the benchmark and tests."""
        return {name: self.totals[name] for name in COUNTERS}

    def take_deltas(self) -> dict[str, int]:
        """Hash fields → increments not shipped yet (cleared: call again only after shipping failed
        with :meth:`restore`)."""
        deltas = {f"{name}:{self.mode}": n for name, n in self._unshipped.items() if n}
        self._unshipped.clear()
        return deltas

    def restore(self, deltas: dict[str, int]) -> None:
        """Put back deltas whose shipping failed, so they go with the next flush."""
        for field_name, n in deltas.items():
            self._unshipped[field_name.rsplit(":", 1)[0]] += n

    async def flush(self, redis: Any, key: str) -> None:
        """HINCRBY the unshipped deltas into ``key`` (one pipeline). On error they are kept for later."""
        deltas = self.take_deltas()
        if not deltas:
            return
        try:
            pipe = redis.pipeline(transaction=False)
            for field_name, n in deltas.items():
                pipe.hincrby(key, field_name, n)
            await pipe.execute()
        except Exception:
            self.restore(deltas)
            raise


class _SinkCollector:
    """Exposes one process's :class:`SinkMetrics` totals as Prometheus counters at scrape time (no copy
    to keep in step), so ``meterstream sink --metrics-port`` adds a per-instance view to the group totals
    the dashboard reads from Redis."""

    def __init__(self, metrics: SinkMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name in COUNTERS:
            family = CounterMetricFamily(
                f"meterstream_sink_{name}", f"Sink counter {name!r} of this process.", labels=["mode"]
            )
            family.add_metric([self._metrics.mode], self._metrics.totals[name])
            yield family


def start_sink_metrics_server(metrics: SinkMetrics, port: int, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` of this sink process on ``port`` (Kubernetes and compose probe it)."""
    from processor.metrics import start_metrics_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SinkCollector(metrics))
    start_metrics_server(port, addr, registry)
