from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.aggregator.values import parse_whole, significant_digits
from processor.windows import bucket, day_start, hour_start, received_rank, timestamp_rank


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (25, 25),
        (-3, -3),
        ("25", 25),
        ("-3", -3),
        ("1.0", 1),
        (" 7 ", 7),
        ("+7", 7),
        ("1e3", 1000),
        (Decimal("25.0"), 25),
        (Decimal("1E+20"), 10**20),
        (2.0, 2),
        ("1.5", None),
        ("abc", None),
        ("", None),
        (True, None),
        (False, None),
        (None, None),
        ({"a": 1}, None),
        ([1], None),
        ("NaN", None),
        ("Infinity", None),
        (Decimal("1.5"), None),
        ("1e999999999", None),
    ],
)
def test_parse_whole(raw: object, expected: int | None) -> None:
    assert parse_whole(raw) == expected


@given(st.integers(min_value=-(10**40), max_value=10**40))
def test_parse_whole_round_trips_integers_exactly(n: int) -> None:
    assert parse_whole(n) == n
    assert parse_whole(str(n)) == n
    assert parse_whole(f"{n}.000") == n


@pytest.mark.parametrize(
    ("n", "digits"),
    [(0, 1), (7, 1), (1000, 1), (10**20, 1), (123456789012345, 15), (1234567890123456, 16), (-120, 2)],
)
def test_significant_digits(n: int, digits: int) -> None:
    assert significant_digits(n) == digits


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_buckets_contain_their_timestamp(ts: int) -> None:
    h, d = hour_start(ts), day_start(ts)
    assert h <= ts < h + 3600 and h % 3600 == 0
    assert d <= ts < d + 86400 and d % 86400 == 0
    assert d <= h
    assert bucket(ts, "hour") == h and bucket(ts, "day") == d


def test_bucket_rejects_unknown_window() -> None:
    with pytest.raises(ValueError):
        bucket(1, "week")


@given(
    st.tuples(st.integers(0, 10**13), st.integers(0, 9999), st.integers(0, 10**12)),
    st.tuples(st.integers(0, 10**13), st.integers(0, 9999), st.integers(0, 10**12)),
)
def test_received_rank_orders_like_tuples(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    assert (received_rank(*a) < received_rank(*b)) == (a < b)


@given(
    st.tuples(st.integers(0, 10**10), st.integers(0, 10**13), st.integers(0, 99), st.integers(0, 10**9)),
    st.tuples(st.integers(0, 10**10), st.integers(0, 10**13), st.integers(0, 99), st.integers(0, 10**9)),
)
def test_timestamp_rank_orders_like_tuples(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> None:
    assert (timestamp_rank(*a) < timestamp_rank(*b)) == (a < b)
