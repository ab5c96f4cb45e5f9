"""The contiguous done watermark: never past an unfinished offset, everything released exactly once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.sink.watermark import OffsetTracker

P = ("accepted", 0)


def test_releases_only_the_contiguous_done_prefix() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tokens = [tracker.track(P, offset, f"m{offset}") for offset in (10, 11, 13, 14)]  # 12: a gap
    assert tracker.done(tokens[1]) == []
    assert tracker.position(P) is None
    assert tracker.done(tokens[0]) == ["m10", "m11"]
    assert tracker.position(P) == 12
    assert tracker.done(tokens[3]) == []
    assert tracker.position(P) == 12  # 13 is still in progress
    assert tracker.done(tokens[2]) == ["m13", "m14"]
    assert tracker.position(P) == 15
    assert tracker.outstanding() == 0


def test_done_twice_releases_once() -> None:
    tracker: OffsetTracker[int] = OffsetTracker()
    token = tracker.track(P, 0, 0)
    assert tracker.done(token) == [0]
    assert tracker.done(token) == []


def test_offsets_must_increase_and_is_new_says_so() -> None:
    tracker: OffsetTracker[int] = OffsetTracker()
    tracker.track(P, 5, 5)
    assert not tracker.is_new(P, 5) and not tracker.is_new(P, 3) and tracker.is_new(P, 6)
    with pytest.raises(ValueError):
        tracker.track(P, 5, 5)


def test_completions_of_an_old_generation_are_ignored() -> None:
    tracker: OffsetTracker[int] = OffsetTracker()
    tracker.assign(P)
    old = tracker.track(P, 7, 7)
    assert tracker.revoke(P) == 1
    tracker.assign(P)  # assigned again: read again from the committed offset
    new = tracker.track(P, 5, 5)
    assert tracker.done(old) == []  # would otherwise mark an offset of the new generation
    assert tracker.done(new) == [5]
    assert tracker.position(P) == 6


@given(
    offsets=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=200, unique=True),
    order=st.randoms(use_true_random=False),
)
def test_any_completion_order(offsets: list[int], order: object) -> None:
    offsets.sort()
    tracker: OffsetTracker[int] = OffsetTracker()
    tokens = [tracker.track(P, o, o) for o in offsets]
    shuffled = list(tokens)
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    done: set[int] = set()
    released: list[int] = []
    for token in shuffled:
        done.add(token.offset)
        released.extend(tracker.done(token))
        position = tracker.position(P)
        if position is not None:
            # every tracked offset below the commit position is done
            assert all(o in done for o in offsets if o < position)
            # and the position is right after a done offset, before the first unfinished one
            unfinished = [o for o in offsets if o not in done]
            assert not unfinished or position <= unfinished[0]
    assert released == offsets  # each exactly once, in offset order
    assert tracker.position(P) == offsets[-1] + 1
