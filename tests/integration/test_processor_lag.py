"""``meterstream_processor_lag_records``: each assigned partition's lag, from librdkafka's statistics,
against the real broker: positive while a backlog is being worked off, zero once it is gone."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from processor import metrics
from processor.aggregator.runner import LAG_INTERVAL_MS, Processor, partition_lags
from processor.config import Settings
from tests.pipeline import make_workload, put_workload


def _lags() -> dict[tuple[str, str], float]:
    return {
        (s.labels["topic"], s.labels["partition"]): s.value for family in metrics.LAG.collect() for s in family.samples
    }


def _lag_seconds() -> dict[tuple[str, str], float]:
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for family in metrics.LAG_SECONDS.collect()
        for s in family.samples
        if s.name == "meterstream_processor_lag_seconds"
    }


def test_partition_lags_reads_only_assigned_known_lags() -> None:
    stats = {
        "topics": {
            "p-meter-events": {
                "partitions": {
                    "0": {"consumer_lag": 7},
                    "1": {"consumer_lag": -1},  # no committed offset yet: unknown, left out
                    "2": {"consumer_lag": 3},  # not ours
                    "-1": {"consumer_lag": -1},  # librdkafka's internal unassigned partition
                }
            }
        }
    }
    assigned = {("p-meter-events", 0), ("p-meter-events", 1)}
    assert partition_lags(json.dumps(stats), assigned) == [(("p-meter-events", 0), 7)]
    assert partition_lags("not json", assigned) == []


def test_lag_is_reported_while_a_backlog_drains_and_is_zero_after(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(METERSTREAM_PROCESSOR_BATCH="50")
    put_workload(settings, make_workload(20_000, seed=11), partitions=3)
    metrics.LAG.clear()
    metrics.LAG_SECONDS.clear()
    proc = Processor(settings)
    try:
        seen_backlog = False
        deadline = time.monotonic() + 120
        while not seen_backlog and time.monotonic() < deadline:
            proc.poll_batch(0.5)
            seen_backlog = any(v > 0 for (topic, _), v in _lags().items() if topic == "meter-events")
        assert seen_backlog, "no positive lag was ever reported for meter-events"
        # behind in time as well: the records waiting are newer than the newest one processed
        assert any(v > 0 for (topic, _), v in _lag_seconds().items() if topic == "meter-events"), _lag_seconds()
        proc.drain(idle=1.5, timeout=180)
        # One more statistics interval after the last commit, then every partition with data reads 0.
        until = time.monotonic() + 3 * LAG_INTERVAL_MS / 1000
        while time.monotonic() < until:
            proc.poll_batch(0.2)
        lags = {k: v for k, v in _lags().items() if k[0] == "meter-events"}
        assert lags and all(v == 0 for v in lags.values()), lags
        seconds = {k: v for k, v in _lag_seconds().items() if k[0] == "meter-events"}
        assert seconds.keys() == lags.keys() and all(v == 0 for v in seconds.values()), seconds
    finally:
        proc.close()
