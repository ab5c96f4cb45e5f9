"""``meterstream correct``: fix usage beyond Stripe's 24 h cancellation window with a compensating event.

Stripe can cancel an event only within 24 h of receiving it; after that the documented way to fix
over-reported usage is a negative event (reference/stripe-meters.md: "Negative quantities are an accepted
way to fix over-reporting"). The correction is an ordinary meter event published to ``meter-events``,
so it flows through the whole pipeline — validation, Redis aggregates, the accepted topic, the sink,
Stripe — and everything stays in agreement.

It is exactly once: the identifier is derived from what the correction says (meter, customer, value,
timestamp, the operator's reference), so the processor drops a repeat within 24 h, and every correction
is recorded (``Keys.ops_record("corrections", day)``), so a repeat is refused after that too.

Where it cannot apply (refused with the reason):

- ``count`` meters count events and never read a value: a compensating event adds 1.
- ``last`` meters report the latest value: a negative event would *replace* it, not subtract from it.
  Send the right value instead, with a later timestamp in the same period (``events send``).
- pre-aggregated meters (``event_time_window``) keep only the most recently received event of each
  window: a compensating event would replace the window's value. Send the corrected window value
  instead (a new event with a timestamp in that window).
- anything older than 35 days (Stripe and the processor refuse such timestamps), and periods whose
  invoice Stripe has finalized (Stripe never changes a finalized invoice: credit the customer).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from processor.aggregator.values import MAX_SIGNIFICANT_DIGITS, significant_digits
from processor.config import Settings
from processor.errors import InvalidRequestError
from processor.events.producer import MeterEventProducer
from processor.limits import TIMESTAMP_FUTURE_S, TIMESTAMP_PAST_S
from processor.meters.model import Meter
from processor.state.keys import DAY_S, OPS_RECORD_TTL_S, Keys

__all__ = ["Correction", "apply_correction", "plan_correction"]

RECORD_KIND = "corrections"

_NOT_FOR = {
    "count": "a count meter counts events and never reads a value: a compensating event would add 1",
    "last": "a last meter reports the latest value: a compensating event would replace it, not subtract "
    "from it; send the right value with a later timestamp in the same period (`meterstream events send`)",
}


@dataclass(frozen=True)
class Correction:
    meter: Meter
    customer: str
    value: int
    timestamp: int
    reference: str

    @property
    def identifier(self) -> str:
        text = f"{self.meter.id}|{self.customer}|{self.value}|{self.timestamp}|{self.reference}"
        return "corr_" + hashlib.blake2b(text.encode(), digest_size=15).hexdigest()

    def payload(self) -> dict[str, str | int]:
        return {self.meter.customer_key: self.customer, self.meter.value_key: str(self.value)}


def plan_correction(
    meter: Meter, customer: str, value: int, timestamp: int | None, reference: str, now: int | None = None
) -> Correction:
    """The correction, or :class:`InvalidRequestError` saying why it cannot be made this way."""
    now = int(time.time()) if now is None else now
    if meter.formula in _NOT_FOR:
        raise InvalidRequestError(f"cannot correct {meter.id}: {_NOT_FOR[meter.formula]}", param="meter")
    if meter.event_time_window is not None:
        raise InvalidRequestError(
            f"cannot correct {meter.id}: it is pre-aggregated by {meter.event_time_window}, so the most recently "
            "received event of a window replaces the others; send the corrected window value instead "
            "(a new event with a timestamp in that window)",
            param="meter",
        )
    if not meter.active:
        raise InvalidRequestError(f"cannot correct {meter.id}: the meter is inactive", param="meter")
    if not customer:
        raise InvalidRequestError("a customer is required", param="customer")
    if value == 0:
        raise InvalidRequestError("a correction of 0 changes nothing", param="value")
    if significant_digits(value) > MAX_SIGNIFICANT_DIGITS:
        raise InvalidRequestError(f"at most {MAX_SIGNIFICANT_DIGITS} significant digits", param="value")
    if not reference.strip():
        raise InvalidRequestError("a reference (ticket, reason) is required: it makes the correction unique")
    ts = now if timestamp is None else timestamp
    if ts < now - TIMESTAMP_PAST_S:
        raise InvalidRequestError(
            "the timestamp is more than 35 days old: Stripe and the processor refuse it (and the period is "
            "most likely invoiced: credit the customer in Stripe instead)",
            param="timestamp",
        )
    if ts > now + TIMESTAMP_FUTURE_S:
        raise InvalidRequestError("the timestamp is more than 5 minutes in the future", param="timestamp")
    return Correction(meter, customer, value, ts, reference.strip())


def _record_key(keys: Keys, correction: Correction) -> str:
    return keys.ops_record(RECORD_KIND, correction.timestamp - correction.timestamp % DAY_S)


def recorded(client: Any, keys: Keys, correction: Correction) -> str | None:
    """``p<ms>`` / ``d<ms>`` if this correction was started / sent before."""
    raw = client.hget(_record_key(keys, correction), correction.identifier)
    return raw.decode() if isinstance(raw, bytes) else raw


def apply_correction(settings: Settings, client: Any, correction: Correction) -> bool:
    """Publish the correction unless it was sent before; returns whether it was published now."""
    keys = Keys(settings.redis_prefix)
    mark = recorded(client, keys, correction)
    if mark is not None and mark.startswith("d"):
        return False
    if mark is not None and time.time_ns() // 1_000_000 - int(mark[1:]) > 23 * 3600 * 1000:
        # It may have reached Kafka more than a day ago: the processor would no longer drop a repeat.
        raise InvalidRequestError(
            f"correction {correction.identifier} was started at {mark[1:]} (unix ms) and not confirmed; "
            "check meter-events for it before sending it again with another reference"
        )
    key = _record_key(keys, correction)
    client.hset(key, correction.identifier, f"p{time.time_ns() // 1_000_000}")
    client.expire(key, OPS_RECORD_TTL_S)
    producer = MeterEventProducer(settings, customer_key=correction.meter.customer_key)
    producer.send(
        correction.meter.event_name,
        correction.payload(),
        identifier=correction.identifier,
        timestamp=correction.timestamp,
        customer=correction.customer,
    )
    producer.close(30)
    client.hset(key, correction.identifier, f"d{time.time_ns() // 1_000_000}")
    return True
