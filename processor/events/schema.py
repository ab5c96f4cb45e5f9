"""Validation of meter events and cancellations where they enter the system. Pure: no I/O.

The producer SDK, the CLI, imports and the gateway all call these functions, so a malformed event is
refused with the same Stripe-shaped error (message, ``param``, ``code``) wherever it is written, before
it reaches Kafka. What is checked here is the *shape* (SPEC §2): names, lengths, types. What needs a
meter (unknown event_name, missing customer or value key, timestamp window) is decided later by the
processor against the record's received time, and reported on ``meter-event-errors`` as Stripe does
asynchronously.

Messages follow Stripe's wording where Stripe has one ("Missing required param: event_name.");
``code`` is one of Stripe's codes (``parameter_missing``, ``parameter_invalid_empty``,
``parameter_invalid_integer``, ``parameter_unknown``) or, where Stripe publishes none, the one code
meterstream uses for that case on every route (docs/http-api.md "Error codes"): ``string_too_long``,
``parameter_invalid_string`` (not a string / not an allowed value), ``parameter_invalid_object``. ``param`` always names the offending field, in Stripe's bracket form for payload keys
(``payload[value]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processor import limits
from processor.errors import EventValidationError

__all__ = [
    "EVENT_NAME_MAX",
    "IDENTIFIER_MAX",
    "EventValidationError",
    "check_cancel_shape",
    "check_event_shape",
    "parse_cancel_object",
    "parse_event_object",
]

# Stripe's limits on POST /v1/billing/meter_events (reference/stripe-meters.md §2), shared with the processor.
EVENT_NAME_MAX = limits.EVENT_NAME_MAX
IDENTIFIER_MAX = limits.IDENTIFIER_MAX

_EVENT_FIELDS = ("event_name", "payload", "identifier", "timestamp")
_CANCEL_FIELDS = ("event_name", "type", "cancel")


def _preview(value: str, limit: int = 20) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, float):
        return "float"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple | set):
        return "array"
    return type(value).__name__


def _check_utf8(value: str, param: str) -> None:
    # A Python str may hold lone surrogates, which UTF-8 cannot encode, or NULs: refuse them here rather
    # than store them changed or write JSON that other readers reject (processor/limits.py).
    problem = limits.text_problem(value)
    if problem is not None:
        raise EventValidationError(f"Invalid string for {param}: {problem}.", param=param)


def _string(value: object, param: str, *, required: bool, max_len: int) -> str | None:
    """A non-empty string of at most ``max_len`` characters (``None`` allowed when not required)."""
    if value is None:
        if required:
            raise EventValidationError(f"Missing required param: {param}.", param=param, code="parameter_missing")
        return None
    if not isinstance(value, str):
        raise EventValidationError(
            f"Invalid {param}: must be a string, got {_type_name(value)}.", param=param, code="parameter_invalid_string"
        )
    if value == "":
        raise EventValidationError(
            f"You passed an empty string for '{param}'. We assume empty values are an attempt to unset a "
            f"parameter; however '{param}' cannot be unset. You should remove '{param}' from your request "
            "or supply a non-empty value.",
            param=param,
            code="parameter_invalid_empty",
        )
    if len(value) > max_len:
        raise EventValidationError(
            f"Invalid string: {_preview(value)}; must be at most {max_len} characters",
            param=param,
            code="string_too_long",
        )
    _check_utf8(value, param)
    return value


def _payload(payload: object) -> dict[str, str | int]:
    """A flat, non-empty map of non-empty string keys to strings or integers (not booleans)."""
    if payload is None:
        raise EventValidationError("Missing required param: payload.", param="payload", code="parameter_missing")
    if not isinstance(payload, Mapping):
        raise EventValidationError(
            f"Invalid payload: must be an object mapping strings to strings or integers, got {_type_name(payload)}.",
            param="payload",
            code="parameter_invalid_object",
        )
    if not payload:
        # Stripe cannot even receive an empty hash (form encoding drops it), and an event without a
        # customer key can never count: refuse it here instead of on the error topic.
        raise EventValidationError("Missing required param: payload.", param="payload", code="parameter_missing")
    out: dict[str, str | int] = {}
    for key, value in payload.items():
        if not isinstance(key, str) or key == "":
            raise EventValidationError(
                f"Invalid payload: keys must be non-empty strings, got {key!r}.", param="payload"
            )
        _check_utf8(key, "payload")
        param = f"payload[{key}]"
        if isinstance(value, str):
            _check_utf8(value, param)
        elif not isinstance(value, int) or isinstance(value, bool):
            raise EventValidationError(
                f"Invalid {param}: must be a string or an integer, got {_type_name(value)}.",
                param=param,
                code="parameter_invalid_string",
            )
        out[key] = value
    return out


def _timestamp(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventValidationError(
            f"Invalid integer: {value!r:.40}; timestamp must be a Unix timestamp in whole seconds.",
            param="timestamp",
            code="parameter_invalid_integer",
        )
    return value


def check_event_shape(
    event_name: object, payload: object, identifier: object = None, timestamp: object = None
) -> dict[str, Any]:
    """Check the shape of a producer-side event (SPEC §2: names, lengths, types) and return its
    ``meter-events`` value, or raise :class:`EventValidationError`. The meter rules come later, in the
    processor (:func:`processor.aggregator.validate.judge_event`).

    Absent optional fields (``identifier``, ``timestamp``) are left out of the result, as the topic
    contract allows; the producer fills both before calling this. The payload is copied, so later
    changes to the caller's dict never alter what was validated.
    """
    name = _string(event_name, "event_name", required=True, max_len=EVENT_NAME_MAX)
    value: dict[str, Any] = {"event_name": name, "payload": _payload(payload)}
    ident = _string(identifier, "identifier", required=False, max_len=IDENTIFIER_MAX)
    if ident is not None:
        value["identifier"] = ident
    ts = _timestamp(timestamp)
    if ts is not None:
        value["timestamp"] = ts
    return value


def check_cancel_shape(event_name: object, identifier: object) -> dict[str, Any]:
    """Check the shape of a cancellation (SPEC §2) and return the ``meter-event-adjustments`` value
    cancelling ``identifier`` of ``event_name``, or raise :class:`EventValidationError`."""
    name = _string(event_name, "event_name", required=True, max_len=EVENT_NAME_MAX)
    ident = _string(identifier, "cancel[identifier]", required=True, max_len=IDENTIFIER_MAX)
    return {"event_name": name, "type": "cancel", "cancel": {"identifier": ident}}


def _check_object(obj: object, fields: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise EventValidationError(f"Invalid request: expected a JSON object, got {_type_name(obj)}.")
    for key in obj:
        if key not in fields:
            raise EventValidationError(f"Received unknown parameter: {key}", param=str(key), code="parameter_unknown")
    return obj


def parse_event_object(obj: object) -> dict[str, Any]:
    """Validate a whole ``meter-events`` value (a parsed JSON line, a request body): unknown fields are
    refused, the rest goes through :func:`check_event_shape`."""
    fields = _check_object(obj, _EVENT_FIELDS)
    return check_event_shape(
        fields.get("event_name"), fields.get("payload"), fields.get("identifier"), fields.get("timestamp")
    )


def parse_cancel_object(obj: object) -> dict[str, Any]:
    """Validate a whole ``meter-event-adjustments`` value (``type`` must be ``cancel``)."""
    fields = _check_object(obj, _CANCEL_FIELDS)
    kind = fields.get("type")
    if kind is None:
        raise EventValidationError("Missing required param: type.", param="type", code="parameter_missing")
    if kind != "cancel":
        raise EventValidationError(
            f"Invalid type: must be one of cancel, got {_preview(str(kind))}.",
            param="type",
            code="parameter_invalid_string",
        )
    cancel = fields.get("cancel")
    if cancel is None:
        raise EventValidationError(
            "Missing required param: cancel[identifier].", param="cancel[identifier]", code="parameter_missing"
        )
    if not isinstance(cancel, Mapping):
        raise EventValidationError(
            f"Invalid cancel: must be an object, got {_type_name(cancel)}.",
            param="cancel",
            code="parameter_invalid_object",
        )
    for key in cancel:
        if key != "identifier":
            raise EventValidationError(
                f"Received unknown parameter: cancel[{key}]", param=f"cancel[{key}]", code="parameter_unknown"
            )
    return check_cancel_shape(fields.get("event_name"), cancel.get("identifier"))
