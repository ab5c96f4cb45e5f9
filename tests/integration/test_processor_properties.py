"""The real processor against the reference model (tests/model), on hypothesis scenarios.

Each example gets fresh topics, a fresh Redis prefix and a fresh consumer group; its meters are produced to
the ``meters`` topic with their effective time as the record timestamp, its records to ``meter-events`` /
``meter-event-adjustments`` with explicit partitions and timestamps (the model's received times), then the
processor drains everything and Redis, the accepted topic and the error topic are compared with the model.
Received times sit in the last few days (whole days before today), so nothing is older than a topic's
retention and every time rule is exercised exactly as in the model.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.aggregator.runner import Processor
from processor.config import Settings
from processor.kafka import AckedProducer, new_consumer
from tests.model.builders import Log, meter_version
from tests.model.reference import ADJUSTMENTS, DAY_MS, EVENTS, ModelResult, Rec, compare, run_model
from tests.model.strategies import Scenario, phase_splits, scenarios
from topics import Topic, topic_name

pytestmark = pytest.mark.integration

PARTITIONS = 3
DEFAULT_MAX_RECORD = 999_964  # key + value bytes a default-configured librdkafka producer accepts


def _key(rec_topic: str, value: bytes) -> str | None:
    """The Kafka key a real producer would use: the customer for events, the identifier for cancellations."""
    try:
        obj = json.loads(value)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    if rec_topic == ADJUSTMENTS:
        cancel = obj.get("cancel")
        ident = cancel.get("identifier") if isinstance(cancel, dict) else None
        return ident if isinstance(ident, str) else None
    payload = obj.get("payload")
    if isinstance(payload, dict):
        for name in ("stripe_customer_id", "tenant"):
            if isinstance(payload.get(name), str | int) and not isinstance(payload.get(name), bool):
                return str(payload[name])
    return None


def _produce(s: Settings, scenario: Scenario) -> None:
    """Meters first (one partition, topic order = effective order), then every record in offset order; the
    broker-assigned offsets must be the model's offsets."""
    producer = AckedProducer(s, config={"linger.ms": 20})
    delivered: list[tuple[str, int, int]] = []
    failures: list[str] = []

    def report(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures.append(str(err))
        else:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None
            delivered.append((topic[len(s.topic_prefix) :], partition, offset))

    for version in scenario.meters:
        m = version.meter
        producer.produce(
            topic_name(Topic.METERS, s.topic_prefix),
            key=m["id"],
            value=json.dumps(m).encode(),
            partition=0,
            timestamp=version.effective_ms,
            on_delivery=report,
        )
    for rec in sorted(scenario.records, key=lambda r: r.key):
        producer.produce(
            topic_name(rec.topic, s.topic_prefix),
            key=_key(rec.topic, rec.value),
            value=rec.value,
            partition=rec.partition,
            timestamp=rec.received_ms,
            on_delivery=report,
        )
    assert producer.flush(60) == 0, "records still queued after 60 s"
    assert not failures, failures
    produced = sorted(d for d in delivered if d[0] != Topic.METERS)
    assert produced == sorted(r.key for r in scenario.records), "broker offsets differ from the model's"


def _read(s: Settings, base: str, expect: int, *, idle: float = 0.3, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every record of a topic, by partition assignment (no group join: seconds faster per read), until at
    least ``expect`` arrived and nothing more for ``idle`` seconds (or 5 s of silence, or ``timeout``)."""
    name = topic_name(base, s.topic_prefix)
    consumer = new_consumer(s, f"read-{uuid.uuid4().hex[:8]}")
    try:
        parts = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in parts])
        out: list[dict[str, Any]] = []
        start = last = time.monotonic()
        while time.monotonic() - start < timeout:
            for msg in consumer.consume(500, 0.2):
                if msg.error() is None:
                    out.append(json.loads(msg.value() or b"null"))
                    last = time.monotonic()
            quiet = time.monotonic() - last
            if (len(out) >= expect and quiet >= idle) or quiet >= 5.0:
                break
        return out
    finally:
        consumer.close()


def _topic_diffs(s: Settings, model: ModelResult) -> list[str]:
    """Accepted topic = the model's accepted events (+ its resolved cancellations); error topic = the model's
    rejected records with the model's codes."""
    diffs: list[str] = []
    cancels = sum(1 for v in model.outcome.values() if v == "cancel")
    accepted = _read(s, Topic.ACCEPTED, len(model.accepted) + cancels)
    have = Counter((str(a.get("event_name")), str(a.get("identifier"))) for a in accepted if a.get("kind") == "event")
    want = Counter((e.event_name, e.identifier) for e in model.accepted.values())
    for pair in sorted((have - want) | (want - have)):
        diffs.append(f"accepted topic: (event_name, identifier)={pair} processor={have[pair]} model={want[pair]}")
    have_cancelled = {
        (str(a.get("event_name")), str(a.get("identifier"))) for a in accepted if a.get("kind") == "cancel"
    }
    want_cancelled = {(model.accepted[k].event_name, model.accepted[k].identifier) for k in model.cancelled}
    for pair in sorted(have_cancelled ^ want_cancelled):
        diffs.append(
            f"accepted topic cancel of {pair}: processor={pair in have_cancelled} model={pair in want_cancelled}"
        )

    rejected = model.rejected()
    errors = _read(s, Topic.ERRORS, len(rejected))
    got: dict[tuple[str, int, int], str] = {}
    for err in errors:
        topic = str(err.get("topic"))
        topic = topic[len(s.topic_prefix) :] if topic.startswith(s.topic_prefix) else topic
        source = (topic, int(err.get("partition", -1)), int(err.get("offset", -1)))
        if source in got:
            diffs.append(f"error topic: {source} reported twice ({got[source]}, {err.get('code')})")
        got[source] = str(err.get("code"))
    for source in sorted(set(got) | set(rejected)):
        if got.get(source) != rejected.get(source):
            diffs.append(
                f"error topic: {source} processor={got.get(source)!r} model={rejected.get(source)!r} "
                f"(model outcome {model.outcome.get(source)!r})"
            )
    return diffs


def example_settings(settings_factory: Callable[..., Settings], partitions: int) -> Settings:
    """Settings of their own (topics, Redis prefix, groups) for one hypothesis example: the examples of a
    test share its ``settings`` fixture, and must not see each other's records or keys."""
    u = uuid.uuid4().hex[:10]
    return settings_factory(
        partitions=partitions,
        METERSTREAM_TOPIC_PREFIX=f"p{u}.",
        METERSTREAM_REDIS_PREFIX=f"pm{u}",
        METERSTREAM_PROCESSOR_GROUP=f"proc-{u}",
        METERSTREAM_SINK_GROUP=f"sink-{u}",
    )


def _check(
    settings_factory: Callable[..., Settings],
    redis_client: redis.Redis,
    scenario: Scenario,
    *,
    phases: list[list[Rec]] | None = None,
) -> None:
    """Run one scenario through a fresh processor (own topics, Redis prefix and group) and assert that Redis,
    the accepted topic and the error topic agree with the model; the message lists every difference.

    ``phases`` (a split of ``scenario.records``) forces a processing order the model must not care about:
    each phase is produced and drained (by a new processor instance of the same group) before the next."""
    s = example_settings(settings_factory, scenario.partitions)
    model = run_model(scenario.meters, scenario.records)
    processed = 0
    for i, phase in enumerate([p for p in phases or [scenario.records] if p] or [[]]):
        _produce(s, replace(scenario, meters=scenario.meters if i == 0 else [], records=phase))
        proc = Processor(s)
        try:
            processed += proc.drain(idle=2.0, timeout=120)
        finally:
            proc.close()
    diffs = compare(model, redis_client, s.redis_prefix) + _topic_diffs(s, model)
    outcomes = Counter(model.outcome.values())
    assert not diffs, (
        f"{len(diffs)} difference(s) between the processor and the model "
        f"(processor drained {processed} records; model outcomes {dict(outcomes)}):\n" + "\n".join(diffs)
    )


@settings(
    max_examples=12,  # each example is a real processor run (~14 s, group join included): keep the file < 4 min
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_processor_matches_the_model(
    settings_factory: Callable[..., Settings], redis_client: redis.Redis, base_ms: int, data: st.DataObject
) -> None:
    """Draws a scenario (relative to the test's own time), and how its records reach the processor (all at
    once, or in two drained phases that force an interleaving of partitions and topics): the result must not
    depend on the latter."""
    shape = scenarios(base_ms=base_ms, partitions=PARTITIONS, max_events=30, max_cancels=8, allow_big=False)
    scenario = data.draw(shape, label="scenario")
    phases = data.draw(phase_splits(scenario.records), label="phases")
    _check(settings_factory, redis_client, scenario, phases=phases)


def _largest_event(identifier: str, value: Any, size: int = DEFAULT_MAX_RECORD) -> bytes:
    """An "api" event for cus_a padded so that key + value is exactly ``size`` bytes."""

    def body(blob: str) -> bytes:
        return Log.event_json("api", {"stripe_customer_id": "cus_a", "value": value, "blob": blob}, identifier)

    raw = body("x" * (size - len("cus_a") - len(body(""))))
    assert len(raw) + len("cus_a") == size
    return raw


def test_huge_records_neither_crash_nor_block(
    settings_factory: Callable[..., Settings], redis_client: redis.Redis, base_ms: int
) -> None:
    """Records near a default producer's 1 MB limit are `invalid_event` (docs/semantics.md: at most 262,144
    bytes, so the accepted record always fits Kafka); one exactly at the limit is accepted and forwarded.
    Each is followed by a normal event in the same partition, which must still count (SPEC §9: huge
    payloads never crash or block a partition)."""
    r0 = base_ms + DAY_MS
    log = Log()
    log.raw(EVENTS, r0, _largest_event("big-ok", 1, size=262_144 + len("cus_a")))
    log.event(r0 + 1, "api", customer="cus_a", value=2, identifier="after-1")
    log.raw(EVENTS, r0 + 2, b"\x00" + b"y" * (DEFAULT_MAX_RECORD - 1))
    log.event(r0 + 3, "api", customer="cus_a", value=4, identifier="after-2")
    log.raw(EVENTS, r0 + 4, _largest_event("big-too-big", 1))
    log.event(r0 + 5, "api", customer="cus_a", value=8, identifier="after-3")
    meters = [meter_version(base_ms, meter_id="mtr_big", event_name="api")]
    model = run_model(meters, log.records)
    assert list(model.outcome.values()) == [
        "accepted",
        "accepted",
        "rejected:invalid_event",
        "accepted",
        "rejected:invalid_event",
        "accepted",
    ]
    _check(settings_factory, redis_client, Scenario(meters, log.records, PARTITIONS, base_ms))


def test_late_cancel_of_an_event_whose_identifier_was_reused(
    settings_factory: Callable[..., Settings], redis_client: redis.Redis, base_ms: int
) -> None:
    """Found by the property test. Identifier "a" is used again 24 h + 1 ms later (free again) with a
    timestamp in the same window; a cancellation received 1 h after the first "a" targets that first one
    (docs/semantics.md: the latest event received at or before the cancellation). Processed after both
    events (forced by draining in two phases), it must leave the second "a" as the window's survivor.
    One meter per window kind (hour, day, raw), each with its own event name and identifiers."""
    r0, h = base_ms + DAY_MS, 3_600_000
    ts = r0 // 1000
    windows: dict[str, str | None] = {"h": "hour", "d": "day", "r": None}
    meters = [meter_version(base_ms, meter_id=f"mtr_{k}", event_name=f"api_{k}", window=w) for k, w in windows.items()]
    log = Log()
    firsts = set()
    for k in windows:
        firsts.add(log.event(r0, f"api_{k}", identifier="a", value=5, timestamp=ts + 10, partition=1))
        log.event(r0 + 1, f"api_{k}", identifier="b", value=7, timestamp=ts + 20, partition=1)
        log.event(r0 + DAY_MS + 1, f"api_{k}", identifier="a", value=11, timestamp=ts + 30, partition=1)
        log.cancel(r0 + h, "a", f"api_{k}", partition=0)
    model = run_model(meters, log.records)
    assert model.cancelled == firsts
    assert model.day == {("mtr_h", "cus_1"): {ts: 11}, ("mtr_d", "cus_1"): {ts: 11}, ("mtr_r", "cus_1"): {ts: 18}}
    events = [r for r in log.records if r.topic == EVENTS]
    cancels = [r for r in log.records if r.topic == ADJUSTMENTS]
    _check(settings_factory, redis_client, Scenario(meters, log.records, PARTITIONS, base_ms), phases=[events, cancels])


def test_second_pending_cancel_does_not_wait_for_a_reused_identifier(
    settings_factory: Callable[..., Settings], redis_client: redis.Redis, base_ms: int
) -> None:
    """Found by the property test. Two cancellations of "a" arrive before any event (forced by draining the
    adjustments first); the first "a" (within 24 h of both) is their target, so the first cancels it and
    the second is a no-op. The second must not stay pending and cancel a later reuse of "a" (24 h + 1 ms
    after the first, within 24 h of the second cancellation): processed events-first, it would not."""
    r0, h = base_ms + DAY_MS, 3_600_000
    log = Log()
    log.cancel(r0, "a", partition=0)
    log.cancel(r0 + 23 * h, "a", partition=0)
    first = log.event(r0 + h, identifier="a", value=5, partition=1)
    log.event(r0 + 25 * h + 1, identifier="a", value=7, partition=1)
    meters = [meter_version(base_ms)]
    model = run_model(meters, log.records)
    assert model.cancelled == {first}
    assert [model.outcome[r.key] for r in log.records] == ["cancel", "cancel_noop", "accepted", "accepted"]
    events = [r for r in log.records if r.topic == EVENTS]
    cancels = [r for r in log.records if r.topic == ADJUSTMENTS]
    _check(settings_factory, redis_client, Scenario(meters, log.records, PARTITIONS, base_ms), phases=[cancels, events])
