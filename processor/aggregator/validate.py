"""SPEC §3 validation of one record, in Stripe's order, as a pure function.

Input is the raw Kafka record (bytes, received time, position); output is either a normalised
:class:`Event` / :class:`Cancel` or a :class:`Rejected` with Stripe's async error code. Nothing here does
I/O, so every rule is unit-tested without a broker (tests/unit/test_validate.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from processor.aggregator.values import MAX_SIGNIFICANT_DIGITS, MAX_TOTAL_DIGITS, parse_whole, significant_digits
from processor.limits import IDENTIFIER_MAX, TIMESTAMP_FUTURE_S, TIMESTAMP_PAST_S, customer_problem, text_problem
from processor.meters.book import MeterBook
from processor.meters.model import Meter

__all__ = [
    "Cancel",
    "Event",
    "Rejected",
    "Source",
    "adjustment_fast",
    "as_customer",
    "default_identifier",
    "event_fast",
    "judge_adjustment",
    "judge_adjustment_record",
    "judge_event",
    "judge_event_record",
    "loads_fast",
    "meter_problem",
    "meter_value",
    "timestamp_problem",
]

MAX_IDENTIFIER = IDENTIFIER_MAX  # one rule with the gateway and imports (processor/limits.py)
#: The code of a customer id the shared size/text rule refuses (processor/limits.py): the processor's code for
#: a malformed event, at the gateway too (a 400 naming ``payload[<customer key>]``).
CUSTOMER_REFUSED = "invalid_event"
#: Largest record value the processor accepts. Larger ones are `invalid_event`: their accepted record (the
#: event plus the meter id and position) would not fit the 1,000,000-byte record limit of a default
#: Kafka producer and broker, and no usage event needs this much (Stripe's own request limits are smaller).
MAX_RECORD_BYTES = 262_144
# One decoder for every record (json.loads with options builds a new one per call); floats become
# Decimals so "25.0" style numbers are judged exactly.
_DECODER = json.JSONDecoder(parse_float=Decimal)


class Source(NamedTuple):
    """Where a record came from. ``topic`` is the catalog (base) name, without the prefix.

    NamedTuple rather than a frozen dataclass: one is built per record, and this is 3x cheaper."""

    topic: str
    partition: int
    offset: int
    received_ms: int

    @property
    def ref(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(slots=True)
class Event:
    source: Source
    meter: Meter
    customer: str
    identifier: str
    timestamp: int
    value: int | None  # None for count meters (the value key is never read)
    payload: dict[str, str]


@dataclass(slots=True)
class Cancel:
    source: Source
    meter: Meter
    identifier: str


@dataclass(slots=True)
class Rejected:
    source: Source
    code: str
    message: str
    original: Any  # parsed JSON when it parsed, else the (truncated) text
    customer: str | None = None


def default_identifier(source: Source) -> str:
    """Deterministic identifier for an event without one: replays and re-imports give the same one."""
    return f"ms-{source.topic}-{source.partition}-{source.offset}"


def _decode(value: bytes | None) -> tuple[Any, str | None]:
    if value is None:
        return None, "record has no value"
    try:
        return _DECODER.decode(value.decode("utf-8")), None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, f"record value is not UTF-8 JSON: {exc.__class__.__name__}"


def _preview(value: bytes | None, limit: int = 2048) -> str:
    if value is None:
        return ""
    return value[:limit].decode("utf-8", "replace")


def _as_customer(raw: object) -> str | None:
    if isinstance(raw, str):
        return raw or None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    return None


def _stringify(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    return json.dumps(value, default=str, separators=(",", ":"))


def _jsonable(value: Any) -> Any:
    """The parsed value with Decimals turned back into JSON numbers (for the error topic)."""
    return json.loads(json.dumps(value, default=lambda d: float(d) if isinstance(d, Decimal) else str(d)))


def _identifier_ok(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_IDENTIFIER and text_problem(value) is None


def _parse_object(value: bytes | None, source: Source) -> dict[str, Any] | Rejected:
    """The first checks both topics share: size, UTF-8 JSON, an object."""
    if value is not None and len(value) > MAX_RECORD_BYTES:
        return Rejected(
            source,
            "invalid_event",
            f"record value is {len(value)} bytes; at most {MAX_RECORD_BYTES} are accepted",
            _preview(value),
        )
    data, problem = _decode(value)
    if problem is not None:
        return Rejected(source, "invalid_event", problem, _preview(value))
    if not isinstance(data, dict):
        return Rejected(source, "invalid_event", "record value must be a JSON object", _jsonable(data))
    return data


def meter_value(meter: Meter, payload: Mapping[str, Any]) -> int | tuple[str, str]:
    """The value of a sum/last meter's event, or (Stripe error code, message) when Stripe would reject it.
    One rule for the processor and for ``meterstream import``'s check (which reports it on the row's line)."""
    number = parse_whole(payload[meter.value_key]) if meter.value_key in payload else None
    if number is None:
        what = "not found in payload" if meter.value_key not in payload else "is not a whole number"
        return "meter_event_invalid_value", f"Value key {meter.value_key} {what}."
    if significant_digits(number) > MAX_SIGNIFICANT_DIGITS or len(str(abs(number))) > MAX_TOTAL_DIGITS:
        shown = str(number) if len(str(number)) <= 40 else str(number)[:40] + "..."
        return (
            "meter_event_value_too_many_digits",
            f"The value in the event payload can have at most {MAX_SIGNIFICANT_DIGITS} digits. Received {shown}.",
        )
    return number


def judge_event(value: bytes | None, source: Source, meters: MeterBook) -> Event | Rejected:
    """The processor's judgment of a consumed ``meter-events`` record by Stripe's rules (SPEC §3), against
    the meter version its received time selects: an accepted :class:`Event` or a :class:`Rejected` with
    Stripe's asynchronous error code. Not the producer-side shape check
    (:func:`processor.events.schema.check_event_shape`), which knows no meter."""
    data = _parse_object(value, source)
    if isinstance(data, Rejected):
        return data
    name = data.get("event_name")
    payload = data.get("payload")
    if not isinstance(name, str) or not name:
        return Rejected(source, "invalid_event", "event_name must be a non-empty string", _jsonable(data))
    if not isinstance(payload, dict):
        return Rejected(source, "invalid_event", "payload must be an object", _jsonable(data))
    identifier = data.get("identifier")
    if identifier is not None and not _identifier_ok(identifier):
        return Rejected(source, "invalid_event", "identifier must be a string of 1 to 100 characters", _jsonable(data))
    ts_raw = data.get("timestamp")
    if ts_raw is not None and (isinstance(ts_raw, bool) or not isinstance(ts_raw, int)):
        return Rejected(source, "invalid_event", "timestamp must be an integer (unix seconds)", _jsonable(data))

    meter = meters.by_event_name(name, source.received_ms)
    customer = None if meter is None else _as_customer(payload.get(meter.customer_key))
    problem = meter_problem(name, meter, customer)
    if problem is not None:
        return Rejected(source, problem[0], problem[1], _jsonable(data), customer)
    assert meter is not None and customer is not None

    number: int | None = None
    if meter.formula != "count":
        parsed = meter_value(meter, payload)
        if isinstance(parsed, tuple):
            code, message = parsed
            return Rejected(source, code, message, _jsonable(data), customer)
        number = parsed

    received_s = source.received_ms // 1000
    ts = received_s if ts_raw is None else ts_raw
    problem = timestamp_problem(ts, received_s)
    if problem is not None:
        return Rejected(source, problem[0], problem[1], _jsonable(data), customer)

    out_payload = {str(k): _stringify(v) for k, v in payload.items()}
    out_payload[meter.customer_key] = customer
    if number is not None:
        out_payload[meter.value_key] = str(number)
    return Event(source, meter, customer, identifier or default_identifier(source), ts, number, out_payload)


def judge_adjustment(value: bytes | None, source: Source, meters: MeterBook) -> Cancel | Rejected:
    """:func:`judge_event` for a ``meter-event-adjustments`` record: a :class:`Cancel` or a :class:`Rejected`."""
    data = _parse_object(value, source)
    if isinstance(data, Rejected):
        return data
    name = data.get("event_name")
    if not isinstance(name, str) or not name:
        return Rejected(source, "invalid_event", "event_name must be a non-empty string", _jsonable(data))
    if data.get("type") != "cancel":
        return Rejected(source, "invalid_event", "type must be 'cancel'", _jsonable(data))
    cancel = data.get("cancel")
    identifier = cancel.get("identifier") if isinstance(cancel, dict) else None
    if not _identifier_ok(identifier):
        return Rejected(
            source, "invalid_event", "cancel.identifier must be a string of 1 to 100 characters", _jsonable(data)
        )
    assert isinstance(identifier, str)
    meter = meters.by_event_name(name, source.received_ms)
    if meter is None:
        return Rejected(source, "no_meter", f"No meter was found for event_name {name}.", _jsonable(data))
    return Cancel(source, meter, identifier)


# ---- rules shared with the gateway's synchronous checks (issue 14): one implementation, in the SPEC §3
# order, so a request the gateway refuses is exactly an event the processor would reject, with the same
# code and message.
as_customer = _as_customer


def meter_problem(name: str, meter: Meter | None, customer: str | None) -> tuple[str, str] | None:
    """(Stripe error code, message) when ``meter`` (the one owning ``name``, or None) cannot take an event
    whose customer is ``customer`` (:func:`as_customer` of the payload's mapping key)."""
    if meter is None:
        return "no_meter", f"No active meter was found for event_name {name}."
    if not meter.active:
        return "archived_meter", f"The meter {meter.id} for event_name {name} is inactive."
    if customer is None:
        return "meter_event_no_customer_defined", f"Customer mapping key {meter.customer_key} not found in payload."
    refused = customer_problem(customer)  # one size rule with the gateway, import and upload (processor/limits.py)
    if refused is not None:
        return CUSTOMER_REFUSED, f"Invalid payload[{meter.customer_key}]: the customer id {refused}."
    return None


def timestamp_problem(ts: int, received_s: int) -> tuple[str, str] | None:
    """(Stripe error code, message) when ``ts`` is outside Stripe's window around the received time."""
    if ts < received_s - TIMESTAMP_PAST_S:
        return "timestamp_too_far_in_past", "Timestamp must be within the past 35 days."
    if ts > received_s + TIMESTAMP_FUTURE_S:
        return "timestamp_in_future", "Timestamp must not be more than 5 minutes in the future."
    return None


# ---- the fast path ----------------------------------------------------------------------------------------
# The common record (a valid event whose payload holds only strings and integers) is judged from an orjson
# decode, several times cheaper than the Decimal-parsing decoder above. The fast path only ever *accepts*:
# anything it is not certain about (a float anywhere it looks, an integer beyond 64 bits — orjson gives a
# float —, a surrogate, any rule broken) returns None and the record goes through the full path above, so
# both paths give the same Event for every record (tests/unit/test_validate_fast.py checks this).


def loads_fast(value: bytes | None) -> dict[str, Any] | None:
    """The record as a dict via orjson, or None when the full path must judge it."""
    if value is None or len(value) > MAX_RECORD_BYTES:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return data if type(data) is dict else None


def event_fast(data: dict[str, Any], source: Source, meters: MeterBook) -> Event | None:
    """:func:`judge_event` of a decoded record when it is certainly accepted, else None."""
    name = data.get("event_name")
    payload = data.get("payload")
    if type(name) is not str or not name or type(payload) is not dict:
        return None
    identifier = data.get("identifier")
    if identifier is not None and not (type(identifier) is str and _identifier_ok(identifier)):
        return None
    ts_raw = data.get("timestamp")
    if ts_raw is not None and type(ts_raw) is not int:
        return None
    meter = meters.by_event_name(name, source.received_ms)
    if meter is None or not meter.active:
        return None
    out_payload: dict[str, str] = {}
    for k, v in payload.items():
        t = type(v)
        if t is str:
            out_payload[k] = v
        elif t is int:
            out_payload[k] = str(v)
        elif t is bool:
            out_payload[k] = "true" if v else "false"
        else:
            return None
    customer = _as_customer(payload.get(meter.customer_key))
    if customer is None or customer_problem(customer) is not None:
        return None
    number: int | None = None
    if meter.formula != "count":
        parsed = meter_value(meter, payload)
        if type(parsed) is tuple:
            return None
        assert isinstance(parsed, int)
        number = parsed
    received_s = source.received_ms // 1000
    ts = received_s if ts_raw is None else ts_raw
    if ts < received_s - TIMESTAMP_PAST_S or ts > received_s + TIMESTAMP_FUTURE_S:
        return None
    out_payload[meter.customer_key] = customer
    if number is not None:
        out_payload[meter.value_key] = str(number)
    return Event(source, meter, customer, identifier or default_identifier(source), ts, number, out_payload)


def adjustment_fast(data: dict[str, Any], source: Source, meters: MeterBook) -> Cancel | None:
    """:func:`judge_adjustment` of a decoded record when it is certainly accepted, else None."""
    name = data.get("event_name")
    cancel = data.get("cancel")
    if type(name) is not str or not name or data.get("type") != "cancel" or type(cancel) is not dict:
        return None
    identifier = cancel.get("identifier")
    if not (type(identifier) is str and _identifier_ok(identifier)):
        return None
    meter = meters.by_event_name(name, source.received_ms)
    if meter is None:
        return None
    return Cancel(source, meter, identifier)


def judge_event_record(
    value: bytes | None, data: dict[str, Any] | None, source: Source, meters: MeterBook
) -> Event | Rejected:
    """How the processor judges a ``meter-events`` record: the fast path's answer when it gives one, else
    :func:`judge_event`. ``data`` is :func:`loads_fast` of ``value`` (the engine decodes a batch at once)."""
    judged = event_fast(data, source, meters) if data is not None else None
    return judged or judge_event(value, source, meters)


def judge_adjustment_record(
    value: bytes | None, data: dict[str, Any] | None, source: Source, meters: MeterBook
) -> Cancel | Rejected:
    """:func:`judge_event_record` for a ``meter-event-adjustments`` record."""
    judged = adjustment_fast(data, source, meters) if data is not None else None
    return judged or judge_adjustment(value, source, meters)
