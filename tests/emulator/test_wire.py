"""The shared wire layer, pure: bracket forms (round-tripped through the SDK's own encoder), params,
pagination arithmetic and key checks."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stripe._encode import _api_encode

from processor.errors import InvalidRequestError
from processor.wire import KeyChecker, PageParams, decode_form, get_int, page_bounds, paginate_by_id

# Keys the SDK can encode unambiguously: no brackets, not all digits (those decode as list indices).
keys = st.text(
    st.characters(codec="utf-8", exclude_characters="[]\x00", exclude_categories=("Cs",)), min_size=1, max_size=8
).filter(lambda k: not k.isdigit())
# NUL is refused by the decoder (processor/limits.py), as are bytes that are not UTF-8
scalars = st.text(st.characters(codec="utf-8", exclude_characters="\x00", exclude_categories=("Cs",)), max_size=10)
trees = st.recursive(
    scalars,
    lambda inner: st.lists(inner, min_size=1, max_size=4) | st.dictionaries(keys, inner, min_size=1, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(keys, trees, max_size=5))
def test_decode_inverts_the_sdk_encoder(params: dict[str, Any]) -> None:
    encoded = urlencode(list(_api_encode(params))).replace("%5B", "[").replace("%5D", "]")
    assert decode_form(encoded) == params


def test_bracket_forms() -> None:
    assert decode_form("payload[stripe_customer_id]=cus_1&payload[value]=5") == {
        "payload": {"stripe_customer_id": "cus_1", "value": "5"}
    }
    assert decode_form("expand[]=a&expand[]=b") == {"expand": ["a", "b"]}
    assert decode_form("a[0][b]=c&a[1][b]=d") == {"a": [{"b": "c"}, {"b": "d"}]}
    assert decode_form("a[][b]=c&a[][b]=d") == {"a": [{"b": "c"}, {"b": "d"}]}
    assert decode_form("m[0]=x&m[2]=y") == {"m": {"0": "x", "2": "y"}}  # not 0..n-1: stays a map
    assert decode_form("x=&y=1&y=2") == {"x": "", "y": "2"}


@pytest.mark.parametrize("text", ["a=1&a[b]=2", "a[b]=2&a=1", "a[b=1", "a]=1", "a[b][c]=1&a[b]=2", "a[]=1&a[x]=2"])
def test_malformed_forms(text: str) -> None:
    with pytest.raises(InvalidRequestError):
        decode_form(text)


def test_depth_and_field_limits() -> None:
    with pytest.raises(InvalidRequestError):
        decode_form("a" + "[b]" * 20 + "=1")
    with pytest.raises(InvalidRequestError):
        decode_form("&".join(f"k{i}=1" for i in range(3000)))


@pytest.mark.parametrize(("raw", "expected"), [("12", 12), ("-3", -3), ("+4", 4), (7, 7), (None, None), ("", None)])
def test_get_int(raw: object, expected: int | None) -> None:
    assert get_int({"n": raw}, "n") == expected


@pytest.mark.parametrize("raw", ["1.5", "abc", True, 1.0, "1" * 30, "٣"])
def test_get_int_rejects(raw: object) -> None:
    with pytest.raises(InvalidRequestError) as info:
        get_int({"n": raw}, "n")
    assert info.value.param == "n" and info.value.code == "parameter_invalid_integer"


@given(
    total=st.integers(0, 40),
    limit=st.integers(1, 100),
    cursor=st.integers(0, 39),
    direction=st.sampled_from(["first", "after", "before"]),
)
def test_page_bounds_match_slicing(total: int, limit: int, cursor: int, direction: str) -> None:
    items = list(range(total))
    if direction == "first" or cursor >= total:
        lo, hi, more = page_bounds(total, PageParams(limit))
        assert (items[lo:hi], more) == (items[:limit], total > limit)
    elif direction == "after":
        lo, hi, more = page_bounds(total, PageParams(limit, starting_after="x"), after=cursor + 1)
        rest = items[cursor + 1 :]
        assert (items[lo:hi], more) == (rest[:limit], len(rest) > limit)
    else:
        lo, hi, more = page_bounds(total, PageParams(limit, ending_before="x"), before=cursor)
        head = items[:cursor]
        assert (items[lo:hi], more) == (head[-limit:] if head else [], len(head) > limit)


def test_paginate_by_id_and_page_params() -> None:
    items = ["a", "b", "c", "d"]
    assert paginate_by_id(items, str, PageParams(2, starting_after="b")) == (["c", "d"], False)
    assert paginate_by_id(items, str, PageParams(1, ending_before="c")) == (["b"], True)
    with pytest.raises(InvalidRequestError) as info:
        paginate_by_id(items, str, PageParams(2, ending_before="z"))
    assert info.value.param == "ending_before"
    with pytest.raises(InvalidRequestError):
        PageParams.from_params({"starting_after": "a", "ending_before": "b"})
    for bad in ("0", "101", "x"):
        with pytest.raises(InvalidRequestError):
            PageParams.from_params({"limit": bad})
    assert PageParams.from_params({}) == PageParams(10)


def test_key_checker() -> None:
    fixed = KeyChecker(["sk_test_a", "sk_test_b"])
    assert fixed.accepts("sk_test_b") and not fixed.accepts("sk_test_c") and not fixed.accepts("")
    any_test = KeyChecker(prefixes=["sk_test_"])
    assert any_test.accepts("sk_test_x") and not any_test.accepts("sk_test_") and not any_test.accepts("sk_live_x")
    with pytest.raises(ValueError):
        KeyChecker()
