"""The reference model: what the processor must end up with, computed the slow and obvious way.

Written from SPEC §3 and docs/semantics.md only (never from ``processor/aggregator`` or ``processor/state``),
so that a disagreement with the processor points at a real misunderstanding on one side. It keeps every
record, decides each one's outcome in a processing order, and computes the final buckets at the end from
"which events survive" — no incremental aggregation that could share a bug with the processor.

``run_model`` processes records in a given order (any order that keeps each partition's offset order) or,
by default, sorted by ``(received_ms, topic, partition, offset)``. docs/semantics.md promises the result does
not depend on how the topics interleave; tests/model/test_reference.py checks the model keeps that promise.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

__all__ = [
    "ADJUSTMENTS",
    "DAY_MS",
    "EVENTS",
    "Accepted",
    "MeterVersion",
    "ModelResult",
    "Rec",
    "compare",
    "run_model",
    "significant_digits",
    "whole_number",
]

EVENTS = "meter-events"
ADJUSTMENTS = "meter-event-adjustments"
DAY_MS = 86_400_000
PAST_LIMIT_S = 35 * 86_400
FUTURE_LIMIT_S = 300
MAX_DIGITS = 15
_ASCII_WS = " \t\n\r\x0b\x0c"
_DECIMAL_RE = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Rec:
    """One Kafka record as the processor sees it."""

    topic: str  # EVENTS | ADJUSTMENTS (base names)
    partition: int
    offset: int
    received_ms: int  # the Kafka record timestamp
    value: bytes  # raw record value (may be garbage)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


@dataclass(frozen=True)
class MeterVersion:
    """A record of the ``meters`` topic: ``meter`` (Stripe's billing.meter JSON) in effect from ``effective_ms``."""

    effective_ms: int
    meter: dict[str, Any]


@dataclass(frozen=True)
class Accepted:
    """An accepted event, as the model normalised it."""

    meter_id: str
    event_name: str
    identifier: str
    customer: str
    timestamp: int  # unix seconds
    value: int | None  # None for count meters (the value is never read)
    received_ms: int
    partition: int
    offset: int

    @property
    def rank(self) -> tuple[int, int, int]:
        """Received rank: the order of "most recently received" (docs/semantics.md)."""
        return (self.received_ms, self.partition, self.offset)


@dataclass
class ModelResult:
    """Everything the model predicts. Dicts only, so two results compare equal regardless of processing order."""

    hour: dict[tuple[str, str], dict[int, int]] = field(default_factory=dict)
    day: dict[tuple[str, str], dict[int, int]] = field(default_factory=dict)
    # (topic, partition, offset) -> accepted | duplicate | rejected:<code> | cancel | cancel_noop | cancel_pending
    outcome: dict[tuple[str, int, int], str] = field(default_factory=dict)
    customers: dict[str, dict[str, int]] = field(default_factory=dict)  # meter -> customer -> latest timestamp
    accepted: dict[tuple[str, int, int], Accepted] = field(default_factory=dict)  # by source record
    cancelled: set[tuple[str, int, int]] = field(default_factory=set)  # source records of cancelled events
    formulas: dict[str, str] = field(default_factory=dict)  # meter id -> formula (every meter ever seen)

    def rejected(self) -> dict[tuple[str, int, int], str]:
        """Source record -> error code, for every rejected record."""
        return {k: v.split(":", 1)[1] for k, v in self.outcome.items() if v.startswith("rejected:")}


# ---------------------------------------------------------------------------------------------- values


def whole_number(value: Any) -> int | None:
    """The integer a payload value stands for, or None when it is not a whole number (docs/semantics.md §5)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):  # a JSON number with a fraction or exponent (parsed exactly)
        return _integral(value)
    if isinstance(value, float):  # only NaN/Infinity come out of _parse as floats; callers may pass others
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        text = value.strip(_ASCII_WS)
        return _integral(Decimal(text)) if _DECIMAL_RE.fullmatch(text) else None
    return None  # null, objects, arrays, NaN/Infinity


def _integral(number: Decimal) -> int | None:
    """The exact integer value of ``number`` or None (no context rounding: digits are inspected)."""
    if not number.is_finite():
        return None
    _sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    if exponent < 0 and any(digits[exponent:]):
        return None
    return int(number)


def significant_digits(value: int) -> int:
    """Decimal digits without sign, leading zeros and trailing zeros; 0 has 1."""
    return max(len(str(abs(value)).rstrip("0")), 1)


def _parse(raw: bytes) -> Any:
    """UTF-8 JSON with exact numbers; raises ValueError on anything that is not JSON."""
    text = raw.decode("utf-8")  # UnicodeDecodeError is a ValueError
    return json.loads(text, parse_float=Decimal, parse_constant=lambda _name: float("nan"))


def _is_identifier(value: Any) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 100


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------- meters


@dataclass(frozen=True)
class _Meter:
    id: str
    event_name: str
    formula: str
    window: str | None
    customer_key: str
    value_key: str
    active: bool


def _meter(data: dict[str, Any]) -> _Meter:
    return _Meter(
        id=data["id"],
        event_name=data["event_name"],
        formula=data["default_aggregation"]["formula"],
        window=data.get("event_time_window"),
        customer_key=(data.get("customer_mapping") or {}).get("event_payload_key") or "stripe_customer_id",
        value_key=(data.get("value_settings") or {}).get("event_payload_key") or "value",
        active=data.get("status", "active") == "active",
    )


class _Meters:
    """The meters topic over time: a record takes effect for events received at or after its timestamp; for
    one meter id the latest record (topic order) in effect wins."""

    def __init__(self, versions: Sequence[MeterVersion]) -> None:
        self._versions = [(v.effective_ms, _meter(v.meter)) for v in versions]

    def by_event_name(self, event_name: str, received_ms: int) -> _Meter | None:
        current: dict[str, _Meter] = {}
        for effective, meter in self._versions:
            if effective <= received_ms:
                current[meter.id] = meter
        return next((m for m in current.values() if m.event_name == event_name), None)

    def formulas(self) -> dict[str, str]:
        return {m.id: m.formula for _, m in self._versions}

    def windows(self) -> dict[str, str | None]:
        return {m.id: m.window for _, m in self._versions}


# ---------------------------------------------------------------------------------------------- records


class _Reject(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _validate_event(rec: Rec, meters: _Meters) -> Accepted:
    """Validation in the documented order; raises _Reject with the first failing code."""
    if len(rec.value) > 262_144:  # docs/semantics.md: larger records are invalid_event
        raise _Reject("invalid_event")
    try:
        obj = _parse(rec.value)
    except ValueError:
        raise _Reject("invalid_event") from None
    if not isinstance(obj, dict):
        raise _Reject("invalid_event")
    event_name, payload = obj.get("event_name"), obj.get("payload")
    if not isinstance(event_name, str) or not event_name or not isinstance(payload, dict):
        raise _Reject("invalid_event")
    # JSON null counts as absent for identifier and timestamp (docs/semantics.md).
    if obj.get("identifier") is not None and not _is_identifier(obj["identifier"]):
        raise _Reject("invalid_event")
    if obj.get("timestamp") is not None and not _is_int(obj["timestamp"]):
        raise _Reject("invalid_event")
    meter = meters.by_event_name(event_name, rec.received_ms)
    if meter is None:
        raise _Reject("no_meter")
    if not meter.active:
        raise _Reject("archived_meter")
    raw_customer = payload.get(meter.customer_key)
    if _is_int(raw_customer):
        customer = str(raw_customer)
    elif isinstance(raw_customer, str) and raw_customer:
        customer = raw_customer
    else:
        raise _Reject("meter_event_no_customer_defined")
    value: int | None = None
    if meter.formula != "count":
        value = whole_number(payload.get(meter.value_key))  # a missing key is None: not whole
        if value is None:
            raise _Reject("meter_event_invalid_value")
        if significant_digits(value) > MAX_DIGITS:
            raise _Reject("meter_event_value_too_many_digits")
    received_s = rec.received_ms // 1000
    timestamp = obj["timestamp"] if obj.get("timestamp") is not None else received_s
    if timestamp < received_s - PAST_LIMIT_S:
        raise _Reject("timestamp_too_far_in_past")
    if timestamp > received_s + FUTURE_LIMIT_S:
        raise _Reject("timestamp_in_future")
    identifier = obj.get("identifier") or f"ms-{rec.topic}-{rec.partition}-{rec.offset}"
    return Accepted(
        meter_id=meter.id,
        event_name=event_name,
        identifier=identifier,
        customer=customer,
        timestamp=timestamp,
        value=value,
        received_ms=rec.received_ms,
        partition=rec.partition,
        offset=rec.offset,
    )


def _validate_cancel(rec: Rec, meters: _Meters) -> tuple[str, str]:
    """(event_name, identifier) of a valid cancellation; raises _Reject otherwise."""
    if len(rec.value) > 262_144:  # docs/semantics.md: larger records are invalid_event
        raise _Reject("invalid_event")
    try:
        obj = _parse(rec.value)
    except ValueError:
        raise _Reject("invalid_event") from None
    if not isinstance(obj, dict):
        raise _Reject("invalid_event")
    event_name, cancel = obj.get("event_name"), obj.get("cancel")
    if not isinstance(event_name, str) or not event_name or obj.get("type") != "cancel":
        raise _Reject("invalid_event")
    if not isinstance(cancel, dict) or not _is_identifier(cancel.get("identifier")):
        raise _Reject("invalid_event")
    if meters.by_event_name(event_name, rec.received_ms) is None:
        raise _Reject("no_meter")  # an inactive meter's events may still be cancelled
    return event_name, cancel["identifier"]


# ---------------------------------------------------------------------------------------------- the run


def _check_order(order: Sequence[Rec]) -> None:
    last: dict[tuple[str, int], Rec] = {}
    for rec in order:
        prev = last.get((rec.topic, rec.partition))
        if prev is not None and prev.offset >= rec.offset:
            raise ValueError(f"order breaks offset order of {rec.topic}/{rec.partition}: {prev.offset}, {rec.offset}")
        last[(rec.topic, rec.partition)] = rec


def _received_order(records: Iterable[Rec]) -> list[Rec]:
    """Merge the partitions by (received_ms, topic, partition, offset) of their heads: plain received order
    when received times never go down within a partition (the usual case), and still offset order within
    each partition when a producer-set timestamp does go down."""
    queues: dict[tuple[str, int], list[Rec]] = {}
    for rec in sorted(records, key=lambda r: r.key):
        queues.setdefault((rec.topic, rec.partition), []).append(rec)
    return list(heapq.merge(*queues.values(), key=lambda r: (r.received_ms, r.topic, r.partition, r.offset)))


def run_model(
    meters: Sequence[MeterVersion], records: Iterable[Rec], *, order: Sequence[Rec] | None = None
) -> ModelResult:
    """The final state after processing ``records``: in ``order`` if given (it must keep each partition's
    offset order), else by received time."""
    timeline = _Meters(meters)
    seq = list(order) if order is not None else _received_order(records)
    _check_order(seq)
    result = ModelResult(formulas=timeline.formulas())
    by_pair: dict[tuple[str, str], list[tuple[Rec, Accepted]]] = {}  # accepted events, processing order
    pending: dict[tuple[str, str], list[Rec]] = {}  # cancellations waiting for their event

    for rec in seq:
        if rec.topic == EVENTS:
            try:
                event = _validate_event(rec, timeline)
            except _Reject as rej:
                result.outcome[rec.key] = f"rejected:{rej.code}"
                continue
            pair = (event.event_name, event.identifier)
            holders = by_pair.setdefault(pair, [])
            if holders and rec.received_ms - holders[-1][1].received_ms <= DAY_MS:
                result.outcome[rec.key] = "duplicate"
                continue
            holders.append((rec, event))
            result.outcome[rec.key] = "accepted"
            result.accepted[rec.key] = event
            # Waiting cancellations within 24 h: the first cancels this event, the others find it cancelled.
            waiting = pending.get(pair, [])
            matching = [c for c in waiting if abs(c.received_ms - rec.received_ms) <= DAY_MS]
            for i, cancel in enumerate(matching):
                result.outcome[cancel.key] = "cancel" if i == 0 else "cancel_noop"
                waiting.remove(cancel)
            if matching:
                result.cancelled.add(rec.key)
        elif rec.topic == ADJUSTMENTS:
            try:
                pair = _validate_cancel(rec, timeline)
            except _Reject as rej:
                result.outcome[rec.key] = f"rejected:{rej.code}"
                continue
            near = [(r, e) for r, e in by_pair.get(pair, []) if abs(rec.received_ms - e.received_ms) <= DAY_MS]
            before = [x for x in near if x[1].received_ms <= rec.received_ms]
            after = [x for x in near if x[1].received_ms > rec.received_ms]
            if before:
                target = max(before, key=lambda x: x[1].rank)[0]
            elif after:
                target = min(after, key=lambda x: x[1].rank)[0]
            else:
                pending.setdefault(pair, []).append(rec)
                result.outcome[rec.key] = "cancel_pending"
                continue
            if target.key in result.cancelled:
                result.outcome[rec.key] = "cancel_noop"
            else:
                result.cancelled.add(target.key)
                result.outcome[rec.key] = "cancel"
        else:
            raise ValueError(f"unknown topic {rec.topic!r}")

    _aggregate(result, timeline)
    return result


def _bucket(ts: int, window: str) -> int:
    size = 3600 if window == "hour" else 86_400
    return ts - ts % size


def _formula(formula: str, events: list[Accepted]) -> int:
    if formula == "count":
        return len(events)
    values = [e.value for e in events if e.value is not None]  # sum/last events always carry a value
    if formula == "sum":
        return sum(values)
    latest = max(events, key=lambda e: (e.timestamp, *e.rank))
    assert latest.value is not None
    return latest.value


def _aggregate(result: ModelResult, timeline: _Meters) -> None:
    """Final buckets from the surviving events: pre-aggregated windows keep their latest-received survivor."""
    windows = timeline.windows()
    counted: dict[tuple[str, str], list[Accepted]] = {}
    survivors: dict[tuple[str, str, int], Accepted] = {}
    for key, event in result.accepted.items():
        seen = result.customers.setdefault(event.meter_id, {})
        seen[event.customer] = max(seen.get(event.customer, event.timestamp), event.timestamp)
        if key in result.cancelled:
            continue
        window = windows[event.meter_id]
        if window is None:
            counted.setdefault((event.meter_id, event.customer), []).append(event)
            continue
        slot = (event.meter_id, event.customer, _bucket(event.timestamp, window))
        if slot not in survivors or event.rank > survivors[slot].rank:
            survivors[slot] = event
    for event in survivors.values():
        counted.setdefault((event.meter_id, event.customer), []).append(event)
    for (meter_id, customer), events in counted.items():
        for window, out in (("hour", result.hour), ("day", result.day)):
            groups: dict[int, list[Accepted]] = {}
            for event in events:
                groups.setdefault(_bucket(event.timestamp, window), []).append(event)
            out[(meter_id, customer)] = {b: _formula(result.formulas[meter_id], g) for b, g in groups.items()}


# ---------------------------------------------------------------------------------------------- compare


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _when(field: str) -> str:
    try:
        return datetime.fromtimestamp(int(field), tz=UTC).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return "not a time"


def compare(model: ModelResult, redis_client: Any, prefix: str) -> list[str]:
    """Human-readable differences between the model and Redis (SPEC §5 keys), empty when they agree.

    Key formats are spelled here from SPEC §5 (the CONTRACT), not taken from processor/state/keys.py, so the
    comparison also checks that the processor writes the documented keys. Sum/count buckets that are missing
    equal "0"; a ``last`` bucket must be absent when the model has no event for it.
    """
    diffs: list[str] = []
    usage_re = re.compile(re.escape(prefix) + r":usage:\{(?P<meter>[^:{}]+):(?P<customer>.*)\}:(?P<window>hour|day)")
    found: dict[tuple[str, str, str], dict[str, str]] = {}
    for raw_key in redis_client.scan_iter(match=f"{prefix}:usage:*", count=1000):
        key = _text(raw_key)
        match = usage_re.fullmatch(key)
        if match is None:
            diffs.append(f"unexpected key {key}")
            continue
        fields = redis_client.hgetall(key)
        found[(match["meter"], match["customer"], match["window"])] = {_text(f): _text(v) for f, v in fields.items()}
    expected: dict[tuple[str, str, str], dict[str, str]] = {}
    for window, table in (("hour", model.hour), ("day", model.day)):
        for (meter_id, customer), buckets in table.items():
            expected[(meter_id, customer, window)] = {str(b): str(v) for b, v in buckets.items()}
    for slot in sorted(set(found) | set(expected)):
        meter_id, customer, window = slot
        have, want = found.get(slot, {}), expected.get(slot, {})
        zero = "0" if model.formulas.get(meter_id) in ("sum", "count") else None
        for name in sorted(set(have) | set(want)):
            got, exp = have.get(name, zero), want.get(name, zero)
            if got != exp:
                diffs.append(
                    f"{prefix}:usage:{{{meter_id}:{customer}}}:{window} field {name} ({_when(name)} UTC, "
                    f"{model.formulas.get(meter_id, '?')}): redis={got!r} model={exp!r}"
                )

    customers_re = re.compile(re.escape(prefix) + r":customers:\{(?P<meter>[^{}]+)\}")
    seen: dict[str, dict[str, float]] = {}
    for raw_key in redis_client.scan_iter(match=f"{prefix}:customers:*", count=1000):
        key = _text(raw_key)
        match = customers_re.fullmatch(key)
        if match is None:
            diffs.append(f"unexpected key {key}")
            continue
        seen[match["meter"]] = {_text(m): float(s) for m, s in redis_client.zrange(key, 0, -1, withscores=True)}
    for meter_id in sorted(set(seen) | set(model.customers)):
        have_scores, want_scores = seen.get(meter_id, {}), model.customers.get(meter_id, {})
        for customer in sorted(set(have_scores) | set(want_scores)):
            got_score, exp_score = have_scores.get(customer), want_scores.get(customer)
            if got_score is None or exp_score is None or got_score != exp_score:
                diffs.append(
                    f"{prefix}:customers:{{{meter_id}}} member {customer!r}: redis score={got_score!r} "
                    f"model={exp_score!r}"
                )
    return diffs
