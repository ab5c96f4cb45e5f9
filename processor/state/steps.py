"""The two Lua steps' ops and answers as types: what the engine hands the store, what claim.lua and
apply.lua answer. The scripts speak positional arrays (lua/claim.lua, lua/apply.lua document them); this
module is the one place that reads or writes those positions (:func:`decode_event_claim`,
:func:`decode_cancel_claim`, :func:`decode_apply_answer`, :func:`pack_apply_op`), so the rest of the code
uses names and a field mix-up is caught by one unit test (tests/unit/test_state_steps.py). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from processor.errors import StateError

__all__ = [
    "ApplyAnswer",
    "ApplyOp",
    "CancelClaim",
    "ClaimOp",
    "EventAt",
    "EventClaim",
    "decode_apply_answer",
    "decode_cancel_claim",
    "decode_event_claim",
    "pack_apply_op",
]


class ClaimOp(NamedTuple):
    """One record's identifier step: the record at ``partition``/``offset`` of its topic (an event on
    meter-events, a cancellation on meter-event-adjustments: :meth:`StateStore.claim` takes them in two
    lists), received at ``received_ms``."""

    meter_id: str
    identifier: str
    received_ms: int
    partition: int
    offset: int


class EventAt(NamedTuple):
    """An event's record: its meter-events partition and offset, and when it was received."""

    partition: int
    offset: int
    received_ms: int


class EventClaim(NamedTuple):
    """The claim step's answer for an event (claim.lua).

    ``status``: ``new`` (the first event with its identifier within 24 h), ``mine`` (this very record was
    claimed before: a replay, which gets the first run's answer again), ``dup`` (another event holds the
    identifier). ``cancelled_by``: (partition, offset) on meter-event-adjustments of the cancellation that
    took the event out, if one did. ``arrived_cancelled``: that cancellation was waiting when the event
    arrived, so the event is never added and is forwarded followed by its cancellation (a ``mine`` event
    cancelled later has ``cancelled_by`` set and this False: the cancellation's own record handles it)."""

    status: Literal["new", "mine", "dup"]
    cancelled_by: tuple[int, int] | None = None
    arrived_cancelled: bool = False


class CancelClaim(NamedTuple):
    """The claim step's answer for a cancellation (claim.lua).

    ``status``: ``cancel`` (it takes ``event`` out now), ``mine`` (it did so before: a replay; ``event``
    set as well), ``noop`` (its event is already cancelled, by another cancellation), ``pending`` (no event
    yet: it waits 24 h for one), ``consumed`` (a replay of a cancellation that its event used on arrival:
    the event's record forwarded it)."""

    status: Literal["cancel", "mine", "noop", "pending", "consumed"]
    event: EventAt | None = None


class ApplyAnswer(NamedTuple):
    """What one apply.lua call answers: ops applied now, the (1-based) indices of the additive runs to send
    again op by op (a run partly applied before), and the KEYS indices whose expiry it set."""

    applied: int
    redo: list[int]
    expired: list[int]


_EVENT_LETTERS: dict[bytes, EventClaim] = {b"n": EventClaim("new"), b"d": EventClaim("dup")}
_CANCEL_LETTERS: dict[bytes, CancelClaim] = {
    b"o": CancelClaim("noop"),
    b"p": CancelClaim("pending"),
    b"u": CancelClaim("consumed"),
}
_MINE = EventClaim("mine")
_RESOLVED: dict[bytes, Literal["cancel", "mine"]] = {b"cancel": "cancel", b"mine": "mine"}


def decode_event_claim(raw: Any) -> EventClaim:
    """claim.lua's answer for an event op: ``'n'`` | ``'d'`` | ``{'new', cp, co}`` (arrived cancelled by the
    cancellation at cp/co) | ``{'mine', cp, co, arrived}`` (a replay; cp = -1 when not cancelled)."""
    if isinstance(raw, bytes):
        claim = _EVENT_LETTERS.get(raw)
    elif raw[0] == b"new":
        claim = EventClaim("new", (int(raw[1]), int(raw[2])), arrived_cancelled=True)
    elif raw[0] == b"mine":
        claim = _MINE if int(raw[1]) < 0 else EventClaim("mine", (int(raw[1]), int(raw[2])), int(raw[3]) == 1)
    else:
        claim = None
    if claim is None:
        raise StateError(f"claim.lua answered an event op with {raw!r}")
    return claim


def decode_cancel_claim(raw: Any) -> CancelClaim:
    """claim.lua's answer for a cancellation op: ``'o'`` | ``'p'`` | ``'u'`` | ``{'cancel' or 'mine', ep, eo,
    R}`` (the event at ep/eo, received at R)."""
    if isinstance(raw, bytes):
        claim = _CANCEL_LETTERS.get(raw)
    else:
        status = _RESOLVED.get(raw[0])
        claim = None if status is None else CancelClaim(status, EventAt(int(raw[1]), int(raw[2]), int(raw[3])))
    if claim is None:
        raise StateError(f"claim.lua answered a cancellation op with {raw!r}")
    return claim


def decode_apply_answer(raw: Any) -> ApplyAnswer:
    """apply.lua's ``{applied, {run indices}, {key indices}}``."""
    return ApplyAnswer(int(raw[0]), [int(i) for i in raw[1]], [int(k) for k in raw[2]])


@dataclass(slots=True, kw_only=True)
class ApplyOp:
    """One aggregate change (apply.lua), built by keyword so no two fields can be swapped unseen.

    ``kind``: '+'/'-' additive, 'c+'/'c-' candidate (pre-aggregated windows), 'l+'/'l-' raw ``last``.
    The change comes from the record at ``offset`` of ``src`` ("<topic>/<partition>"), guarded by the
    watermark hash ``wm_key``; ``ident`` keys the candidate (the event's record position), ``rank`` orders
    candidates, ``value`` is the event's decimal value, ``ts`` its timestamp. Treat as immutable (a plain
    slotted class: the processor builds one per event, and a frozen dataclass costs twice as much)."""

    kind: str
    wm_key: str
    hour_key: str
    day_key: str
    cand_key: str
    best_key: str
    minutes_key: str
    src: str
    offset: int
    ident: str
    rank: str
    value: str
    ts: int
    formula: str


def pack_apply_op(op: ApplyOp, ix: Callable[[str], int]) -> tuple[Any, ...]:
    """``op`` as one entry of apply.lua's ARGV[2], keys replaced by their KEYS index (``ix``): the one place
    that knows the script's field order."""
    return (
        op.kind,
        ix(op.wm_key),
        ix(op.hour_key),
        ix(op.day_key),
        ix(op.cand_key),
        ix(op.best_key),
        op.src,
        op.offset,
        op.ident,
        op.rank,
        op.value,
        op.ts,
        op.formula,
        ix(op.minutes_key),
    )
