"""The processor against the real broker and Redis: exact aggregates, outputs, restarts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from processor.aggregator.runner import Processor
from processor.config import Settings
from processor.meters.model import Meter
from processor.windows import day_start, hour_start
from tests.pipeline import (
    cancel_value,
    event_value,
    make_workload,
    put_meters,
    put_records,
    put_workload,
    reference_state,
    usage_snapshot,
)
from topics import Topic

pytestmark = pytest.mark.integration


@pytest.fixture
def run_processor(settings: Settings) -> Iterator[Callable[..., Processor]]:
    procs: list[Processor] = []

    def run(s: Settings | None = None) -> Processor:
        proc = Processor(s or settings)
        procs.append(proc)
        try:
            proc.drain(idle=1.5, timeout=120)
        finally:
            proc.close()  # leave the group now, so the next instance is assigned at once
        return proc

    yield run
    for p in procs:
        p.close()


METERS = [
    Meter("mtr_sum", "S", "api", "sum", created=1),
    Meter("mtr_cnt", "C", "cnt", "count", created=1),
    Meter("mtr_last", "L", "gauge", "last", created=1),
    Meter("mtr_preh", "P", "preh", "sum", "hour", created=1),
    Meter("mtr_pred", "PD", "pred", "count", "day", created=1),
]


def test_every_formula_and_mode(
    settings: Settings,
    run_processor: Callable[..., Processor],
    redis_client: redis.Redis,
    read_topic: Callable[..., list],
    now: int,
) -> None:
    now_ms, h, d = now * 1000, hour_start(now), day_start(now)
    put_meters(settings, METERS, now_ms - 3_600_000)
    big = 10**20
    put_records(
        settings,
        [
            ("c1", event_value("api", "c1", 5, "a1", h + 1), now_ms),
            ("c1", event_value("api", "c1", "7", "a2", h + 2), now_ms),
            ("c1", event_value("api", "c1", 9, "a1", h + 3), now_ms + 1),  # duplicate of a1
            ("c1", event_value("api", "c1", "-3", "a3", h - 3600), now_ms),  # previous hour, negative
            ("c1", event_value("api", "c1", "1.5", "a4"), now_ms),  # invalid value
            ("c2", event_value("cnt", "c2", "not read", "k1", h), now_ms),
            ("c2", event_value("cnt", "c2", None, "k2", h), now_ms),
            ("c1", event_value("gauge", "c1", 3, "g1", h + 50), now_ms),
            ("c1", event_value("gauge", "c1", big, "g2", h + 60), now_ms),
            ("c1", event_value("gauge", "c1", 4, "g3", h + 40), now_ms + 5),  # earlier timestamp: not last
            ("c1", event_value("preh", "c1", 100, "p1", h + 10), now_ms),
            ("c1", event_value("preh", "c1", 50, "p2", h + 5), now_ms + 1),  # received later: wins
            ("c1", event_value("pred", "c1", 1, "d1", d + 10), now_ms),
            ("c1", event_value("pred", "c1", 1, "d2", d + 20), now_ms + 1),
            ("c1", b"{not json", now_ms),
        ],
        [
            ("p2", cancel_value("preh", "p2"), now_ms + 10),  # survivor cancelled → p1 comes back
            ("a2", cancel_value("api", "a2"), now_ms + 10),
            ("g2", cancel_value("gauge", "g2"), now_ms + 10),  # last falls back to g1 (latest remaining ts)
            ("zz", cancel_value("api", "never-sent"), now_ms + 10),
        ],
    )
    run_processor()
    snap = usage_snapshot(redis_client, settings.redis_prefix)
    assert snap[":usage:{mtr_sum:c1}:hour"] == {str(h): "5", str(h - 3600): "-3"}
    assert snap[":usage:{mtr_cnt:c2}:hour"] == {str(h): "2"}
    assert snap[":usage:{mtr_last:c1}:hour"] == {str(h): "3"}
    assert snap[":usage:{mtr_preh:c1}:hour"] == {str(h): "100"}
    assert snap[":usage:{mtr_pred:c1}:day"] == {str(d): "1"}
    assert snap[":customers:{mtr_sum}"] == {"c1": str(h + 2)}  # a2 was accepted, then cancelled

    accepted = [json.loads(m.value()) for m in read_topic(settings, Topic.ACCEPTED, expect=15)]
    kinds = [(a["kind"], a["identifier"]) for a in accepted]
    assert ("event", "a1") in kinds and kinds.count(("event", "a1")) == 1
    for ident in ("p2", "a2", "g2"):
        assert kinds.index(("cancel", ident)) > kinds.index(("event", ident))
    assert len(accepted) == 15
    assert ("cancel", "never-sent") not in kinds
    from processor.metrics import REGISTRY

    assert (
        REGISTRY.get_sample_value("meterstream_processor_records_total", {"kind": "event", "result": "dup"}) or 0
    ) >= 1
    assert (REGISTRY.get_sample_value("meterstream_processor_rejected_total", {"code": "invalid_event"}) or 0) >= 1
    errors = [json.loads(m.value()) for m in read_topic(settings, Topic.ERRORS, expect=2)]
    assert sorted(e["code"] for e in errors) == ["invalid_event", "meter_event_invalid_value"]
    assert all({"code", "message", "event", "topic", "partition", "offset"} <= e.keys() for e in errors)


def test_cancellation_before_its_event(
    settings: Settings,
    run_processor: Callable[..., Processor],
    redis_client: redis.Redis,
    read_topic: Callable[..., list],
    now: int,
) -> None:
    now_ms, h = now * 1000, hour_start(now)
    put_meters(settings, METERS, now_ms - 3_600_000)
    put_records(settings, [], [("x1", cancel_value("api", "x1"), now_ms)])
    run_processor()
    put_records(
        settings,
        [
            ("c9", event_value("api", "c9", 11, "x1", h), now_ms + 3_600_000),
            ("c9", event_value("api", "c9", 13, "x2", h), now_ms + 3_600_000),
        ],
    )
    run_processor()
    assert usage_snapshot(redis_client, settings.redis_prefix)[":usage:{mtr_sum:c9}:hour"] == {str(h): "13"}
    accepted = [json.loads(m.value()) for m in read_topic(settings, Topic.ACCEPTED, expect=3)]
    assert [(a["kind"], a["identifier"]) for a in accepted] == [("event", "x1"), ("cancel", "x1"), ("event", "x2")]


def test_meter_created_while_running(settings: Settings, redis_client: redis.Redis) -> None:
    proc = Processor(settings)
    try:
        proc.drain(idle=1.0)
        put_records(settings, [("c1", event_value("api", "c1", 1, "before"), int(time.time() * 1000))])
        proc.drain(idle=1.0)
        put_meters(settings, METERS[:1], int(time.time() * 1000))
        put_records(settings, [("c1", event_value("api", "c1", 2, "after"), int(time.time() * 1000) + 1000)])
        proc.drain(idle=1.0)
    finally:
        proc.close()
    assert proc.stats["rejected:no_meter"] == 1
    values = list(usage_snapshot(redis_client, settings.redis_prefix)[":usage:{mtr_sum:c1}:day"].values())
    assert values == ["2"]


def test_restart_resumes_exactly(
    settings: Settings, settings_factory: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    w = make_workload(4000, seed=3)
    half = len(w.events) // 2
    first = type(w)(w.meters, w.events[:half], [c for c in w.cancels if c[2] <= w.events[half][2]])
    put_workload(settings, first, partitions=3)
    p1 = Processor(settings)
    p1.drain(idle=1.0)
    p1.close()
    rest = type(w)([], w.events[half:], [c for c in w.cancels if c[2] > w.events[half][2]])
    put_records(settings, rest.events, rest.cancels)
    p2 = Processor(settings)
    p2.drain(idle=1.0)
    p2.close()
    assert p2.stats["records"] == len(rest.events) + len(rest.cancels)  # nothing read twice after a clean stop

    ref = settings.redis_prefix + "ref"
    reference_state(settings, ref, partitions=3)
    assert usage_snapshot(redis_client, settings.redis_prefix) == usage_snapshot(redis_client, ref)


def test_replaying_a_batch_changes_nothing(settings: Settings, redis_client: redis.Redis) -> None:
    """Forget the stored progress (as if the processor crashed right after applying): the replay is a no-op."""
    put_workload(settings, make_workload(3000, seed=5), partitions=3)
    p1 = Processor(settings)
    p1.drain(idle=1.0)
    p1.close()
    before = usage_snapshot(redis_client, settings.redis_prefix)
    redis_client.delete(f"{settings.redis_prefix}:progress:{{{settings.processor_group}}}")
    p2 = Processor(settings)
    p2.drain(idle=1.0)
    p2.close()
    assert p2.stats["records"] > 0  # it really re-read everything
    assert usage_snapshot(redis_client, settings.redis_prefix) == before


def test_redis_lost_is_re_derived_without_re_emitting(settings: Settings, redis_client: redis.Redis) -> None:
    """Redis loses everything; the processor re-derives the aggregates from the topics exactly, and does not
    put already-forwarded records on the accepted topic again (the sink would re-send them to Stripe)."""
    from tests.pipeline import read_all

    put_workload(settings, make_workload(3000, seed=8), partitions=3)
    p1 = Processor(settings)
    p1.drain(idle=1.0)
    p1.close()
    before = usage_snapshot(redis_client, settings.redis_prefix)
    accepted_before = len(read_all(settings, [Topic.ACCEPTED], 3, idle=1.5))
    for key in list(redis_client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000)):
        redis_client.delete(key)
    p2 = Processor(settings)
    p2.drain(idle=1.0)
    p2.close()
    assert p2.stats["records"] > 0
    assert usage_snapshot(redis_client, settings.redis_prefix) == before
    assert len(read_all(settings, [Topic.ACCEPTED], 3, idle=1.5)) == accepted_before
