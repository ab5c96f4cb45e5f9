"""A compacted ``meters`` topic (only each meter's latest record left) is judged exactly as the full history.

Two deployments get the same events: one whose ``meters`` topic holds every meter record (the history as it
happened, what a live processor reading along saw) and one holding only each meter's latest record (what
log compaction leaves). On the compacted one, the live processor started with lag, ``meterstream rebuild``
and a replay (the processor re-deriving everything from the beginning, as after losing Redis) must all
reach the aggregates and the rejections the full history gives, and ``errors replay`` must decide about the
rejections as it does on the full topic.

The meter that makes this fail without the status history in the record: created at T0, deactivated at
T1, reactivated at T2. Compaction leaves only the T2 record, which on its own says "active, created T0";
a reader that infers the past from it (the creation repair alone, before ``status_history``) accepts the
events received between T1 and T2 that the live run rejected as ``archived_meter`` — a different bill.
The record therefore carries ``status_history`` (docs/topics.md), and every reader builds its history
through :class:`processor.meters.log.MetersLog`. A second meter uses the old record format (no
``status_history``): its creation record compacted away, it is taken as active from ``created``, by
every reader alike (backward compatibility).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from processor.config import Settings
from processor.meters.model import Meter
from tests.ops.helpers import cli, delete_keys, run_processor
from tests.pipeline import event_value, producer, read_all, usage_snapshot
from topics import Topic, topic_name

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


def _record(meter: Meter, history: list[tuple[int, str]] | None) -> bytes:
    """The meter's topic record, spelled out here (not with the model's writer) so the test states the
    format: Stripe's ``billing.meter`` plus, for meters written since the format gained it, the whole
    status history in milliseconds."""
    body: dict[str, Any] = meter.to_dict()
    if history is not None:
        body["status_history"] = [{"status": status, "since_ms": at_ms} for at_ms, status in history]
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def _versions(t0: int, t1: int, t2: int) -> list[tuple[int, str, bytes]]:
    """Every meter record as written, in order: (effective ms, meter id, value)."""
    hist = Meter("mtr_hist", "History", "hist", "sum", created=t0 // 1000, updated=t0 // 1000)
    off = hist.deactivated(t1 // 1000)
    back = off.reactivated(t2 // 1000)
    legacy = Meter("mtr_legacy", "Legacy", "legacy", "sum", created=t0 // 1000, updated=t0 // 1000)
    return [
        (t0, hist.id, _record(hist, [(t0, "active")])),
        (t0, legacy.id, _record(legacy, None)),
        (t1, off.id, _record(off, [(t0, "active"), (t1, "inactive")])),
        (t2, back.id, _record(back, [(t0, "active"), (t1, "inactive"), (t2, "active")])),
        (t2, legacy.id, _record(legacy.renamed("Legacy (renamed)", t2 // 1000), None)),
    ]


def _put(settings: Settings, meters: list[tuple[int, str, bytes]], events: list[tuple[str, bytes, int]]) -> None:
    p = producer(settings)
    for effective_ms, meter_id, value in meters:
        p.produce(topic_name(Topic.METERS, settings.topic_prefix), key=meter_id, value=value, timestamp=effective_ms)
    for customer, body, received_ms in events:
        p.produce(topic_name(Topic.EVENTS, settings.topic_prefix), key=customer, value=body, timestamp=received_ms)
    assert p.flush(30) == 0


def _errors(settings: Settings) -> Counter[tuple[str, str]]:
    return Counter(
        (e["code"], e["event"]["identifier"])
        for e in (json.loads(m.value()) for m in read_all(settings, [Topic.ERRORS], 3, idle=1.0))
    )


def test_a_compacted_meters_topic_is_judged_like_the_full_history(
    settings_factory: Callable[..., Settings], unique: str, redis_client: redis.Redis
) -> None:
    full = settings_factory()
    compacted = settings_factory(
        METERSTREAM_TOPIC_PREFIX=f"t{unique}c.",
        METERSTREAM_REDIS_PREFIX=f"ms{unique}c",
        METERSTREAM_PROCESSOR_GROUP=f"proc-{unique}c",
    )
    now_ms = int(time.time() * 1000)
    t0, t1, t2 = now_ms - 5 * HOUR_MS, now_ms - 3 * HOUR_MS, now_ms - HOUR_MS
    versions = _versions(t0, t1, t2)
    latest = {meter_id: (ms, meter_id, value) for ms, meter_id, value in versions}
    events = []
    for name in ("hist", "legacy"):
        for label, at_ms, value in (
            ("before", t0 - HOUR_MS, 1),
            ("created", t0 + HOUR_MS, 10),
            ("paused", t1 + HOUR_MS, 100),  # mtr_hist is inactive here: archived_meter
            ("back", t2 + HOUR_MS // 2, 1000),
        ):
            events.append(("cus_1", event_value(name, "cus_1", value, f"{name}-{label}", at_ms // 1000), at_ms))
    _put(full, versions, events)
    _put(compacted, list(latest.values()), events)

    # The truth: the full history, judged by a processor that saw every meter record.
    run_processor(full)
    truth = usage_snapshot(redis_client, full.redis_prefix)
    truth_errors = _errors(full)
    hist_day = truth[":usage:{mtr_hist:cus_1}:day"]
    assert sum(int(v) for v in hist_day.values()) == 1010
    legacy_day = truth[":usage:{mtr_legacy:cus_1}:day"]
    assert sum(int(v) for v in legacy_day.values()) == 1110
    assert truth_errors == Counter(
        {("no_meter", "hist-before"): 1, ("no_meter", "legacy-before"): 1, ("archived_meter", "hist-paused"): 1}
    )

    # Live: a processor started after compaction, every event still to process (lag).
    run_processor(compacted)
    assert usage_snapshot(redis_client, compacted.redis_prefix) == truth
    assert _errors(compacted) == truth_errors
    # `errors replay` reads the meters with the same reader and decides alike on both topics.
    plans = [sorted(cli(s, "errors", "replay", "--dry-run", "--list").output.splitlines()) for s in (full, compacted)]
    assert plans[0] == plans[1] and any("will replay" in line for line in plans[0]), plans

    # rebuild: the ops reader re-derives the range from the topics.
    assert delete_keys(redis_client, f"{compacted.redis_prefix}:*") > 0
    start, end = (t0 - 86_400_000) // 1000, now_ms // 1000 + 3600
    result = cli(compacted, "rebuild", "--from", str(start), "--to", str(end), "--swap")
    assert result.exit_code == 0, result.output
    assert usage_snapshot(redis_client, compacted.redis_prefix) == truth

    # Replay: Redis lost, a new processor group re-derives everything from the beginning of the topics.
    assert delete_keys(redis_client, f"{compacted.redis_prefix}:*") > 0
    replay = settings_factory(
        ensure=False,
        METERSTREAM_TOPIC_PREFIX=f"t{unique}c.",
        METERSTREAM_REDIS_PREFIX=f"ms{unique}c",
        METERSTREAM_PROCESSOR_GROUP=f"proc-{unique}r",
    )
    run_processor(replay)
    assert usage_snapshot(redis_client, compacted.redis_prefix) == truth
    assert _errors(compacted) == truth_errors + truth_errors  # the live run's and the replay's
