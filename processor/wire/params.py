"""Typed reads of decoded request parameters, failing the way Stripe fails.

Stripe answers a bad parameter with a 400 ``invalid_request_error`` whose ``param`` names it (nested names
in bracket form, ``default_aggregation[formula]``) and whose ``code`` says what is wrong
(``parameter_missing``, ``parameter_unknown``, ``parameter_invalid_integer``, ...). These helpers produce
exactly that, so every endpoint of the emulator and the gateway reports parameter problems alike.
Form-encoded values are strings; JSON (v2) values may be numbers — :func:`get_int` takes both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from processor.errors import InvalidRequestError

__all__ = [
    "get_enum",
    "get_int",
    "get_map",
    "get_str",
    "param_name",
    "reject_unknown",
]


def param_name(*path: str) -> str:
    """``("a", "b", "c")`` -> ``"a[b][c]"``, Stripe's way of naming a nested parameter."""
    return path[0] + "".join(f"[{p}]" for p in path[1:])


def reject_unknown(params: Mapping[str, Any], allowed: Iterable[str], *, prefix: tuple[str, ...] = ()) -> None:
    """400 ``parameter_unknown`` for the first key not in ``allowed`` (Stripe rejects unknown params)."""
    allowed_set = set(allowed)
    for key in params:
        if key not in allowed_set:
            name = param_name(*prefix, key)
            raise InvalidRequestError(f"Received unknown parameter: {name}", param=name, code="parameter_unknown")


def _missing(name: str) -> InvalidRequestError:
    return InvalidRequestError(f"Missing required param: {name}.", param=name, code="parameter_missing")


def get_str(
    params: Mapping[str, Any],
    key: str,
    *,
    required: bool = False,
    max_length: int | None = None,
    allow_empty: bool = False,
    prefix: tuple[str, ...] = (),
) -> str | None:
    """A string parameter, ``None`` when absent and not required."""
    name = param_name(*prefix, key)
    value = params.get(key)
    if value is None:
        if required:
            raise _missing(name)
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(
            f"Invalid string: {name} must be a string", param=name, code="parameter_invalid_string"
        )
    if value == "" and not allow_empty:
        if required:
            raise InvalidRequestError(
                f"You passed an empty string for '{name}'. We assume empty values are an attempt to unset a "
                f"parameter; however '{name}' cannot be unset.",
                param=name,
                code="parameter_invalid_empty",
            )
        return None
    if max_length is not None and len(value) > max_length:
        raise InvalidRequestError(
            f"Invalid string: {value[:20]}...; must be at most {max_length} characters",
            param=name,
            code="string_too_long",
        )
    return value


def get_enum(
    params: Mapping[str, Any],
    key: str,
    choices: Iterable[str],
    *,
    required: bool = False,
    prefix: tuple[str, ...] = (),
) -> str | None:
    """A string parameter that must be one of ``choices``."""
    value = get_str(params, key, required=required, prefix=prefix)
    options = list(choices)
    if value is not None and value not in options:
        name = param_name(*prefix, key)
        listed = ", ".join(options[:-1]) + (f", or {options[-1]}" if len(options) > 1 else options[0])
        raise InvalidRequestError(
            f"Invalid {name}: must be one of {listed}", param=name, code="parameter_invalid_string"
        )
    return value


def get_int(
    params: Mapping[str, Any],
    key: str,
    *,
    required: bool = False,
    minimum: int | None = None,
    maximum: int | None = None,
    prefix: tuple[str, ...] = (),
) -> int | None:
    """An integer parameter: a decimal string (form) or a JSON integer (never a bool or a float)."""
    name = param_name(*prefix, key)
    value = params.get(key)
    if value is None or value == "":
        if required:
            raise _missing(name)
        return None
    result: int
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidRequestError(f"Invalid integer: {str(value)[:40]}", param=name, code="parameter_invalid_integer")
    if isinstance(value, int):
        result = value
    else:
        text = value.strip()
        body = text[1:] if text[:1] in "+-" else text
        if not body.isascii() or not body.isdigit() or len(body) > 19:
            raise InvalidRequestError(f"Invalid integer: {value[:40]}", param=name, code="parameter_invalid_integer")
        result = int(text)
    if (minimum is not None and result < minimum) or (maximum is not None and result > maximum):
        lo = "-inf" if minimum is None else str(minimum)
        hi = "inf" if maximum is None else str(maximum)
        raise InvalidRequestError(
            f"Invalid {name}: must be between {lo} and {hi}", param=name, code="parameter_invalid_integer"
        )
    return result


def get_map(
    params: Mapping[str, Any], key: str, *, required: bool = False, prefix: tuple[str, ...] = ()
) -> dict[str, Any] | None:
    """A hash parameter (``key[sub]=...``). A list that decoded from ``key[0]``.. keys is turned back."""
    name = param_name(*prefix, key)
    value = params.get(key)
    if value is None or value == "":
        if required:
            raise _missing(name)
        return None
    if isinstance(value, list):
        value = {str(i): v for i, v in enumerate(value)}
    if not isinstance(value, dict):
        raise InvalidRequestError(f"Invalid object: {name} must be a hash", param=name, code="parameter_invalid_object")
    return value
