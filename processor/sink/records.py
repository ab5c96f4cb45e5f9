"""The sink's input, parsed, and what Stripe is sent for it. Pure: no I/O.

An accepted record (``topics/schemas/accepted.json``) is either an event or a resolved cancellation.
Parsing is strict about what the sink needs (kind, names, identifier, customer, an integer timestamp,
a string payload) because a record the sink cannot express to Stripe must go to the DLQ with a reason
instead of being sent half-right. The record is also kept exactly as read (``raw``) so the DLQ carries
what was on the topic, not our re-encoding of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "AcceptedRecord",
    "cancel_params",
    "iso_timestamp",
    "parse_accepted",
    "v1_event_params",
    "v2_event_params",
]

Kind = Literal["event", "cancel"]


@dataclass(frozen=True, slots=True)
class AcceptedRecord:
    """One value of ``meter-events-accepted``. ``timestamp`` and ``payload`` are set for events only."""

    kind: Kind
    meter_id: str
    event_name: str
    identifier: str
    customer: str
    timestamp: int | None
    payload: dict[str, str]
    raw: dict[str, Any]

    @property
    def is_cancel(self) -> bool:
        return self.kind == "cancel"


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _payload_value(key: str, value: object) -> str:
    # The processor writes strings; an integer is accepted too because Stripe's payload is "string to
    # string" and str(int) is the exact decimal. Floats and booleans have no exact meter value.
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"payload[{key}] must be a string")


def parse_accepted(value: bytes | str | None) -> AcceptedRecord:
    """Parse one accepted record. Raises ``ValueError`` naming what is wrong."""
    if value is None:
        raise ValueError("the record has no value")
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the record is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("the record is not a JSON object")
    kind = data.get("kind")
    if kind not in ("event", "cancel"):
        raise ValueError("kind must be 'event' or 'cancel'")
    meter_id = _text(data, "meter_id")
    event_name = _text(data, "event_name")
    identifier = _text(data, "identifier")
    customer = _text(data, "customer")
    timestamp: int | None = None
    payload: dict[str, str] = {}
    if kind == "event":
        ts = data.get("timestamp")
        if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
            raise ValueError("timestamp must be a non-negative integer (unix seconds)")
        timestamp = ts
        raw_payload = data.get("payload")
        if not isinstance(raw_payload, dict) or not raw_payload:
            raise ValueError("payload must be a non-empty object")
        payload = {str(k): _payload_value(str(k), v) for k, v in raw_payload.items()}
    return AcceptedRecord(
        kind=kind,
        meter_id=meter_id,
        event_name=event_name,
        identifier=identifier,
        customer=customer,
        timestamp=timestamp,
        payload=payload,
        raw=data,
    )


def iso_timestamp(unix_seconds: int) -> str:
    """Stripe v2's timestamp format: ISO 8601 in UTC with milliseconds, e.g. ``2024-05-01T12:00:00.000Z``."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def v1_event_params(record: AcceptedRecord) -> dict[str, Any]:
    """``POST /v1/billing/meter_events`` params (timestamp in unix seconds)."""
    return {
        "event_name": record.event_name,
        "identifier": record.identifier,
        "payload": dict(record.payload),
        "timestamp": record.timestamp,
    }


def v2_event_params(record: AcceptedRecord) -> dict[str, Any]:
    """One element of ``POST /v2/billing/meter_event_stream`` ``events`` (timestamp in ISO 8601)."""
    if record.timestamp is None:
        raise ValueError("a cancellation is not a stream event")
    return {
        "event_name": record.event_name,
        "identifier": record.identifier,
        "payload": dict(record.payload),
        "timestamp": iso_timestamp(record.timestamp),
    }


def cancel_params(record: AcceptedRecord) -> dict[str, Any]:
    """Meter event adjustment params, the same for v1 and v2: cancel the event with this identifier."""
    return {"event_name": record.event_name, "type": "cancel", "cancel": {"identifier": record.identifier}}
