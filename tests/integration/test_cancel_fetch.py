"""Cancellations that must read their event back from Kafka (claims hold only received time + position).

A claim no longer holds an event's customer, timestamp and value (docs/redis-keys.md, claim buckets): when a
cancellation resolves to an event the engine has not judged in this process, the engine reads the event's
record at its position and validates it again. These tests force that path — the events drained by one
processor, the cancellations by a new one (a restart: empty cache), and the engine's recent-events cache
switched off — and compare Redis, the accepted topic and the error topic with the reference model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.aggregator import engine as engine_module
from processor.aggregator.runner import Processor
from processor.config import Settings
from tests.integration.test_processor_properties import PARTITIONS, _produce, _topic_diffs, example_settings
from tests.model.builders import Log, meter_version
from tests.model.reference import ADJUSTMENTS, DAY_MS, EVENTS, compare, run_model
from tests.model.strategies import Scenario, scenarios

pytestmark = pytest.mark.integration


def _run_in_phases(
    settings_factory: Callable[..., Settings], redis_client: redis.Redis, scenario: Scenario
) -> tuple[list[str], int]:
    """Events first (one processor), then cancellations (a new processor); returns (differences from the
    model, how many events the processors read back from Kafka)."""
    s = example_settings(settings_factory, scenario.partitions)
    model = run_model(scenario.meters, scenario.records)
    phases = [
        [r for r in scenario.records if r.topic == EVENTS],
        [r for r in scenario.records if r.topic == ADJUSTMENTS],
    ]
    fetched = 0
    for i, phase in enumerate(phases):
        _produce(s, replace(scenario, meters=scenario.meters if i == 0 else [], records=phase))
        proc = Processor(s)
        try:
            proc.drain(idle=2.0, timeout=120)
            assert proc._engine is not None
            fetched += proc._engine.fetched
        finally:
            proc.close()
    return compare(model, redis_client, s.redis_prefix) + _topic_diffs(s, model), fetched


def test_cancellations_after_a_restart_read_their_events_back(
    settings_factory: Callable[..., Settings],
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    base_ms: int,
) -> None:
    """Three meters (raw sum, hour window, raw last); every event cancelled by a processor that never saw
    it, one of them twice (the second is a no-op), one cancellation of an identifier never used."""
    monkeypatch.setattr(engine_module, "RECENT_EVENTS", 0)
    r0 = base_ms + DAY_MS
    kinds = {"s": (None, "sum"), "h": ("hour", "sum"), "l": (None, "last")}
    meters = [
        meter_version(base_ms, meter_id=f"mtr_{k}", event_name=f"api_{k}", window=w, formula=f)
        for k, (w, f) in kinds.items()
    ]
    log = Log()
    cancelled = set()
    for k in kinds:
        cancelled.add(log.event(r0, f"api_{k}", identifier=f"a{k}", value=5, timestamp=r0 // 1000 + 10, partition=1))
        log.event(r0 + 1, f"api_{k}", identifier=f"b{k}", value=7, timestamp=r0 // 1000 + 20, partition=2)
        log.cancel(r0 + 3_600_000, f"a{k}", f"api_{k}", partition=0)
    log.cancel(r0 + 3_600_001, "as", "api_s", partition=1)
    log.cancel(r0 + 3_600_002, "never", "api_s", partition=1)
    scenario = Scenario(meters, log.records, PARTITIONS, base_ms)
    model = run_model(meters, log.records)
    assert model.cancelled == cancelled
    diffs, fetched = _run_in_phases(settings_factory, redis_client, scenario)
    assert not diffs, "\n".join(diffs)
    assert fetched == len(cancelled)  # each cancelled event read back once (the no-op reads nothing)


@settings(
    max_examples=6,  # each example is two real processor runs
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), cache=st.booleans())
def test_cancellations_reading_events_back_match_the_model(
    settings_factory: Callable[..., Settings],
    redis_client: redis.Redis,
    base_ms: int,
    data: st.DataObject,
    cache: bool,
) -> None:
    """Any scenario (relative to the test's own time), events drained before cancellations by another
    processor, with or without the engine's recent-events cache: the result is the model's."""
    shape = scenarios(base_ms=base_ms, partitions=PARTITIONS, max_events=25, max_cancels=10, allow_big=False)
    scenario = data.draw(shape, label="scenario")
    with pytest.MonkeyPatch.context() as mp:
        if not cache:
            mp.setattr(engine_module, "RECENT_EVENTS", 0)
        diffs, _ = _run_in_phases(settings_factory, redis_client, scenario)
    assert not diffs, "\n".join(diffs)
