"""A compacted ``meters`` topic (only each meter's latest record left): the live processor and ``rebuild``
judge the same events the same way, as if the meter's whole history were still on the topic."""

from __future__ import annotations

import json
import time

import pytest
import redis

from processor.config import Settings
from processor.meters.model import Meter
from tests.ops.helpers import cli, delete_keys, run_processor
from tests.pipeline import event_value, producer, put_meters, read_all, usage_snapshot

pytestmark = pytest.mark.integration


def test_live_and_rebuild_agree_on_a_compacted_meters_topic(settings: Settings, redis_client: redis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    created_ms, renamed_ms = now_ms - 3 * 3_600_000, now_ms - 3_600_000
    # What compaction leaves of "created at created_ms, renamed at renamed_ms": the rename alone.
    renamed = Meter(
        "mtr_cmp", "Compacted (renamed)", "cmp", "sum", created=created_ms // 1000, updated=renamed_ms // 1000
    )
    put_meters(settings, [renamed], effective_ms=renamed_ms)
    p = producer(settings)
    received = {
        "before-creation": (created_ms - 1_800_000, 1),  # no meter yet: no_meter
        "between": (created_ms + 1_800_000, 10),  # the meter existed (its creation record was compacted away)
        "after-rename": (renamed_ms + 600_000, 100),
    }
    for identifier, (at_ms, value) in received.items():
        body = event_value("cmp", "cus_1", value, identifier, at_ms // 1000)
        p.produce(settings.topic_prefix + "meter-events", key="cus_1", value=body, timestamp=at_ms)
    assert p.flush(30) == 0

    run_processor(settings)
    live = usage_snapshot(redis_client, settings.redis_prefix)
    day_totals = live[":usage:{mtr_cmp:cus_1}:day"]
    assert sum(int(v) for v in day_totals.values()) == 110
    errors = [json.loads(m.value()) for m in read_all(settings, ["meter-event-errors"], 3, idle=1.0)]
    assert [(e["code"], e["event"]["identifier"]) for e in errors] == [("no_meter", "before-creation")]

    assert delete_keys(redis_client, f"{settings.redis_prefix}:*") > 0
    start, end = (created_ms - 86_400_000) // 1000, now_ms // 1000 + 3600
    result = cli(settings, "rebuild", "--from", str(start), "--to", str(end), "--swap")
    assert result.exit_code == 0, result.output
    assert usage_snapshot(redis_client, settings.redis_prefix) == live
