"""Hand-computed examples for every rule of docs/semantics.md, run against the reference model (pure, fast)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.model.builders import MISSING, Log, meter_version
from tests.model.reference import (
    ADJUSTMENTS,
    DAY_MS,
    EVENTS,
    MeterVersion,
    ModelResult,
    Rec,
    run_model,
    significant_digits,
    whole_number,
)
from tests.model.strategies import Scenario, interleavings, phase_splits, scenarios

T = 1_700_006_400_000  # 2023-11-15 00:00:00 UTC, a day boundary
TS = T // 1000
H = 3_600_000
SUM = meter_version(T - H)  # mtr_1 / "api" / sum / raw, in effect before every event below


def run(log: Log, *meters: MeterVersion) -> ModelResult:
    return run_model(list(meters) or [SUM], log.records)


def outcome(log: Log, *meters: MeterVersion) -> list[str]:
    result = run(log, *meters)
    return [result.outcome[r.key] for r in log.records]


def one(value: Any = 1, *meters: MeterVersion, **kwargs: Any) -> str:
    log = Log()
    log.event(T, value=value, **kwargs)
    return outcome(log, *meters)[0]


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"\xff\xfe\x00",
        b"",
        b"[1, 2]",
        b'"text"',
        b"null",
        b'{"event_name": 5, "payload": {}}',
        b'{"event_name": "", "payload": {}}',
        b'{"payload": {}}',
        b'{"event_name": "api", "payload": "x"}',
        b'{"event_name": "api"}',
        b'{"event_name": "api", "payload": {}, "identifier": ""}',
        b'{"event_name": "api", "payload": {}, "identifier": 7}',
        b'{"event_name": "api", "payload": {}, "timestamp": "1700000000"}',
        b'{"event_name": "api", "payload": {}, "timestamp": true}',
        b'{"event_name": "api", "payload": {}, "timestamp": 1700000000.5}',
        b'{"event_name": "nope", "payload": {}, "timestamp": "1"}',  # invalid_event before no_meter
    ],
)
def test_invalid_event(raw: bytes) -> None:
    log = Log()
    log.raw(EVENTS, T, raw)
    assert outcome(log) == ["rejected:invalid_event"]


def test_null_identifier_and_timestamp_count_as_absent() -> None:
    log = Log()
    first = log.event(T + 999, identifier=None, timestamp=None)
    log.event(T + 1000, identifier=None, timestamp=None)
    log.event(T + 1001, identifier="ms-meter-events-0-0")  # the derived identifier of the first
    result = run(log)
    assert [result.outcome[r.key] for r in log.records] == ["accepted", "accepted", "duplicate"]
    assert result.accepted[first].identifier == "ms-meter-events-0-0"
    assert result.accepted[first].timestamp == TS
    log = Log()
    log.cancel(T, None)  # but a cancellation's identifier is required
    assert outcome(log) == ["rejected:invalid_event"]


def test_identifier_length_limit() -> None:
    assert one(identifier="x" * 100) == "accepted"
    assert one(identifier="x" * 101) == "rejected:invalid_event"
    assert one(identifier="é" * 100) == "accepted"  # characters, not UTF-8 bytes
    assert one(identifier="é" * 101) == "rejected:invalid_event"
    log = Log()
    log.raw(
        EVENTS,
        T,
        (
            '{"event_name": "api", "payload": {"stripe_customer_id": "c", "value": 1}, "identifier": "%s"}'
            % ("é" * 100)
        ).encode(),
    )
    assert outcome(log) == ["accepted"]


def test_validation_order() -> None:
    inactive = meter_version(T - H, status="inactive")
    # no_meter before archived_meter / customer / value / timestamp
    assert one("abc", event_name="other", customer=MISSING, timestamp=0) == "rejected:no_meter"
    # archived_meter before customer
    assert one("abc", inactive, customer=MISSING) == "rejected:archived_meter"
    # customer before value
    assert one("abc", customer=MISSING) == "rejected:meter_event_no_customer_defined"
    # value before digits/timestamps
    assert one("1.5", timestamp=0) == "rejected:meter_event_invalid_value"
    # digits before timestamps
    assert one(1234567890123456, timestamp=TS + 10_000) == "rejected:meter_event_value_too_many_digits"
    assert one(1, timestamp=0) == "rejected:timestamp_too_far_in_past"
    assert one(1, timestamp=TS + 10_000) == "rejected:timestamp_in_future"


@pytest.mark.parametrize(
    ("customer", "expected"),
    [("cus_1", "accepted"), (42, "accepted"), ("", "rejected:meter_event_no_customer_defined")]
    + [(bad, "rejected:meter_event_no_customer_defined") for bad in (True, None, MISSING, ["c"], {"id": "c"}, 1.5)],
)
def test_customer_mapping(customer: Any, expected: str) -> None:
    assert one(customer=customer) == expected


def test_custom_customer_and_value_keys() -> None:
    custom = meter_version(T - H, customer_key="tenant", value_key="bytes")
    log = Log()
    log.event(T, customer="t1", value=5, customer_key="tenant", value_key="bytes")
    log.event(T, customer="t1", value=5)  # default keys: not this meter's
    assert outcome(log, custom) == ["accepted", "rejected:meter_event_no_customer_defined"]
    log = Log()
    log.event(T, customer="t1", value=5, customer_key="tenant")  # value under "value", meter reads "bytes"
    assert outcome(log, custom) == ["rejected:meter_event_invalid_value"]
    assert run(Log(), custom).hour == {}


@pytest.mark.parametrize(
    ("value", "number"),
    [(25, 25), (-3, -3), ("25", 25), ("-3", -3), ("1.0", 1), ("+7", 7), ("1e3", 1000), (" 12\t", 12), (25.0, 25)]
    + [
        (bad, None) for bad in ("1.5", "abc", "", " ", "1,5", "0x10", "NaN", "Infinity", True, None, [1], {"a": 1}, 1.5)
    ],
)
def test_whole_numbers(value: Any, number: int | None) -> None:
    assert whole_number(value) == number
    assert one(value) == ("accepted" if number is not None else "rejected:meter_event_invalid_value")


def test_json_number_forms_are_exact() -> None:
    log = Log()
    log.raw(EVENTS, T, b'{"event_name": "api", "payload": {"stripe_customer_id": "c", "value": 1e3}}')
    log.raw(EVENTS, T, b'{"event_name": "api", "payload": {"stripe_customer_id": "c", "value": 2.50e1}}')
    log.raw(EVENTS, T, b'{"event_name": "api", "payload": {"stripe_customer_id": "c", "value": 1.0000000000000001}}')
    result = run(log)
    assert [result.outcome[r.key] for r in log.records] == [
        "accepted",
        "accepted",
        "rejected:meter_event_invalid_value",
    ]
    assert result.hour[("mtr_1", "c")] == {TS: 1025}


def test_missing_value() -> None:
    assert one(MISSING) == "rejected:meter_event_invalid_value"
    assert one(None) == "rejected:meter_event_invalid_value"


def test_significant_digits() -> None:
    assert significant_digits(0) == 1
    assert significant_digits(10**18) == 1
    assert significant_digits(-1234567890123456) == 16
    assert significant_digits(123456789012345 * 10**30) == 15
    assert one(123456789012345) == "accepted"
    assert one(1234567890123456) == "rejected:meter_event_value_too_many_digits"
    assert one("-1234567890123456") == "rejected:meter_event_value_too_many_digits"
    assert one(10**20) == "accepted"
    assert one("1e25") == "accepted"


def test_huge_values_add_exactly() -> None:
    log = Log()
    log.event(T, value=10**20)
    log.event(T, value=123456789012345 * 10**10)
    log.event(T, value=-1)
    assert run(log).day[("mtr_1", "cus_1")] == {TS: 10**20 + 123456789012345 * 10**10 - 1}


def test_count_ignores_value() -> None:
    count = meter_version(T - H, formula="count")
    for value in (MISSING, "abc", "1.5", 1234567890123456, None, [1]):
        assert one(value, count) == "accepted", value
    log = Log()
    log.event(T, value="abc")
    log.event(T + 1, value=MISSING)
    assert run(log, count).hour == {("mtr_1", "cus_1"): {TS: 2}}


def test_timestamp_edges() -> None:
    r = T + 999  # received time in ms is floored to seconds
    log = Log()
    log.event(r, timestamp=TS - 35 * 86_400)
    log.event(r, timestamp=TS - 35 * 86_400 - 1)
    log.event(r, timestamp=TS + 300)
    log.event(r, timestamp=TS + 301)
    log.event(r)  # missing timestamp = floor(R / 1000)
    result = run(log)
    assert [result.outcome[x.key] for x in log.records] == [
        "accepted",
        "rejected:timestamp_too_far_in_past",
        "accepted",
        "rejected:timestamp_in_future",
        "accepted",
    ]
    assert result.accepted[log.records[4].key].timestamp == TS


# ------------------------------------------------------------------------------------------ duplicates


def test_duplicate_window_is_inclusive() -> None:
    log = Log()
    log.event(T, identifier="a", value=1)
    log.event(T + DAY_MS, identifier="a", value=10)  # exactly 24 h: duplicate
    log.event(T + DAY_MS + 1, identifier="a", value=100)  # 24 h + 1 ms: free again
    log.event(T + 2 * DAY_MS + 1, identifier="a", value=1000)  # exactly 24 h after the new holder
    log.event(T + 2 * DAY_MS + 2, identifier="a", value=10000, timestamp=TS + 2 * 86_400)
    result = run(log)
    assert [result.outcome[r.key] for r in log.records] == [
        "accepted",
        "duplicate",
        "accepted",
        "duplicate",
        "accepted",
    ]
    assert result.hour[("mtr_1", "cus_1")] == {TS: 1, TS + 86_400: 100, TS + 2 * 86_400: 10000}


def test_rejected_events_claim_nothing() -> None:
    log = Log()
    log.event(T, identifier="a", value="abc")
    log.event(T + 1, identifier="a", value=2)
    assert outcome(log) == ["rejected:meter_event_invalid_value", "accepted"]


def test_identifier_pairs_are_per_event_name() -> None:
    other = meter_version(T - H, meter_id="mtr_2", event_name="other")
    log = Log()
    log.event(T, identifier="a")
    log.event(T, "other", identifier="a")
    assert outcome(log, SUM, other) == ["accepted", "accepted"]


def test_missing_identifier_is_derived_from_the_record() -> None:
    log = Log()
    log.event(T, partition=2)
    log.event(T, partition=2)
    log.event(T + 1, identifier="ms-meter-events-2-0")  # collides with the derived identifier of the first
    result = run(log)
    assert [result.outcome[r.key] for r in log.records] == ["accepted", "accepted", "duplicate"]
    assert result.accepted[(EVENTS, 2, 0)].identifier == "ms-meter-events-2-0"


def test_cancelled_event_still_holds_its_identifier() -> None:
    log = Log()
    log.event(T, identifier="a")
    log.cancel(T + H, "a")
    log.event(T + 2 * H, identifier="a")
    assert outcome(log) == ["accepted", "cancel", "duplicate"]
    assert run(log).hour.get(("mtr_1", "cus_1"), {}) == {}


# ------------------------------------------------------------------------------------------ cancellations


def test_cancel_after_event() -> None:
    for delay, expected in ((0, "cancel"), (DAY_MS, "cancel"), (DAY_MS + 1, "cancel_pending")):
        log = Log()
        log.event(T, identifier="a", value=5)
        log.cancel(T + delay, "a")
        result = run(log)
        assert result.outcome[log.records[1].key] == expected, delay
        assert result.hour.get(("mtr_1", "cus_1"), {}) == ({} if expected == "cancel" else {TS: 5})


def test_cancel_before_event() -> None:
    for delay, expected in ((1, "cancel"), (DAY_MS, "cancel"), (DAY_MS + 1, "cancel_pending")):
        log = Log()
        log.cancel(T, "a")
        log.event(T + delay, identifier="a", value=5)
        result = run(log)
        assert result.outcome[log.records[0].key] == expected, delay
        assert (log.records[1].key in result.cancelled) == (expected == "cancel")


def test_cancel_twice_is_a_noop() -> None:
    log = Log()
    log.event(T, identifier="a", value=5)
    log.event(T, identifier="b", value=7)
    log.cancel(T + 1, "a")
    log.cancel(T + 2, "a")
    result = run(log)
    assert [result.outcome[r.key] for r in log.records[2:]] == ["cancel", "cancel_noop"]
    assert result.hour[("mtr_1", "cus_1")] == {TS: 7}


def test_two_pending_cancellations_cancel_once() -> None:
    log = Log()
    log.cancel(T, "a")
    log.cancel(T + 1, "a")
    log.event(T + 2, identifier="a")
    assert outcome(log) == ["cancel", "cancel_noop", "accepted"]


def test_cancel_prefers_the_event_received_before_it() -> None:
    log = Log()
    first = log.event(T, identifier="a", value=1)
    second = log.event(T + DAY_MS + 1, identifier="a", value=10, timestamp=TS + 86_400)  # identifier free again
    log.cancel(T + DAY_MS, "a")  # both are within 24 h: the earlier-received one (before the cancel) is the target
    result = run(log)
    assert result.cancelled == {first}
    assert result.outcome[second] == "accepted"
    assert result.day[("mtr_1", "cus_1")] == {TS + 86_400: 10}


def test_cancel_targets_the_earliest_later_event_when_none_before() -> None:
    log = Log()
    log.cancel(T, "a")
    first = log.event(T + H, identifier="a", value=1)
    log.event(T + 2 * H, identifier="a", value=10)  # duplicate of first
    result = run(log)
    assert result.cancelled == {first}
    assert result.hour.get(("mtr_1", "cus_1"), {}) == {}


def test_cancellation_validation() -> None:
    inactive = meter_version(T, status="inactive")
    log = Log()
    log.event(T - 1, identifier="a", value=5)
    log.cancel(T + 1, "a")  # the meter is inactive by now: still applied
    log.cancel(T + 2, "a", event_name="unknown")
    log.cancel(T + 3, "")
    log.cancel(T + 4, "x" * 101)
    log.cancel(T + 5, MISSING)
    log.cancel(T + 6, "a", kind="delete")
    log.cancel(T + 7, 12)
    log.raw(ADJUSTMENTS, T + 8, b"nope")
    log.raw(ADJUSTMENTS, T + 9, b'{"event_name": "api", "type": "cancel"}')
    log.raw(ADJUSTMENTS, T + 10, b'{"event_name": "api", "type": "cancel", "cancel": "a"}')
    assert outcome(log, SUM, inactive) == ["accepted", "cancel", "rejected:no_meter"] + ["rejected:invalid_event"] * 8


def test_cancel_before_the_meter_exists_is_no_meter() -> None:
    log = Log()
    log.cancel(T, "a")
    log.event(T + H, identifier="a")
    assert outcome(log, meter_version(T + 1)) == ["rejected:no_meter", "accepted"]


# ------------------------------------------------------------------------------------------ pre-aggregation


@pytest.mark.parametrize("window", ["hour", "day"])
def test_preaggregated_overwrite_and_fallback(window: str) -> None:
    for formula, survivor_value, fallback_value in (("sum", 7, 5), ("count", 1, 1), ("last", 7, 5)):
        m = meter_version(T - H, formula=formula, window=window)
        log = Log()
        log.event(T, identifier="a", value=5, timestamp=TS + 60)
        log.event(T + 10, identifier="b", value=7, timestamp=TS + 30)  # received later: overwrites
        result = run(log, m)
        assert result.hour[("mtr_1", "cus_1")] == {TS: survivor_value}, formula
        assert result.day[("mtr_1", "cus_1")] == {TS: survivor_value}, formula
        log.cancel(T + 20, "b")  # the survivor goes: the previous one takes its place
        result = run(log, m)
        assert result.hour[("mtr_1", "cus_1")] == {TS: fallback_value}, formula
        log.cancel(T + 30, "a")
        assert run(log, m).hour.get(("mtr_1", "cus_1"), {}) == {}


def test_day_window_survivor_lands_in_its_own_hour() -> None:
    m = meter_version(T - H, formula="sum", window="day")
    log = Log()
    log.event(T + 3 * H, identifier="a", value=5, timestamp=TS + 3600)
    log.event(T + 3 * H + 10, identifier="b", value=7, timestamp=TS + 7200)
    log.event(T + 3 * H + 20, identifier="c", value=9, timestamp=TS - 1)  # previous day: its own window
    result = run(log, m)
    assert result.hour[("mtr_1", "cus_1")] == {TS + 7200: 7, TS - 3600: 9}
    assert result.day[("mtr_1", "cus_1")] == {TS: 7, TS - 86_400: 9}


def test_hour_window_day_totals_sum_the_hour_survivors() -> None:
    m = meter_version(T - H, formula="sum", window="hour")
    log = Log()
    log.event(T + 2 * H, identifier="a", value=5, timestamp=TS + 10)
    log.event(T + 2 * H + 1, identifier="b", value=7, timestamp=TS + 3599)
    log.event(T + 2 * H + 2, identifier="c", value=9, timestamp=TS + 3600)  # the next hour (boundary)
    log.event(T + 2 * H + 3, identifier="d", value=11, timestamp=TS + 3600, customer="cus_2")  # another customer
    result = run(log, m)
    assert result.hour[("mtr_1", "cus_1")] == {TS: 7, TS + 3600: 9}
    assert result.day[("mtr_1", "cus_1")] == {TS: 16}
    assert result.day[("mtr_1", "cus_2")] == {TS: 11}


def test_received_rank_not_timestamp_picks_the_survivor() -> None:
    m = meter_version(T - H, formula="sum", window="hour")
    log = Log()
    log.event(T + 5, identifier="a", value=5, timestamp=TS + 1, partition=1)
    log.event(T + 1, identifier="b", value=7, timestamp=TS + 50, partition=0)
    log.event(T + 5, identifier="c", value=9, timestamp=TS + 2, partition=0)  # same R as "a": partition decides
    log.event(T + 5, identifier="d", value=11, timestamp=TS + 3, partition=1)  # same R and partition: offset
    assert run(log, m).hour[("mtr_1", "cus_1")] == {TS: 11}


def test_last_formula_and_ties() -> None:
    m = meter_version(T - H, formula="last")
    log = Log()
    log.event(T + 2 * H, identifier="a", value=5, timestamp=TS + 100)
    log.event(T + 2 * H + 1, identifier="b", value=7, timestamp=TS + 50)  # received later, an earlier timestamp
    log.event(T + 2 * H + 2, identifier="c", value=-9, timestamp=TS + 4000)
    log.event(T + 2 * H + 3, identifier="d", value=3, timestamp=TS + 4000)  # tie on timestamp: the later received
    result = run(log, m)
    assert result.hour[("mtr_1", "cus_1")] == {TS: 5, TS + 3600: 3}
    assert result.day[("mtr_1", "cus_1")] == {TS: 3}


def test_negative_totals_are_reported() -> None:
    log = Log()
    log.event(T, value=-3)
    log.event(T, value="-4")
    log.event(T, value=2)
    assert run(log).hour[("mtr_1", "cus_1")] == {TS: -5}


def test_customers_index_holds_the_latest_timestamp() -> None:
    log = Log()
    log.event(T, timestamp=TS + 100, identifier="a")
    log.event(T + 1, timestamp=TS - 5000, identifier="b")
    log.cancel(T + 2, "a")  # a cancelled event was still seen
    log.event(T, customer="cus_2", value="bad")
    assert run(log).customers == {"mtr_1": {"cus_1": TS + 100}}


# ------------------------------------------------------------------------------------------ meters over time


def test_inactive_meter() -> None:
    assert one(1, meter_version(T - H, status="inactive")) == "rejected:archived_meter"


def test_meter_lifecycle_over_received_time() -> None:
    versions = [
        meter_version(T),
        meter_version(T + H, status="inactive"),
        meter_version(T + 2 * H),
    ]
    log = Log()
    for r in (T - 1, T, T + H - 1, T + H, T + 2 * H - 1, T + 2 * H):
        log.event(r, value=1, timestamp=TS)
    assert outcome(log, *versions) == [
        "rejected:no_meter",
        "accepted",
        "accepted",
        "rejected:archived_meter",
        "rejected:archived_meter",
        "accepted",
    ]


# ------------------------------------------------------------------------------------------ processing order


def test_order_must_keep_partition_order() -> None:
    log = Log()
    log.event(T)
    log.event(T + 1)
    with pytest.raises(ValueError, match="offset order"):
        run_model([SUM], log.records, order=list(reversed(log.records)))


def test_cross_topic_interleaving_example() -> None:
    log = Log()
    a = log.event(T, identifier="a", value=5, partition=0)
    log.event(T + H, identifier="b", value=7, partition=0)
    log.cancel(T - H, "a", partition=1)  # received before its event
    events_first = log.records
    cancel_first = [log.records[2], log.records[0], log.records[1]]
    results = [run_model([SUM], log.records, order=o) for o in (events_first, cancel_first)]
    assert results[0] == results[1] == run(log)
    assert results[0].cancelled == {a}
    assert results[0].hour == {("mtr_1", "cus_1"): {TS + 3600: 7}}


@settings(max_examples=200, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_interleaving_does_not_change_the_result(scenario: Scenario, data: st.DataObject) -> None:
    expected = run_model(scenario.meters, scenario.records)
    order = data.draw(interleavings(scenario.records))
    assert run_model(scenario.meters, scenario.records, order=order) == expected


@given(data=st.data())
def test_interleavings_keep_partition_order(data: st.DataObject) -> None:
    recs = [Rec(topic, p, o, T + o, b"") for topic in (EVENTS, ADJUSTMENTS) for p in range(3) for o in range(4)]
    order = data.draw(interleavings(recs))
    assert sorted(order, key=lambda r: r.key) == sorted(recs, key=lambda r: r.key)
    for topic in (EVENTS, ADJUSTMENTS):
        for p in range(3):
            assert [r.offset for r in order if (r.topic, r.partition) == (topic, p)] == list(range(4))


@settings(max_examples=100, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_phased_delivery_does_not_change_the_result(scenario: Scenario, data: st.DataObject) -> None:
    phases = data.draw(phase_splits(scenario.records))
    assert sorted(r.key for p in phases for r in p) == sorted(r.key for r in scenario.records)
    order = [r for phase in phases for r in data.draw(interleavings(phase))]
    assert run_model(scenario.meters, scenario.records, order=order) == run_model(scenario.meters, scenario.records)
