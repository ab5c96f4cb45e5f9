"""``meterstream replay``: send accepted records of a time range to Stripe again, never double-billing.

The plan (printed by ``--dry-run``) decides per record of ``meter-events-accepted`` whose received time
lies in ``[from, to)``, with the delivery record (:mod:`.delivery`) and the 24 h rule:

=====================================================  =========================================
situation                                              decision
=====================================================  =========================================
Stripe accepted it (``d``)                             skip: already delivered
never sent (absent, recorded since) or refused (``r``)  send: Stripe does not count it
received (or first attempted) < 23 h ago               send: Stripe drops it if it has it
anything else (older, possibly at Stripe)              skip: not proven undelivered
event timestamp older than 35 days                     skip: Stripe would refuse it
event that must go the "never sent" way and has a      skip both: the pair nets to nothing
cancellation in the range
cancellation not yet delivered                         send: repeating one never bills (it may be
                                                       past Stripe's window: reconcile says)
=====================================================  =========================================

23 h, not 24: an hour of margin for clocks and for the time between our received time and Stripe's.
Sending goes through the sink's own :class:`~processor.sink.engine.SinkEngine` (same batching, rate
limit, retries, meter ensuring, Stripe DLQ) with a :class:`~.delivery.RecordingStripeApi`, so what the
replay sends is recorded too and a second replay skips it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from processor.config import Settings
from processor.errors import KafkaDeliveryError
from processor.kafka.produce import AckedProducer
from processor.limits import TIMESTAMP_PAST_S
from processor.ops.reader import RangeRead
from processor.sink.delivery import DeliveryLog, DeliveryStatus, RecordingStripeApi, lookup_statuses, received_ms_of
from processor.sink.engine import SinkEngine
from processor.sink.meters import StripeMeters
from processor.sink.metrics import SinkMetrics
from processor.sink.ratelimit import AsyncRateLimiter
from processor.sink.records import AcceptedRecord, parse_accepted
from processor.state.connect import async_redis
from processor.state.keys import DAY_S, HOUR_S, Keys
from topics import Topic, topic_name

__all__ = ["SAFE_RESEND_MS", "Decision", "ReplayPlan", "decide", "plan_replay", "run_replay"]

log = logging.getLogger(__name__)

ACCEPTED = Topic.ACCEPTED
#: A resend is left to Stripe's identifier dedup only this long after we (or Stripe) first saw the record.
SAFE_RESEND_MS = 23 * HOUR_S * 1000


@dataclass(frozen=True)
class Decision:
    send: bool
    reason: str


@dataclass
class Item:
    """One accepted record of the range, where it was read, and the decision about it."""

    record: AcceptedRecord
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    status: DeliveryStatus = field(default_factory=lambda: DeliveryStatus("unknown"))
    decision: Decision = field(default_factory=lambda: Decision(False, ""))


@dataclass
class ReplayPlan:
    start_ms: int
    end_ms: int
    items: list[Item] = field(default_factory=list)
    unreadable: int = 0

    @property
    def to_send(self) -> list[Item]:
        return [i for i in self.items if i.decision.send]

    def counts(self) -> Counter[tuple[bool, str]]:
        return Counter((i.decision.send, i.decision.reason) for i in self.items)


def decide(
    record: AcceptedRecord, status: DeliveryStatus, now_ms: int, *, cancelled_in_range: bool = False
) -> Decision:
    """The rule table of the module docstring for one record (pure)."""
    if status.state == "delivered":
        return Decision(False, "already delivered to Stripe")
    received = received_ms_of(record)
    if not record.is_cancel and record.timestamp is not None and record.timestamp < now_ms // 1000 - TIMESTAMP_PAST_S:
        return Decision(False, "timestamp older than Stripe's 35 days (use `meterstream correct`)")
    # Stripe got it (if at all) no earlier than our first attempt, and never before we received it.
    first_seen = status.at_ms if status.state == "attempted" and status.at_ms else received
    recent = now_ms - first_seen < SAFE_RESEND_MS
    if record.is_cancel:
        # Repeating a cancellation never bills anything; it only acts within 24 h of Stripe's receipt of the event.
        if recent:
            return Decision(True, "cancellation (repeating one is harmless)")
        return Decision(True, "cancellation, possibly past Stripe's 24 h window (check with `meterstream reconcile`)")
    proven = status.state in ("never", "refused")
    if recent:
        return Decision(True, "within Stripe's 24 h identifier window (Stripe drops a duplicate)")
    if proven and cancelled_in_range:
        return Decision(False, "never reached Stripe and cancelled: nothing to send")
    if proven:
        return Decision(True, "never sent" if status.state == "never" else "refused by Stripe before")
    return Decision(False, "older than 24 h and not proven undelivered")


def plan_replay(
    settings: Settings,
    client: Any,
    start_ms: int,
    end_ms: int,
    *,
    meter: str | None = None,
    now_ms: int | None = None,
    on_consumed: Callable[[int], None] | None = None,
) -> ReplayPlan:
    """Read the range of the accepted topic and decide for every record (no side effects)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    plan = ReplayPlan(start_ms, end_ms)
    cancels: set[tuple[str, str]] = set()
    # Cancellations are received within 24 h of their event: read a day around the range to pair them.
    read = RangeRead(settings, [ACCEPTED], since_ms=start_ms - DAY_S * 1000, on_consumed=on_consumed)
    for batch in read.messages():
        for msg in batch:
            value = msg.value() or b""
            try:
                record = parse_accepted(value)
            except ValueError:
                plan.unreadable += 1
                continue
            if meter is not None and meter not in (record.meter_id, record.event_name):
                continue
            received = received_ms_of(record)
            if record.is_cancel and start_ms - DAY_S * 1000 <= received < end_ms + DAY_S * 1000:
                cancels.add((record.meter_id, record.identifier))
            if start_ms <= received < end_ms:
                partition, offset = msg.partition(), msg.offset()
                assert partition is not None and offset is not None
                plan.items.append(Item(record, partition, offset, msg.key(), value))
    plan.items.sort(key=lambda i: (i.partition, i.offset))
    statuses = lookup_statuses(client, Keys(settings.redis_prefix), [i.record for i in plan.items])
    for item, status in zip(plan.items, statuses, strict=True):
        item.status = status
        cancelled = (item.record.meter_id, item.record.identifier) in cancels
        item.decision = decide(item.record, status, now_ms, cancelled_in_range=cancelled)
    # a cancellation whose event is skipped as "nets to nothing" is skipped with it
    netted = {
        (i.record.meter_id, i.record.identifier)
        for i in plan.items
        if not i.record.is_cancel and i.decision.reason.startswith("never reached Stripe and cancelled")
    }
    for item in plan.items:
        if item.record.is_cancel and (item.record.meter_id, item.record.identifier) in netted:
            item.decision = Decision(False, "cancels an event that never reached Stripe")
    return plan


def run_replay(settings: Settings, plan: ReplayPlan, on_done: Callable[[int], None] | None = None) -> dict[str, int]:
    """Send the plan's records through the sink engine; returns the sink's counters."""
    return asyncio.run(_send(settings, plan, on_done or (lambda _n: None)))


async def _send(settings: Settings, plan: ReplayPlan, on_done: Callable[[int], None]) -> dict[str, int]:
    items = plan.to_send
    keys = Keys(settings.redis_prefix)
    redis = async_redis(settings, decode_responses=True)
    limiter = AsyncRateLimiter(settings.stripe_rate)
    metrics = SinkMetrics(settings.stripe_mode)
    stripe = RecordingStripeApi(settings, DeliveryLog(redis, keys), acquire=limiter.acquire)
    dlq = AckedProducer(settings)
    dlq_topic = topic_name(Topic.STRIPE_DLQ, settings.topic_prefix)
    done = asyncio.Event()
    finished = 0

    def ack(_ref: Any) -> None:
        nonlocal finished
        finished += 1
        on_done(1)
        if finished >= len(items):
            done.set()

    async def dead_letter(customer: str, value: bytes) -> None:
        try:
            await asyncio.to_thread(dlq.produce_and_wait, dlq_topic, value, customer, timeout=30)
        except KafkaDeliveryError as exc:
            raise KafkaDeliveryError(f"cannot write to {dlq_topic}: {exc}") from exc

    engine = SinkEngine(
        mode=settings.stripe_mode,
        stripe=stripe,
        registry=StripeMeters(settings, stripe, redis),
        limiter=limiter,
        metrics=metrics,
        dead_letter=dead_letter,
        ack=ack,
    )
    try:
        await stripe.open()
        await engine.start()
        for item in items:
            await engine.submit((ACCEPTED, item.partition), item.offset, item.key, item.value, item)
        while items and not done.is_set() and engine.failure is None:
            await asyncio.sleep(0.05)
        await engine.drain(30)
        if engine.failure is not None:
            raise engine.failure
    finally:
        await stripe.close()
        await redis.aclose()
        await asyncio.to_thread(dlq.close, 10)
    return metrics.snapshot()
