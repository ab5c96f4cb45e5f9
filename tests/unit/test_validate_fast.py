"""The orjson fast path of validation never disagrees with the full path (validate.py's "fast path" section).

The fast path may decline (None) but, when it answers, its Event must equal the full path's exactly; and for
every record the engine's choice (``judge_event_record`` / ``judge_adjustment_record``: the fast answer,
else the full path) must equal the full path alone.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.aggregator.validate import (
    Event,
    Source,
    adjustment_fast,
    event_fast,
    judge_adjustment,
    judge_adjustment_record,
    judge_event,
    judge_event_record,
    loads_fast,
)
from tests.unit.meter_books import R_MS, R_S, validation_book

BOOK = validation_book()
SRC = Source("meter-events", 2, 9, R_MS)
ASRC = Source("meter-event-adjustments", 1, 4, R_MS)

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=8),
    st.sampled_from(["25", "1.0", "-3", "1.5", "abc", "", " 7 ", "1e3", "9" * 17]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=3), scalars, max_size=2))


@st.composite
def event_records(draw: st.DrawFn) -> bytes:
    payload = draw(st.dictionaries(st.sampled_from(["value", "x", "ü", "stripe_customer_id"]), values, max_size=3))
    if draw(st.booleans()):
        payload["stripe_customer_id"] = draw(st.one_of(st.text(max_size=6), st.integers(-5, 5)))
    if draw(st.booleans()):
        payload["value"] = draw(scalars)
    rec: dict[str, object] = {"event_name": draw(st.sampled_from(["api", "cnt", "lst", "off", "nope", "", 3]))}
    if draw(st.integers(0, 9)):
        rec["payload"] = payload
    if draw(st.booleans()):
        rec["identifier"] = draw(st.one_of(st.text(max_size=4), st.just("i" * 101), st.integers(0, 3)))
    if draw(st.booleans()):
        rec["timestamp"] = draw(
            st.one_of(
                st.integers(R_S - 36 * 86_400, R_S + 400), st.floats(allow_nan=False), st.booleans(), st.just(R_S)
            )
        )
    text = json.dumps(rec)
    return draw(st.sampled_from([text.encode(), text.encode() + b" ", b"[" + text.encode() + b"]"]))


def same(a: object, b: object) -> bool:
    if isinstance(a, Event) and isinstance(b, Event):
        return (a.source, a.meter, a.customer, a.identifier, a.timestamp, a.value, a.payload) == (
            b.source,
            b.meter,
            b.customer,
            b.identifier,
            b.timestamp,
            b.value,
            b.payload,
        ) and list(a.payload) == list(b.payload)
    return False


@settings(max_examples=600, deadline=None)
@given(event_records())
def test_fast_event_path_agrees_with_the_full_path(raw: bytes) -> None:
    full = judge_event(raw, SRC, BOOK)
    data = loads_fast(raw)
    fast = event_fast(data, SRC, BOOK) if data is not None else None
    if fast is not None:
        assert same(fast, full), (raw, fast, full)
    chosen = judge_event_record(raw, data, SRC, BOOK)
    assert same(chosen, full) if isinstance(full, Event) else chosen == full, (raw, chosen, full)


def test_fast_path_answers_the_common_event_and_declines_floats_and_big_integers() -> None:
    common = b'{"event_name":"api","payload":{"stripe_customer_id":"cus_1","value":"25","n":3,"b":true}}'
    data = loads_fast(common)
    assert data is not None
    fast = event_fast(data, SRC, BOOK)
    assert fast is not None and same(fast, judge_event(common, SRC, BOOK))
    assert fast.payload == {"stripe_customer_id": "cus_1", "value": "25", "n": "3", "b": "true"}
    for declined in (
        b'{"event_name":"api","payload":{"stripe_customer_id":"cus_1","value":25.0}}',  # Decimal path decides
        b'{"event_name":"api","payload":{"stripe_customer_id":"cus_1","value":1,"x":123456789012345678901234}}',
        b'{"event_name":"api","payload":{"stripe_customer_id":"cus_1","value":"1.5"}}',  # rejected: full path
        b'{"event_name":"api","payload":{"stripe_customer_id":"\\ud800","value":1}}',
        b'{"event_name":"api","payload":{"stripe_customer_id":"cus_1","value":1},"timestamp":1.0}',
    ):
        data = loads_fast(declined)
        assert data is None or event_fast(data, SRC, BOOK) is None, declined


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["api", "cnt", "nope", "", None]),
    st.sampled_from(["cancel", "other", None]),
    st.one_of(st.text(max_size=4), st.just("i" * 101), st.integers(0, 3), st.none()),
    st.booleans(),
)
def test_fast_adjustment_path_agrees_with_the_full_path(name: object, kind: object, ident: object, nest: bool) -> None:
    rec = {"event_name": name, "type": kind, "cancel": {"identifier": ident} if nest else ident}
    raw = json.dumps(rec).encode()
    full = judge_adjustment(raw, ASRC, BOOK)
    data = loads_fast(raw)
    fast = adjustment_fast(data, ASRC, BOOK) if data is not None else None
    if fast is not None:
        assert fast == full
    assert judge_adjustment_record(raw, data, ASRC, BOOK) == full
