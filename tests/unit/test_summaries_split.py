from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.errors import InvalidRequestError
from processor.state.summaries import check_range, split_range

BASE = 1_800_000_000 - 1_800_000_000 % 86400


@given(st.integers(0, 5 * 1440), st.integers(1, 5 * 1440))
def test_split_covers_the_range_exactly_in_order(a: int, n: int) -> None:
    start, end = BASE + a * 60, BASE + (a + n) * 60
    parts = split_range(start, end)
    size = {"minute": 60, "hour": 3600, "days": 86400}
    t = start
    for kind, s, e in parts:
        assert s == t and s % size[kind] == 0 and e > s and (e - s) % size[kind] == 0
        if kind != "days":
            assert e - s == size[kind]
        t = e
    assert t == end
    # never more minutes than needed: at most 59 leading + 59 trailing, hours at most 23 + 23, one run of days
    assert sum(1 for k, _, _ in parts if k == "minute") <= 118
    assert sum(1 for k, _, _ in parts if k == "hour") <= 46
    assert sum(1 for k, _, _ in parts if k == "days") <= 1


def test_split_of_a_huge_range_is_a_handful_of_parts() -> None:
    """Issue 13: end_time=999999999999960 used to build ~11.6 million day parts (gigabytes)."""
    parts = split_range(0, 999_999_999_999_960)
    assert len(parts) <= 1 + 23 + 59
    assert parts[0] == ("days", 0, 999_999_999_999_960 // 86400 * 86400)


@pytest.mark.parametrize(
    ("start", "end", "grouping", "param"),
    [
        (BASE + 1, BASE + 60, None, "start_time"),
        (BASE, BASE + 61, None, "end_time"),
        (BASE, BASE, None, "end_time"),
        (BASE + 60, BASE + 3600, "hour", "start_time"),
        (BASE, BASE + 3660, "hour", "end_time"),
        (BASE + 3600, BASE + 86400, "day", "start_time"),
        (BASE, BASE + 3600, "week", "value_grouping_window"),
    ],
)
def test_alignment_rules(start: int, end: int, grouping: str | None, param: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        check_range(start, end, grouping)
    assert err.value.param == param


def test_aligned_ranges_pass() -> None:
    check_range(BASE, BASE + 60, None)
    check_range(BASE, BASE + 7200, "hour")
    check_range(BASE, BASE + 86400 * 2, "day")
