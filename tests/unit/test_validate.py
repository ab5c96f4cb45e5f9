"""SPEC §3 validation order and codes, without a broker."""

from __future__ import annotations

import json

import pytest

from processor.aggregator.validate import Cancel, Event, Rejected, Source, judge_adjustment, judge_event
from processor.meters.book import MeterBook
from processor.meters.model import Meter
from tests.unit.meter_books import R_MS, R_S, validation_book


def run(value: object, *, raw: bytes | None = None) -> Event | Rejected:
    data = raw if raw is not None else json.dumps(value).encode()
    return judge_event(data, Source("meter-events", 0, 7, R_MS), validation_book())


def code(value: object, **kw: bytes) -> str:
    result = run(value, **kw)
    return result.code if isinstance(result, Rejected) else "ok"


def ev(name: str = "api", **payload: object) -> dict[str, object]:
    return {"event_name": name, "payload": {"stripe_customer_id": "cus_1", "value": 1, **payload}}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (ev(), "ok"),
        ([1, 2], "invalid_event"),
        ({"payload": {}}, "invalid_event"),
        ({"event_name": "", "payload": {}}, "invalid_event"),
        ({"event_name": "api", "payload": "x"}, "invalid_event"),
        ({**ev(), "identifier": ""}, "invalid_event"),
        ({**ev(), "identifier": "x" * 101}, "invalid_event"),
        ({**ev(), "timestamp": "123"}, "invalid_event"),
        ({**ev(), "timestamp": True}, "invalid_event"),
        (ev("unknown"), "no_meter"),
        (ev("late"), "no_meter"),  # created after this record was received
        (ev("off"), "archived_meter"),
        ({"event_name": "off", "payload": {}}, "archived_meter"),  # archived is checked before the customer
        ({"event_name": "api", "payload": {"value": 1}}, "meter_event_no_customer_defined"),
        ({"event_name": "api", "payload": {"stripe_customer_id": "", "value": 1}}, "meter_event_no_customer_defined"),
        ({"event_name": "api", "payload": {"stripe_customer_id": "c"}}, "meter_event_invalid_value"),
        (ev(value="1.5"), "meter_event_invalid_value"),
        (ev(value=True), "meter_event_invalid_value"),
        (ev(value="abc", stripe_customer_id=""), "meter_event_no_customer_defined"),
        (ev(value="1.0"), "ok"),
        (ev(value=1234567890123456), "meter_event_value_too_many_digits"),
        (ev(value=10**20), "ok"),
        # issue 13: one rule with the gateway and imports (processor/limits.py, aggregator/values.py)
        (ev(value="\u0665"), "meter_event_invalid_value"),  # Arabic-Indic five is not 5
        (ev(value="\uff15"), "meter_event_invalid_value"),  # nor is a full-width 5
        (ev(value="1E400"), "meter_event_value_too_many_digits"),  # 401 digits
        (ev(value="1E59"), "ok"),  # 60 digits in all, one significant
        (ev(value="1E60"), "meter_event_value_too_many_digits"),
        (ev(stripe_customer_id="c" * 255), "ok"),
        (ev(stripe_customer_id="c" * 256), "invalid_event"),
        (ev(stripe_customer_id="c" * 400_000), "invalid_event"),
        (ev(stripe_customer_id="c\u0000"), "invalid_event"),
        ({**ev(), "identifier": "id\u0000"}, "invalid_event"),
        (ev("cnt", value="abc"), "ok"),  # count never reads the value
        ({"event_name": "cnt", "payload": {"stripe_customer_id": "c"}}, "ok"),
        ({**ev(value="1.5"), "timestamp": 1}, "meter_event_invalid_value"),  # value before timestamp
        ({**ev(), "timestamp": R_S - 35 * 86400}, "ok"),
        ({**ev(), "timestamp": R_S - 35 * 86400 - 1}, "timestamp_too_far_in_past"),
        ({**ev(), "timestamp": R_S + 300}, "ok"),
        ({**ev(), "timestamp": R_S + 301}, "timestamp_in_future"),
    ],
)
def test_validation_order_and_codes(value: object, expected: str) -> None:
    assert code(value) == expected


@pytest.mark.parametrize("raw", [b"not json", b"\xff\xfe", b"", b"[" * 100_000])
def test_garbage_is_invalid_event(raw: bytes) -> None:
    assert code(None, raw=raw) == "invalid_event"


def test_accepted_event_is_normalised() -> None:
    result = run({"event_name": "api", "payload": {"stripe_customer_id": 42, "value": " 25.0", "region": "eu"}})
    assert isinstance(result, Event)
    assert result.customer == "42"
    assert result.value == 25
    assert result.timestamp == R_S
    assert result.identifier == "ms-meter-events-0-7"
    assert result.payload == {"stripe_customer_id": "42", "value": "25", "region": "eu"}


def test_adjustments() -> None:
    src = Source("meter-event-adjustments", 1, 3, R_MS)
    ok = judge_adjustment(b'{"event_name":"api","type":"cancel","cancel":{"identifier":"a"}}', src, validation_book())
    assert isinstance(ok, Cancel) and ok.identifier == "a" and ok.meter.id == "mtr_sum"
    for bad, expected in [
        (b"nope", "invalid_event"),
        (b'{"event_name":"api","type":"void","cancel":{"identifier":"a"}}', "invalid_event"),
        (b'{"event_name":"api","type":"cancel","cancel":{}}', "invalid_event"),
        (b'{"event_name":"zzz","type":"cancel","cancel":{"identifier":"a"}}', "no_meter"),
    ]:
        result = judge_adjustment(bad, src, validation_book())
        assert isinstance(result, Rejected) and result.code == expected
    # cancellations of an inactive meter's events still apply (docs/semantics.md)
    off = judge_adjustment(b'{"event_name":"off","type":"cancel","cancel":{"identifier":"a"}}', src, validation_book())
    assert isinstance(off, Cancel)


def test_meter_versions_follow_received_time() -> None:
    b = MeterBook()
    m = Meter("mtr_1", "One", "one", "sum", created=1)
    b.add(1000, m)
    b.add(2000, m.deactivated(2))
    b.add(3000, m.reactivated(3))
    assert b.by_event_name("one", 999) is None
    assert b.by_event_name("one", 1500).active  # type: ignore[union-attr]
    assert not b.by_event_name("one", 2500).active  # type: ignore[union-attr]
    assert b.by_event_name("one", 3000).active  # type: ignore[union-attr]
    assert b.add_record(5, b"garbage") is None
