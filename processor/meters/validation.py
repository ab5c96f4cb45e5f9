"""Stripe's create-time validation of meter params, as pure functions.

Everyone who creates or updates a meter (the registry, the CLI, ``apply``, the HTTP gateway) goes through
:func:`validate_create_params` / :func:`validate_update_params`, so a bad meter is refused with the same
message, ``param`` and ``code`` wherever it comes from, and the message reads like Stripe's
(``Missing required param: display_name.``). The table of errors is in docs/meters.md.

Params arrive in Stripe's create shape with nested objects already decoded (the gateway turns
``default_aggregation[formula]=sum`` into ``{"default_aggregation": {"formula": "sum"}}``); nested
params are named in errors the way Stripe names them, with brackets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from processor.errors import MeterValidationError
from processor.limits import EVENT_NAME_MAX, text_problem
from processor.meters.model import (
    DEFAULT_CUSTOMER_KEY,
    DEFAULT_VALUE_KEY,
    FORMULAS,
    WINDOWS,
    CreateParams,
    Formula,
    Window,
)

__all__ = [
    "CREATE_PARAMS",
    "MAX_DISPLAY_NAME",
    "MAX_EVENT_NAME",
    "MAX_PAYLOAD_KEY",
    "UPDATE_PARAMS",
    "validate_create_params",
    "validate_update_params",
]

#: Stripe's limits on create (OpenAPI maxLength).
MAX_EVENT_NAME = EVENT_NAME_MAX  # the event_name rule of meter events (processor/limits.py)
MAX_DISPLAY_NAME = 250
#: Limit for customer_mapping / value_settings keys. Stripe's documentation gives none for certain; 100
#: matches its other meter strings and keeps a payload key sane.
MAX_PAYLOAD_KEY = 100

CREATE_PARAMS = frozenset(
    {
        "customer_mapping",
        "default_aggregation",
        "display_name",
        "event_name",
        "event_time_window",
        "expand",
        "value_settings",
    }
)
UPDATE_PARAMS = frozenset({"display_name", "expand"})
_NESTED: dict[str, frozenset[str]] = {
    "customer_mapping": frozenset({"event_payload_key", "type"}),
    "default_aggregation": frozenset({"formula"}),
    "value_settings": frozenset({"event_payload_key"}),
}


def _one_of(options: Sequence[str]) -> str:
    """``sum, count, or last`` / ``hour or day`` / ``by_id``: Stripe's way of listing an enum."""
    if len(options) == 1:
        return options[0]
    if len(options) == 2:
        return f"{options[0]} or {options[1]}"
    return ", ".join(options[:-1]) + f", or {options[-1]}"


def _missing(param: str) -> MeterValidationError:
    return MeterValidationError(f"Missing required param: {param}.", param=param, code="parameter_missing")


def _unknown(param: str, hint: str = "") -> MeterValidationError:
    message = f"Received unknown parameter: {param}"
    if hint:
        message += f". {hint}"
    return MeterValidationError(message, param=param, code="parameter_unknown")


def _string(value: object, param: str, max_len: int) -> str:
    """A required, non-empty, non-blank string of at most ``max_len`` characters."""
    if not isinstance(value, str):
        raise MeterValidationError(
            f"Invalid {param}: must be a string, got {type(value).__name__}",
            param=param,
            code="parameter_invalid_string",
        )
    if value == "":
        raise MeterValidationError(
            f"You passed an empty string for '{param}'. We assume empty values are an attempt to unset a "
            f"parameter; however '{param}' cannot be unset. You should remove '{param}' from your request or "
            "supply a non-empty value.",
            param=param,
            code="parameter_invalid_string_empty",
        )
    if not value.strip():
        raise MeterValidationError(
            f"Invalid {param}: must contain at least one non-whitespace character.",
            param=param,
            code="parameter_invalid_string_blank",
        )
    if len(value) > max_len:
        shown = value[:20] + "..." if len(value) > 20 else value
        raise MeterValidationError(
            f"Invalid string: {shown}; must be at most {max_len} characters",
            param=param,
            code="string_too_long",
        )
    problem = text_problem(value)  # NUL / not UTF-8: refused as everywhere (processor/limits.py)
    if problem is not None:
        raise MeterValidationError(f"Invalid {param}: {problem}.", param=param, code="parameter_invalid_string")
    return value


def _enum(value: object, param: str, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise MeterValidationError(
            f"Invalid {param}: must be one of {_one_of(options)}",
            param=param,
            code="parameter_invalid_string",
        )
    return value


def _object(params: Mapping[str, Any], name: str, *, required: bool) -> Mapping[str, Any] | None:
    """The nested object ``name`` (unknown keys refused), ``None`` if optional and absent."""
    value = params.get(name)
    if value is None:
        if required:
            raise _missing(name)
        return None
    if not isinstance(value, Mapping):
        raise MeterValidationError(
            f"Invalid {name}: must be an object with {_one_of(sorted(_NESTED[name]))}",
            param=name,
            code="parameter_invalid_object",
        )
    for key in sorted(str(k) for k in value):
        if key not in _NESTED[name]:
            raise _unknown(f"{name}[{key}]")
    return cast(Mapping[str, Any], value)


def _expand(params: Mapping[str, Any]) -> None:
    """``expand`` is accepted (the SDK may send it) and ignored: a meter has nothing to expand."""
    value = params.get("expand")
    if value is None:
        return
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise MeterValidationError(
            "Invalid expand: must be a list of strings", param="expand", code="parameter_invalid_array"
        )


def _check_mapping(params: object) -> Mapping[str, Any]:
    if not isinstance(params, Mapping):
        raise MeterValidationError(
            f"Invalid request: the meter params must be an object, got {type(params).__name__}",
            code="parameter_invalid_object",
        )
    return cast(Mapping[str, Any], params)


def validate_create_params(params: Mapping[str, Any]) -> CreateParams:
    """Check ``params`` as Stripe checks ``POST /v1/billing/meters`` and return them normalised.

    Checks run in a fixed order (unknown params, then required ones, then each value) and the first
    failure is raised as :class:`MeterValidationError`, as Stripe reports one error per request.
    Defaults are filled in: ``event_time_window`` null, ``customer_mapping`` by_id on
    ``stripe_customer_id``, ``value_settings`` on ``value``.
    """
    params = _check_mapping(params)
    for key in sorted(str(k) for k in params):
        if key not in CREATE_PARAMS:
            raise _unknown(key)
    aggregation = _object(params, "default_aggregation", required=True)
    assert aggregation is not None  # required=True
    if "display_name" not in params or params["display_name"] is None:
        raise _missing("display_name")
    if "event_name" not in params or params["event_name"] is None:
        raise _missing("event_name")
    if aggregation.get("formula") is None:
        raise _missing("default_aggregation[formula]")

    formula = cast(Formula, _enum(aggregation["formula"], "default_aggregation[formula]", FORMULAS))
    display_name = _string(params["display_name"], "display_name", MAX_DISPLAY_NAME)
    event_name = _string(params["event_name"], "event_name", MAX_EVENT_NAME)

    raw_window = params.get("event_time_window")
    # A form-encoded request cannot send null: an empty string means "no window", as it does at Stripe.
    window = None if raw_window in (None, "") else cast(Window, _enum(raw_window, "event_time_window", WINDOWS))

    customer_key = DEFAULT_CUSTOMER_KEY
    mapping = _object(params, "customer_mapping", required=False)
    if mapping is not None:
        # Stripe requires both keys once customer_mapping is given at all.
        if mapping.get("event_payload_key") is None:
            raise _missing("customer_mapping[event_payload_key]")
        if mapping.get("type") is None:
            raise _missing("customer_mapping[type]")
        customer_key = _string(mapping["event_payload_key"], "customer_mapping[event_payload_key]", MAX_PAYLOAD_KEY)
        _enum(mapping["type"], "customer_mapping[type]", ("by_id",))

    value_key = DEFAULT_VALUE_KEY
    settings = _object(params, "value_settings", required=False)
    if settings is not None:
        if settings.get("event_payload_key") is None:
            raise _missing("value_settings[event_payload_key]")
        value_key = _string(settings["event_payload_key"], "value_settings[event_payload_key]", MAX_PAYLOAD_KEY)

    _expand(params)
    return {
        "display_name": display_name,
        "event_name": event_name,
        "default_aggregation": {"formula": formula},
        "event_time_window": window,
        "customer_mapping": {"event_payload_key": customer_key, "type": "by_id"},
        "value_settings": {"event_payload_key": value_key},
    }


_IMMUTABLE_HINT = (
    "Meters are immutable after creation: only display_name can be updated "
    "(status changes through deactivate and reactivate)."
)


def validate_update_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Check ``POST /v1/billing/meters/{id}`` params: only ``display_name`` (and ``expand``) may be sent.

    Returns ``{"display_name": ...}`` or ``{}`` (an update that changes nothing). Any other param is
    refused by name, with a hint when it is a create-time setting (they never change).
    """
    params = _check_mapping(params)
    for key in sorted(str(k) for k in params):
        if key not in UPDATE_PARAMS:
            raise _unknown(key, _IMMUTABLE_HINT if key in CREATE_PARAMS or key == "status" else "")
    _expand(params)
    if params.get("display_name") is None:
        return {}
    return {"display_name": _string(params["display_name"], "display_name", MAX_DISPLAY_NAME)}
