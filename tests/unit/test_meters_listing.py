"""Stripe-style pagination of meters (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.errors import InvalidRequestError, MeterValidationError
from processor.meters.listing import paginate
from processor.meters.model import Meter


def meter(i: int, created: int, status: str = "active") -> Meter:
    return Meter(
        id=f"mtr_{i:04d}",
        display_name=f"m{i}",
        event_name=f"e{i}",
        formula="sum",
        status="active" if status == "active" else "inactive",
        created=created,
        updated=created,
    )


def ids(page: list[Meter]) -> list[str]:
    return [m.id for m in page]


def test_newest_first_with_id_tiebreak() -> None:
    meters = [meter(1, 100), meter(2, 300), meter(3, 200), meter(4, 200)]
    page, more = paginate(meters, limit=10)
    assert ids(page) == ["mtr_0002", "mtr_0004", "mtr_0003", "mtr_0001"]
    assert more is False


def test_starting_after_and_ending_before() -> None:
    meters = [meter(i, i) for i in range(5)]  # newest first: 4 3 2 1 0
    page, more = paginate(meters, limit=2)
    assert (ids(page), more) == (["mtr_0004", "mtr_0003"], True)
    page, more = paginate(meters, limit=2, starting_after="mtr_0003")
    assert (ids(page), more) == (["mtr_0002", "mtr_0001"], True)
    page, more = paginate(meters, limit=2, starting_after="mtr_0001")
    assert (ids(page), more) == (["mtr_0000"], False)
    page, more = paginate(meters, limit=2, ending_before="mtr_0001")
    assert (ids(page), more) == (["mtr_0003", "mtr_0002"], True)
    page, more = paginate(meters, limit=2, ending_before="mtr_0003")
    assert (ids(page), more) == (["mtr_0004"], False)


def test_status_filter_keeps_cursor_of_filtered_out_meter() -> None:
    meters = [meter(0, 0), meter(1, 1, "inactive"), meter(2, 2)]
    page, _ = paginate(meters, status="active", starting_after="mtr_0001")
    assert ids(page) == ["mtr_0000"]
    page, _ = paginate(meters, status="inactive")
    assert ids(page) == ["mtr_0001"]


def test_errors() -> None:
    with pytest.raises(InvalidRequestError) as err:  # the rule every list shares (processor/wire/pagination.py)
        paginate([], limit=0)
    assert (err.value.param, err.value.code) == ("limit", "parameter_invalid_integer")
    with pytest.raises(InvalidRequestError):
        paginate([], limit=101)
    with pytest.raises(MeterValidationError) as info:
        paginate([], status="archived")
    assert info.value.param == "status"
    with pytest.raises(InvalidRequestError) as err:
        paginate([meter(1, 1)], starting_after="mtr_nope")
    assert (err.value.param, err.value.code) == ("starting_after", "resource_missing")
    with pytest.raises(InvalidRequestError) as err:
        paginate([meter(1, 1)], starting_after="mtr_0001", ending_before="mtr_0001")
    assert (err.value.param, err.value.code) == ("ending_before", "parameters_exclusive")


@given(
    created=st.lists(st.integers(0, 5), max_size=25),
    inactive=st.sets(st.integers(0, 24)),
    limit=st.integers(1, 7),
    status=st.sampled_from([None, "active", "inactive"]),
)
def test_walking_pages_both_ways_visits_everything_once(
    created: list[int], inactive: set[int], limit: int, status: str | None
) -> None:
    meters = [meter(i, c, "inactive" if i in inactive else "active") for i, c in enumerate(created)]
    everything, _ = paginate(meters, status=status, limit=100)
    expected = [m for m in sorted(meters, key=lambda m: (m.created, m.id), reverse=True)]
    assert everything == [m for m in expected if status is None or m.status == status]

    forward: list[Meter] = []
    cursor: str | None = None
    while True:
        page, more = paginate(meters, status=status, limit=limit, starting_after=cursor)
        assert len(page) <= limit
        forward += page
        if not more:
            break
        cursor = page[-1].id
    assert forward == everything

    if not everything:
        return
    backward: list[Meter] = [everything[-1]]
    cursor = everything[-1].id
    while True:
        page, more = paginate(meters, status=status, limit=limit, ending_before=cursor)
        backward = page + backward
        if not more:
            break
        cursor = page[0].id
    assert backward == everything
