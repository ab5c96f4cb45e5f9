"""The Lua steps' answers and ops are read and written by position in one module (processor/state/steps.py):
these tests feed it raw answers shaped as claim.lua and apply.lua document them, and check that an
ApplyOp is packed in the order apply.lua reads, so a swapped field fails here rather than in a bill."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pytest

from processor.errors import StateError
from processor.state.steps import (
    ApplyAnswer,
    ApplyOp,
    CancelClaim,
    EventAt,
    EventClaim,
    decode_apply_answer,
    decode_cancel_claim,
    decode_event_claim,
    pack_apply_op,
)


@pytest.mark.parametrize(
    ("raw", "claim"),
    [
        (b"n", EventClaim("new")),
        (b"d", EventClaim("dup")),
        # arrived cancelled by the waiting cancellation at partition 3, offset 17
        ([b"new", 3, 17], EventClaim("new", cancelled_by=(3, 17), arrived_cancelled=True)),
        ([b"mine", -1, 0, 0], EventClaim("mine")),
        ([b"mine", 2, 9, 1], EventClaim("mine", cancelled_by=(2, 9), arrived_cancelled=True)),
        # a replay of an event a later cancellation took out: not "arrived cancelled"
        ([b"mine", 2, 9, 0], EventClaim("mine", cancelled_by=(2, 9), arrived_cancelled=False)),
    ],
)
def test_event_answers_decode_to_named_fields(raw: Any, claim: EventClaim) -> None:
    assert decode_event_claim(raw) == claim


@pytest.mark.parametrize(
    ("raw", "claim"),
    [
        (b"o", CancelClaim("noop")),
        (b"p", CancelClaim("pending")),
        (b"u", CancelClaim("consumed")),
        ([b"cancel", 4, 81, 1_700_000_000_123], CancelClaim("cancel", EventAt(4, 81, 1_700_000_000_123))),
        ([b"mine", 0, 5, 1_700_000_000_000], CancelClaim("mine", EventAt(0, 5, 1_700_000_000_000))),
    ],
)
def test_cancel_answers_decode_to_named_fields(raw: Any, claim: CancelClaim) -> None:
    decoded = decode_cancel_claim(raw)
    assert decoded == claim
    if decoded.event is not None:
        assert (decoded.event.partition, decoded.event.offset, decoded.event.received_ms) == tuple(raw[1:])


@pytest.mark.parametrize("raw", [b"x", [b"cancel", 1, 2, 3], [b"what", 1, 2]])
def test_an_unknown_event_answer_is_a_state_error(raw: Any) -> None:
    with pytest.raises(StateError, match="event op"):
        decode_event_claim(raw)


@pytest.mark.parametrize("raw", [b"n", [b"new", 1, 2], [b"what", 1, 2, 3]])
def test_an_unknown_cancel_answer_is_a_state_error(raw: Any) -> None:
    with pytest.raises(StateError, match="cancellation op"):
        decode_cancel_claim(raw)


def test_apply_answer_decodes_to_named_fields() -> None:
    assert decode_apply_answer([7, [2, 5], [1, 3, 4]]) == ApplyAnswer(applied=7, redo=[2, 5], expired=[1, 3, 4])


def _op() -> ApplyOp:
    return ApplyOp(
        kind="c+",
        wm_key="k:wm",
        hour_key="k:hour",
        day_key="k:day",
        cand_key="k:cand",
        best_key="k:best",
        minutes_key="k:minutes",
        src="meter-events/3",
        offset=41,
        ident="meter-events/3/41",
        rank="rank-1",
        value="25",
        ts=1_700_000_000,
        formula="sum",
    )


def test_an_apply_op_is_packed_in_the_order_apply_lua_reads() -> None:
    """apply.lua's header lists the fields of an ARGV[2] op; every field here has a distinct value, so
    two swapped positions cannot pass."""
    text = resources.files("processor.state").joinpath("lua", "apply.lua").read_text("utf-8")
    listed = re.search(r"msgpack array of ops, each \{([^}]*)\}", text.replace("\n--         ", " "))
    assert listed is not None
    order = [name.strip() for name in listed.group(1).split(",")]
    op = _op()
    index = {"k:wm": 1, "k:hour": 2, "k:day": 3, "k:cand": 4, "k:best": 5, "k:minutes": 6}
    by_name = {
        "kind": op.kind,
        "wm": index[op.wm_key],
        "hour": index[op.hour_key],
        "day": index[op.day_key],
        "cand": index[op.cand_key],
        "best": index[op.best_key],
        "minutes": index[op.minutes_key],
        "src": op.src,
        "offset": op.offset,
        "ident": op.ident,
        "rank": op.rank,
        "value": op.value,
        "ts": op.ts,
        "formula": op.formula,
    }
    assert sorted(order) == sorted(by_name)
    assert pack_apply_op(op, index.__getitem__) == tuple(by_name[name] for name in order)


def test_an_apply_op_is_built_by_keyword_only() -> None:
    with pytest.raises(TypeError):
        ApplyOp("+", "wm", "hour", "day", "", "", "minutes", "src", 1, "ident", "", "1", 1, "sum")  # type: ignore[misc]
