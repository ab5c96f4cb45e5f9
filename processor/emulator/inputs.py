"""Request-shape checks of meter events and adjustments, shared by the v1 and v2 endpoints.

Shape problems (a missing ``event_name``, a payload that is not a map of strings, an identifier over 100
characters, a timestamp that is not an integer / ISO 8601 string) are always answered 400 at once, on
every endpoint including the v2 stream: they are what Stripe's request schema rejects. Rules that need
the meter (value, customer) are :class:`~processor.emulator.state.Emulator`'s business.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processor.emulator.state import EventInput
from processor.errors import InvalidRequestError
from processor.wire import get_int, get_map, get_str, param_name, reject_unknown
from processor.wire.times import parse_iso

__all__ = ["adjustment_input", "event_input"]


def event_input(params: Mapping[str, Any], *, v2: bool, prefix: tuple[str, ...] = ()) -> EventInput:
    """Check one event's shape. v1 payload values are strings (form encoding); v2 also takes JSON numbers."""
    allowed = ("event_name", "payload", "identifier", "timestamp") + (() if v2 else ("expand",))
    reject_unknown(params, allowed, prefix=prefix)
    event_name = get_str(params, "event_name", required=True, max_length=100, prefix=prefix)
    payload = get_map(params, "payload", required=True, prefix=prefix) or {}
    for key, value in payload.items():
        ok = isinstance(value, str) or (v2 and isinstance(value, (int, float)) and not isinstance(value, bool))
        if not ok:
            name = param_name(*prefix, "payload", key)
            raise InvalidRequestError(
                f"Invalid {name}: payload values must be strings", param=name, code="parameter_invalid_string"
            )
    identifier = get_str(params, "identifier", max_length=100, prefix=prefix)
    timestamp: int | None
    if v2:
        raw = params.get("timestamp")
        timestamp = None
        if raw is not None:
            try:
                timestamp = parse_iso(raw)
            except (ValueError, TypeError, OverflowError):
                name = param_name(*prefix, "timestamp")
                raise InvalidRequestError(
                    f"Invalid {name}: must be an ISO 8601 date-time such as 2024-06-18T12:00:00.000Z",
                    param=name,
                    code="parameter_invalid_string",
                ) from None
    else:
        timestamp = get_int(params, "timestamp", minimum=0, prefix=prefix)
    assert event_name is not None
    return EventInput(event_name, payload, identifier, timestamp)


def adjustment_input(params: Mapping[str, Any], *, v2: bool) -> tuple[str, str]:
    """``(event_name, identifier)`` of a cancellation; ``type`` must be ``cancel``."""
    reject_unknown(params, ("event_name", "type", "cancel") + (() if v2 else ("expand",)))
    event_name = get_str(params, "event_name", required=True, max_length=100)
    kind = get_str(params, "type", required=True)
    if kind != "cancel":
        raise InvalidRequestError(
            "Invalid type: must be cancel (time period cancellation is not supported yet)",
            param="type",
            code="parameter_invalid_string",
        )
    cancel = get_map(params, "cancel", required=True) or {}
    reject_unknown(cancel, ("identifier",), prefix=("cancel",))
    identifier = get_str(cancel, "identifier", required=True, max_length=100, prefix=("cancel",))
    assert event_name is not None and identifier is not None
    return event_name, identifier
