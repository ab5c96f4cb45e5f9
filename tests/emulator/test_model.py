"""The emulator's counting against a naive model (hypothesis): random events, duplicates, cancellations
and clock moves, then every summary compared with a brute-force recomputation from the event list.
Pure: drives :class:`Emulator` directly with a fake clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from processor.emulator.clock import Clock
from processor.emulator.state import Emulator, EventInput
from processor.emulator.values import ValueProblem, parse_value
from processor.wire.times import format_iso, parse_iso

H, D = 3600, 86400
START = 1_800_000_000 // D * D + 12 * H


@dataclass
class Naive:
    identifier: str
    customer: str
    value: int
    ts: int
    received: float
    seq: int
    cancelled: bool = False


IDS = ["i1", "i2", "i3", "i4", "i5"]
# Timestamps cluster on a few instants around START so events share minutes, hours and days (where
# ``last`` recomputation and pre-aggregated survivors matter); some are spread out.
OFFSETS = st.sampled_from([0, -1, -59, -60, -61, -H + 1, -H, -H - 1, -5 * H, -D + 1, -D, -D - 1]) | st.integers(
    -3 * D, 0
)
ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("send"), st.sampled_from(IDS), st.sampled_from(["cus_a", "cus_b"]), st.integers(-50, 50), OFFSETS
        ),
        st.tuples(st.just("cancel"), st.sampled_from(IDS)),
        st.tuples(st.just("advance"), st.sampled_from([1, 600, 3 * H, D - 1, D, D + 1, 20 * D])),
    ),
    max_size=40,
)


@pytest.mark.parametrize("formula", ["sum", "count", "last"])
@pytest.mark.parametrize("window", [None, "hour", "day"])
@settings(max_examples=300, deadline=None)
# the latest event of an hour and of a day removed, the runner-up in the same last minute
@example(script=[("send", "i1", "cus_a", 5, -1), ("send", "i2", "cus_a", 9, -59), ("cancel", "i1")], ranges=[])
@example(script=[("send", "i1", "cus_a", 5, -59), ("send", "i2", "cus_a", 9, -1), ("cancel", "i2")], ranges=[])
@given(
    script=ops,
    ranges=st.lists(st.tuples(st.integers(-3 * D // 60, 3 * D // 60), st.integers(1, 4 * D // 60)), max_size=6),
)
def test_summaries_match_naive_model(
    formula: str, window: str | None, script: list[tuple[object, ...]], ranges: list[tuple[int, int]]
) -> None:
    now = [float(START)]
    emu = Emulator(clock=Clock(wall=lambda: now[0]))
    params = {"display_name": "M", "event_name": "m", "default_aggregation": {"formula": formula}}
    if window:
        params["event_time_window"] = window
    meter = emu.meters.create(params, START)
    ledger = emu.ledger(meter)
    model: list[Naive] = []
    seq = 0
    for op in script:
        if op[0] == "advance":
            now[0] += op[1]  # type: ignore[operator]
            continue
        holders = [e for e in model if e.identifier == op[1]]
        holder = holders[-1] if holders else None
        if op[0] == "send":
            _, ident, customer, value, offset = op
            ts = START + offset  # type: ignore[operator]
            emu.record_event(
                EventInput("m", {"stripe_customer_id": customer, "value": str(value)}, ident, ts),  # type: ignore[arg-type]
                source="test",
                synchronous=False,
            )
            if ts < int(now[0]) - 35 * D or (holder is not None and now[0] - holder.received < D):
                # too old, or a duplicate: not counted
                continue
            seq += 1
            model.append(Naive(ident, customer, value, ts, now[0], seq))  # type: ignore[arg-type]
        else:
            emu.cancel_event("m", op[1], source="test")  # type: ignore[arg-type]
            if holder is not None and now[0] - holder.received <= D:
                holder.cancelled = True

    def surviving(customer: str) -> list[Naive]:
        alive = [e for e in model if e.customer == customer and not e.cancelled]
        if window is None:
            return alive
        width = H if window == "hour" else D
        latest: dict[int, Naive] = {}
        for e in alive:  # in received order: the last one per window wins
            latest[e.ts - e.ts % width] = e
        return list(latest.values())

    def naive_value(events: list[Naive]) -> int:
        if formula == "count":
            return len(events)
        if formula == "last":
            return max(events, key=lambda e: (e.ts, e.seq)).value if events else 0
        return sum(e.value for e in events)

    assert [(e.identifier, e.cancelled) for e in ledger.events] == [(e.identifier, e.cancelled) for e in model]
    base = START // 60 * 60
    for customer in ("cus_a", "cus_b"):
        alive = surviving(customer)
        for lo_min, length in [(-3 * D // 60, 6 * D // 60), *ranges]:
            lo = base + lo_min * 60
            hi = lo + length * 60
            expected = naive_value([e for e in alive if lo <= e.ts < hi])
            assert ledger.total(customer, lo, hi) == expected, (customer, lo, hi)
        for width in (H, D):
            lo, hi = 0, 2**40 // D * D
            buckets: dict[int, list[Naive]] = {}
            for e in alive:
                buckets.setdefault(e.ts - e.ts % width, []).append(e)
            assert ledger.window_starts(customer, width, lo, hi) == sorted(buckets)
            for start, events in buckets.items():
                assert ledger.window_value(customer, width, start) == naive_value(events)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("25", 25), (" -3 ", -3), ("1.0", 1), ("+7", 7), ("1e3", 1000), (12, 12), (5.0, 5), ("1" + "0" * 40, 10**40)],
)
def test_whole_values(raw: object, expected: int) -> None:
    assert parse_value(raw, "value") == expected


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("1.5", "meter_event_invalid_value"),
        ("abc", "meter_event_invalid_value"),
        ("", "meter_event_invalid_value"),
        (True, "meter_event_invalid_value"),
        ("NaN", "meter_event_invalid_value"),
        ("Infinity", "meter_event_invalid_value"),
        (None, "meter_event_invalid_value"),
        ("1234567890123456", "meter_event_value_too_many_digits"),
        ("1e1000", "meter_event_value_too_many_digits"),
    ],
)
def test_rejected_values(raw: object, code: str) -> None:
    with pytest.raises(ValueProblem) as info:
        parse_value(raw, "value")
    assert info.value.code == code


@given(st.integers(-(10**15) + 1, 10**15 - 1), st.integers(0, 20))
def test_up_to_15_significant_digits_round_trip(value: int, zeros: int) -> None:
    scaled = value * 10**zeros
    assert parse_value(str(scaled), "v") == scaled


@given(st.integers(0, 4_000_000_000))
def test_iso_round_trip(unix: int) -> None:
    assert parse_iso(format_iso(unix)) == unix
