"""Parsing accepted records and the Stripe params made from them."""

from __future__ import annotations

import json

import pytest

from processor.sink.records import cancel_params, iso_timestamp, parse_accepted, v1_event_params, v2_event_params

EVENT = {
    "kind": "event",
    "meter_id": "mtr_1",
    "event_name": "api_calls",
    "identifier": "id-1",
    "customer": "cus_1",
    "timestamp": 1714564800,
    "payload": {"stripe_customer_id": "cus_1", "value": "25"},
    "received_at": 1714564800123,
    "source": "meter-events/0/7",
}
CANCEL = {k: v for k, v in EVENT.items() if k not in ("timestamp", "payload")} | {"kind": "cancel"}


def test_event_round_trip_to_v1_and_v2_params() -> None:
    record = parse_accepted(json.dumps(EVENT).encode())
    assert not record.is_cancel and record.raw == EVENT
    assert v1_event_params(record) == {
        "event_name": "api_calls",
        "identifier": "id-1",
        "payload": {"stripe_customer_id": "cus_1", "value": "25"},
        "timestamp": 1714564800,
    }
    assert v2_event_params(record)["timestamp"] == "2024-05-01T12:00:00.000Z"


def test_cancellation_params_are_stripe_adjustments() -> None:
    record = parse_accepted(json.dumps(CANCEL))
    assert record.is_cancel and record.timestamp is None
    assert cancel_params(record) == {"event_name": "api_calls", "type": "cancel", "cancel": {"identifier": "id-1"}}
    with pytest.raises(ValueError):
        v2_event_params(record)


def test_integer_payload_values_become_exact_decimal_strings() -> None:
    record = parse_accepted(json.dumps(EVENT | {"payload": {"stripe_customer_id": "cus_1", "value": 10**15 - 1}}))
    assert record.payload["value"] == "999999999999999"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "no value"),
        (b"\xff", "not JSON"),
        (b"[1]", "not a JSON object"),
        (json.dumps(EVENT | {"kind": "other"}), "kind"),
        (json.dumps(EVENT | {"identifier": ""}), "identifier"),
        (json.dumps(EVENT | {"timestamp": 1.5}), "timestamp"),
        (json.dumps(EVENT | {"timestamp": True}), "timestamp"),
        (json.dumps(EVENT | {"payload": {}}), "payload"),
        (json.dumps(EVENT | {"payload": {"value": 1.5}}), "payload[value]"),
        (json.dumps(EVENT | {"payload": {"value": True}}), "payload[value]"),
    ],
)
def test_malformed_records_are_refused_with_a_reason(value: bytes | str | None, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("[", r"\[")):
        parse_accepted(value)


def test_iso_timestamp_is_utc() -> None:
    assert iso_timestamp(0) == "1970-01-01T00:00:00.000Z"
