"""``meterstream errors``: read the error topic, and re-publish rejected events once their cause is fixed.

Replaying an error (e.g. ``no_meter`` after the meter was created, ``archived_meter`` after it was
reactivated) re-publishes the original record to its input topic so it goes through the normal pipeline.
What keeps that from counting anything twice:

- the record keeps its identity: its own identifier, or the one the processor would have given it
  (``ms-<topic>-<partition>-<offset>``), and its own timestamp, or its original received time — so the
  processor's 24 h dedup drops a second replay, and the event lands in the bucket it was meant for;
- every replayed error is recorded (``Keys.ops_record("errors-replayed", day)``, ``p``/``d`` as in the
  delivery record), so a later ``errors replay`` skips it even after 24 h;
- an identifier the pipeline already holds (the producer resent the event itself) is not replayed;
- the plan judges each record with the processor's own validation against the meters *now*, and leaves
  out what would be rejected again (with the code it would get).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message

from processor.aggregator.engine import ADJUSTMENTS, EVENTS
from processor.aggregator.validate import Rejected, Source, default_identifier, judge_adjustment, judge_event
from processor.config import Settings
from processor.errors import KafkaDeliveryError
from processor.kafka.produce import AckedProducer
from processor.meters.book import MeterBook
from processor.ops.reader import RangeRead
from processor.state.keys import DAY_S, HOUR_S, OPS_RECORD_TTL_S, Keys
from processor.state.store import StateStore
from processor.wire.times import parse_iso
from topics import Topic, topic_name

__all__ = ["ErrorRecord", "Replayable", "plan_errors_replay", "read_errors", "replay_marks", "run_errors_replay"]

log = logging.getLogger(__name__)

ERRORS = Topic.ERRORS
RECORD_KIND = "errors-replayed"
_FIELDS = ("event_name", "payload", "identifier", "timestamp")


@dataclass(frozen=True)
class ErrorRecord:
    """One record of ``meter-event-errors``: the rejection and where the original record was."""

    partition: int
    offset: int
    code: str
    message: str
    event: Any
    topic: str
    source_partition: int
    source_offset: int
    received_at: int | None
    raw: dict[str, Any]

    @property
    def ref(self) -> str:
        """The original record's position, ``<topic>/<partition>/<offset>``."""
        return f"{self.topic}/{self.source_partition}/{self.source_offset}"

    @property
    def event_name(self) -> str | None:
        name = self.event.get("event_name") if isinstance(self.event, dict) else None
        return name if isinstance(name, str) else None

    @classmethod
    def parse(cls, partition: int, offset: int, value: bytes | None) -> ErrorRecord | None:
        try:
            data = json.loads(value or b"")
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("code"), str):
            return None
        received = data.get("received_at")
        return cls(
            partition,
            offset,
            data["code"],
            str(data.get("message", "")),
            data.get("event"),
            str(data.get("topic", "")),
            int(data.get("partition", -1)),
            int(data.get("offset", -1)),
            received if isinstance(received, int) else None,
            data,
        )


def read_errors(
    settings: Settings,
    *,
    codes: Iterable[str] = (),
    event_names: Iterable[str] = (),
    start_ms: int | None = None,
    end_ms: int | None = None,
    on_consumed: Callable[[int], None] | None = None,
) -> list[ErrorRecord]:
    """The error records matching every given filter (received time of the original in ``[start, end)``)."""
    wanted_codes, wanted_names = set(codes), set(event_names)
    out: list[ErrorRecord] = []
    for batch in RangeRead(settings, [ERRORS], since_ms=start_ms, on_consumed=on_consumed).messages():
        for msg in batch:
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            record = ErrorRecord.parse(partition, offset, msg.value())
            if record is None:
                continue
            if wanted_codes and record.code not in wanted_codes:
                continue
            if wanted_names and record.event_name not in wanted_names:
                continue
            received = record.received_at if record.received_at is not None else msg.timestamp()[1]
            if start_ms is not None and received < start_ms:
                continue
            if end_ms is not None and received >= end_ms:
                continue
            out.append(record)
    out.sort(key=lambda r: (r.received_at or 0, r.partition, r.offset))
    return out


@dataclass
class Replayable:
    """An error and what replaying it would publish (``value`` and ``key``), or why it is left out."""

    error: ErrorRecord
    send: bool = False
    reason: str = ""
    value: dict[str, Any] | None = None
    key: str | None = None
    base: str = EVENTS
    meter_id: str | None = None


def _record_key(keys: Keys, error: ErrorRecord) -> str:
    received_s = (error.received_at or 0) // 1000
    return keys.ops_record(RECORD_KIND, received_s - received_s % DAY_S)


def replay_marks(client: Any, keys: Keys, errors: list[ErrorRecord]) -> list[str | None]:
    """The errors-replayed record of each error: ``d<ms>`` (replayed), ``p<ms>`` (started) or None."""
    pipe = client.pipeline(transaction=False)
    for error in errors:
        pipe.hget(_record_key(keys, error), error.ref)
    marks = pipe.execute() if errors else []
    return [m.decode() if isinstance(m, bytes) else m for m in marks]


def plan_errors_replay(
    client: Any, keys: Keys, book: MeterBook, errors: list[ErrorRecord], now_ms: int | None = None
) -> list[Replayable]:
    """Decide for every error whether it is replayed (pure apart from reading Redis)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    plan = [Replayable(e) for e in errors]
    marks = replay_marks(client, keys, errors)
    chosen: set[tuple[str, str]] = set()
    for item, mark in zip(plan, marks, strict=True):
        _judge(item, book, now_ms)
        if not item.send:
            continue
        text = mark
        if text and text.startswith("d"):
            item.send, item.reason = False, "already replayed"
        elif text and now_ms - int(text[1:]) >= 23 * HOUR_S * 1000:
            item.send, item.reason = False, "a replay started more than 23 h ago did not finish: check it by hand"
        assert item.value is not None
        ident = item.value["identifier"] if item.base == EVENTS else item.value["cancel"]["identifier"]
        pair = (item.value["event_name"] + ("" if item.base == EVENTS else "/cancel"), ident)
        if item.send and pair in chosen:
            item.send, item.reason = False, "same identifier as another error of this replay"
        if item.send:
            chosen.add(pair)
    holders = [i for i in plan if i.send and i.base == EVENTS and i.meter_id is not None]
    pairs = [(str(i.meter_id), str(i.value["identifier"] if i.value else "")) for i in holders]
    for item, held in zip(holders, StateStore(client, keys.prefix).holds_event(pairs, now_ms), strict=True):
        if held:
            item.send, item.reason = False, "the pipeline already holds this identifier (it was sent again)"
    return plan


def _judge(item: Replayable, book: MeterBook, now_ms: int) -> None:
    error = item.error
    event = error.event
    from_gateway = error.topic.startswith("gateway:")  # a v2 stream event the gateway refused (never on Kafka)
    if (error.topic not in (EVENTS, ADJUSTMENTS) and not from_gateway) or not isinstance(event, dict):
        item.reason = "not a readable meter event"
        return
    received_ms = error.received_at if error.received_at is not None else now_ms
    src = Source(error.topic, error.source_partition, error.source_offset, received_ms)
    if error.topic == ADJUSTMENTS:
        value = {k: event[k] for k in ("event_name", "type", "cancel") if k in event}
        judged_c = judge_adjustment(json.dumps(value).encode(), Source(ADJUSTMENTS, 0, 0, now_ms), book)
        if isinstance(judged_c, Rejected):
            item.reason = f"would be rejected again: {judged_c.code}"
            return
        item.value, item.key, item.base = value, judged_c.identifier, ADJUSTMENTS
        item.send, item.reason = True, "cancellation (acts within 24 h of its event)"
        return
    value = {k: event[k] for k in _FIELDS if k in event}
    if from_gateway:  # the identifier the gateway gave it (its own or one derived from the request)
        gateway_identifier = error.raw.get("identifier")
        if not isinstance(gateway_identifier, str) or not gateway_identifier:
            item.reason = "not a readable meter event"
            return
        value.setdefault("identifier", gateway_identifier)
        if isinstance(value.get("timestamp"), str):  # v2 ISO time: the topic takes unix seconds
            try:
                value["timestamp"] = parse_iso(value["timestamp"])
            except (ValueError, TypeError, OverflowError):
                item.reason = "not a readable meter event"
                return
    value.setdefault("identifier", default_identifier(src))
    value.setdefault("timestamp", received_ms // 1000)
    judged = judge_event(json.dumps(value).encode(), Source(EVENTS, 0, 0, now_ms), book)
    if isinstance(judged, Rejected):
        item.reason = f"would be rejected again: {judged.code}"
        return
    item.value, item.key, item.meter_id = value, judged.customer, judged.meter.id
    item.send, item.reason = True, f"fixed: {error.code} no longer applies"


@dataclass
class ReplayResult:
    published: int = 0
    failed: list[str] = field(default_factory=list)


def run_errors_replay(settings: Settings, client: Any, plan: list[Replayable]) -> ReplayResult:
    """Publish the chosen records (recorded as started first, as done once Kafka acknowledged them)."""
    keys = Keys(settings.redis_prefix)
    chosen = [i for i in plan if i.send and i.value is not None]
    result = ReplayResult()
    if not chosen:
        return result
    _mark(client, keys, chosen, f"p{time.time_ns() // 1_000_000}")
    producer = AckedProducer(settings, config={"allow.auto.create.topics": False})
    acked: list[Replayable] = []

    def callback(item: Replayable) -> Callable[[KafkaError | None, Message], None]:
        def done(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                acked.append(item)
            else:
                result.failed.append(f"{item.error.ref}: {err.str()}")

        return done

    try:
        for item in chosen:
            data = json.dumps(item.value, separators=(",", ":"), ensure_ascii=False).encode()
            topic = topic_name(item.base, settings.topic_prefix)
            producer.produce(topic, data, item.key or "", on_delivery=callback(item))
            producer.poll(0)
        remaining = producer.flush(60)
    finally:
        producer.close(10)
    if acked:
        _mark(client, keys, acked, f"d{time.time_ns() // 1_000_000}")
    result.published = len(acked)
    if remaining or result.failed:
        raise KafkaDeliveryError(
            f"{remaining + len(result.failed)} replayed record(s) were not acknowledged; run the replay again"
        )
    return result


def _mark(client: Any, keys: Keys, items: list[Replayable], mark: str) -> None:
    pipe = client.pipeline(transaction=False)
    for item in items:
        key = _record_key(keys, item.error)
        pipe.hset(key, item.error.ref, mark)
        pipe.expire(key, OPS_RECORD_TTL_S)
    pipe.execute()
