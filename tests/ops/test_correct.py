"""``meterstream correct``: a compensating event through the real pipeline, exactly once; refused where a
compensating event cannot express a correction."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from processor.config import Settings
from processor.errors import InvalidRequestError
from processor.meters.model import Meter
from processor.ops.correct import plan_correction
from processor.windows import hour_start
from tests.ops.helpers import cli, run_processor
from tests.ops.test_reconcile import mirror
from tests.pipeline import event_value, producer, put_meters, usage_snapshot
from topics import Topic, topic_name

SUM = Meter("mtr_fix", "Fix", "fix_api", "sum", created=1)
COUNT = Meter("mtr_fixc", "Count", "fix_cnt", "count", created=1)
LAST = Meter("mtr_fixl", "Last", "fix_last", "last", created=1)
PRE = Meter("mtr_fixp", "Pre", "fix_pre", "sum", "day", created=1)


def test_where_corrections_cannot_apply(now: int) -> None:
    with pytest.raises(InvalidRequestError, match="count meter"):
        plan_correction(COUNT, "c", -1, None, "t")
    with pytest.raises(InvalidRequestError, match="replace it, not subtract"):
        plan_correction(LAST, "c", -1, None, "t")
    with pytest.raises(InvalidRequestError, match="pre-aggregated by day"):
        plan_correction(PRE, "c", -1, None, "t")
    with pytest.raises(InvalidRequestError, match="35 days"):
        plan_correction(SUM, "c", -1, now - 36 * 86_400, "t", now=now)
    with pytest.raises(InvalidRequestError, match="reference"):
        plan_correction(SUM, "c", -1, None, " ")
    with pytest.raises(InvalidRequestError, match="0 changes nothing"):
        plan_correction(SUM, "c", 0, None, "t")
    a = plan_correction(SUM, "c", -5, now, "INC-1", now=now)
    assert a.identifier == plan_correction(SUM, "c", -5, now, "INC-1", now=now).identifier
    assert a.identifier != plan_correction(SUM, "c", -5, now, "INC-2", now=now).identifier
    assert len(a.identifier) <= 100


def test_correction_flows_through_the_pipeline_once(
    settings: Settings, redis_client: redis.Redis, read_topic: Callable[..., list[Any]], now: int
) -> None:
    this_hour = hour_start(now)
    put_meters(settings, [SUM, COUNT], now * 1000 - 60_000)
    for m in (SUM, COUNT):
        mirror(redis_client, settings, m)
    p = producer(settings)
    for i, v in enumerate((60, 40)):
        p.produce(
            topic_name(Topic.EVENTS, settings.topic_prefix),
            key="c1",
            value=event_value("fix_api", "c1", v, f"e{i}", this_hour + 5),
        )
    assert p.flush(30) == 0
    run_processor(settings)
    hour = f":usage:{{{SUM.id}:c1}}:hour"
    assert usage_snapshot(redis_client, settings.redis_prefix)[hour] == {str(this_hour): "100"}

    args = (
        "correct",
        "--meter",
        "fix_api",
        "--customer",
        "c1",
        "--value",
        "-30",
        "--reference",
        "INC-7",
        "--timestamp",
        str(this_hour + 10),
    )
    dry = cli(settings, *args, "--dry-run")
    assert dry.exit_code == 0 and "-30 to mtr_fix" in dry.output and "sent to" not in dry.output
    sent = cli(settings, *args)
    assert sent.exit_code == 0 and "sent to" in sent.output, sent.output
    assert "already sent" in cli(settings, *args).output
    # even with its record gone, the identifier makes the processor drop a repeat (within 24 h)
    for key in redis_client.scan_iter(match=f"{settings.redis_prefix}:ops:corrections:*"):
        redis_client.delete(key)
    assert "sent to" in cli(settings, *args).output
    run_processor(settings)
    assert usage_snapshot(redis_client, settings.redis_prefix)[hour] == {str(this_hour): "70"}
    accepted = [json.loads(m.value()) for m in read_topic(settings, Topic.ACCEPTED, expect=3)]
    fixes = [a for a in accepted if a["identifier"].startswith("corr_")]
    assert len(fixes) == 1 and fixes[0]["payload"]["value"] == "-30"  # the sink forwards it to Stripe

    refused = cli(settings, "correct", "--meter", COUNT.id, "--customer", "c1", "--value", "-1", "--reference", "x")
    assert refused.exit_code == 1 and "count meter" in refused.output
