"""``meterstream errors``: list and inspect the real error topic; replay `no_meter` rejections after the
meter is created, through the real processor, at most once."""

from __future__ import annotations

import json
import re
import time

import pytest
import redis

from processor.config import Settings
from processor.meters.model import Meter
from processor.windows import hour_start
from tests.ops.helpers import cli, run_processor
from tests.pipeline import event_value, producer, put_meters, usage_snapshot
from topics import Topic, topic_name

pytestmark = pytest.mark.integration

COLUMNS = ["received", "code", "record", "event_name", "customer", "replayed", "message"]


def error_table(output: str) -> list[dict[str, str]]:
    """The rows of `errors list`: a header, then one line per error (columns apart by two spaces or more;
    the message, last, may hold anything), up to the summary line."""
    lines = output.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == COLUMNS, lines[0]
    return [dict(zip(COLUMNS, re.split(r"\s{2,}", line, maxsplit=6), strict=True)) for line in lines[1:-1]]


KNOWN = Meter("mtr_known", "Known", "known_api", "sum", created=1)
LATER = Meter("mtr_later", "Later", "later_api", "sum", created=1)


def test_list_show_and_replay_after_the_meter_exists(settings: Settings, redis_client: redis.Redis, now: int) -> None:
    now_ms, this_hour = now * 1000, hour_start(now)
    put_meters(settings, [KNOWN], now_ms - 3_600_000)
    p = producer(settings)
    topic = topic_name(Topic.EVENTS, settings.topic_prefix)
    sent = [
        ("c1", event_value("known_api", "c1", 5, "k1", this_hour + 1)),
        ("c1", event_value("later_api", "c1", 7, "l1", this_hour + 2)),  # no meter yet
        ("c2", json.dumps({"event_name": "later_api", "payload": {"stripe_customer_id": "c2", "value": 11}}).encode()),
        ("c1", event_value("known_api", "c1", "1.5", "k2", this_hour + 3)),  # not a whole number
        ("c1", b"\x00garbage"),
    ]
    for key, value in sent:
        p.produce(topic, key=key, value=value, timestamp=now_ms - 60_000)
    assert p.flush(30) == 0
    run_processor(settings)

    listed = cli(settings, "errors", "list")
    assert listed.exit_code == 0, listed.output
    rows = error_table(listed.output)
    assert sorted((r["code"], r["event_name"], r["customer"], r["replayed"]) for r in rows) == [
        ("invalid_event", "-", "-", "-"),
        ("meter_event_invalid_value", "known_api", "c1", "-"),
        ("no_meter", "later_api", "c1", "-"),
        ("no_meter", "later_api", "c2", "-"),
    ]
    assert listed.output.splitlines()[-1] == (
        "4 rejected event(s): no_meter 2, invalid_event 1, meter_event_invalid_value 1"
    ) or listed.output.splitlines()[-1] == (
        "4 rejected event(s): no_meter 2, meter_event_invalid_value 1, invalid_event 1"
    )
    only = cli(settings, "errors", "list", "--code", "no_meter", "--json")
    records = [json.loads(line) for line in only.output.splitlines()]
    assert sorted(r["event"]["event_name"] for r in records) == ["later_api", "later_api"]
    by_meter = cli(settings, "errors", "list", "--meter", "known_api")
    assert by_meter.output.splitlines()[-1] == "1 rejected event(s): meter_event_invalid_value 1"
    future = cli(settings, "errors", "list", "--from", str(now + 3600))
    assert future.exit_code == 0 and future.output == "no rejected events match\n"
    assert cli(settings, "errors", "list", "--from", str(now + 3600), "--json").output == ""
    recent = cli(settings, "errors", "list", "--last", "1h", "--code", "no_meter")
    assert sorted(r["customer"] for r in error_table(recent.output)) == ["c1", "c2"]

    ref = f"meter-events/{records[0]['partition']}/{records[0]['offset']}"
    shown = cli(settings, "errors", "show", ref)
    assert shown.exit_code == 0 and json.loads(shown.output)["code"] == "no_meter"
    missing = cli(settings, "errors", "show", "meter-events/0/999999")
    assert missing.exit_code == 1 and "no error record" in missing.output

    early = cli(settings, "errors", "replay", "--code", "no_meter", "--dry-run")
    assert "will replay 0:" in early.output and "would be rejected again: no_meter" in early.output

    put_meters(settings, [LATER], int(time.time() * 1000))  # the cause is fixed
    plan = cli(settings, "errors", "replay", "--dry-run")
    assert "will replay 2:" in plan.output
    assert "would be rejected again: meter_event_invalid_value" in plan.output
    assert "not a readable meter event" in plan.output
    done = cli(settings, "errors", "replay", "--code", "no_meter")
    assert done.exit_code == 0 and "replayed 2 record(s)" in done.output, done.output
    run_processor(settings)
    snap = usage_snapshot(redis_client, settings.redis_prefix)
    assert snap[":usage:{mtr_later:c1}:hour"] == {str(this_hour): "7"}
    # the one without identifier or timestamp counts at its original received time
    received = (now_ms - 60_000) // 1000
    assert snap[":usage:{mtr_later:c2}:hour"] == {str(received - received % 3600): "11"}

    relisted = error_table(cli(settings, "errors", "list", "--code", "no_meter").output)
    assert [r["replayed"] for r in relisted] == ["replayed", "replayed"]
    as_json = cli(settings, "errors", "list", "--code", "no_meter", "--json").output.splitlines()
    assert sorted((j["customer"], j["replayed"]) for j in map(json.loads, as_json)) == [
        ("c1", "replayed"),
        ("c2", "replayed"),
    ]
    assert "2 of those shown already replayed" in cli(settings, "errors", "list").output

    again = cli(settings, "errors", "replay", "--code", "no_meter")
    assert "will replay 0:" in again.output and "already replayed" in again.output
    run_processor(settings)
    assert usage_snapshot(redis_client, settings.redis_prefix) == snap
