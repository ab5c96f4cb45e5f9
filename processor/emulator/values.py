"""Pure parsing rules of meter events, the emulator's own (it must not borrow the processor's code, so
that the two implementations check each other).

- Values are whole numbers: a decimal string or JSON number with an integral value (``"25"``, ``"-3"``,
  ``"1.0"``, ``"1e3"``, ``7``); not ``"1.5"``, ``"abc"``, ``""``, booleans or containers. At most 15
  significant digits (trailing zeros are not significant), as Stripe enforces since 2026-04-22; absurd
  magnitudes (more than 60 digits in all) count as too many digits so one request cannot make the
  emulator build a huge integer.
- v2 timestamps are ISO 8601 strings; the emulator keeps whole seconds (fractions are truncated).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation

__all__ = ["MAX_SIGNIFICANT_DIGITS", "ValueProblem", "format_iso", "parse_iso", "parse_value"]

MAX_SIGNIFICANT_DIGITS = 15
_MAX_TOTAL_DIGITS = 60


class ValueProblem(Exception):
    """Why a value is not acceptable; ``code`` is Stripe's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_value(raw: object, key: str) -> int:
    """The integer a payload value stands for, or :class:`ValueProblem`."""
    invalid = ValueProblem("meter_event_invalid_value", f"Value key {key} is not a whole number.")
    if isinstance(raw, bool) or raw is None:
        raise invalid
    if isinstance(raw, int):
        number = Decimal(raw)
    elif isinstance(raw, (float, str)):
        text = raw.strip(" \t\r\n") if isinstance(raw, str) else repr(raw)
        if not text or not text.isascii():
            raise invalid
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise invalid from None
    else:
        raise invalid
    if not number.is_finite():
        raise invalid
    if number.adjusted() >= _MAX_TOTAL_DIGITS:
        raise _too_many(raw, key)
    if number != number.to_integral_value():
        raise invalid
    value = int(number)
    digits = str(abs(value)).rstrip("0") or "0"
    if len(digits) > MAX_SIGNIFICANT_DIGITS:
        raise _too_many(raw, key)
    return value


def _too_many(raw: object, key: str) -> ValueProblem:
    shown = str(raw)[:40]
    return ValueProblem(
        "meter_event_value_too_many_digits",
        f"The value in the event payload can have at most {MAX_SIGNIFICANT_DIGITS} digits. Received {shown}.",
    )


def parse_iso(text: str) -> int:
    """Unix seconds of an ISO 8601 timestamp (``2024-06-18T12:00:00.000Z``); naive means UTC.
    Raises ``ValueError`` for anything else."""
    if not isinstance(text, str) or len(text) > 64:
        raise ValueError("not an ISO 8601 timestamp")
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() // 1)


def format_iso(unix: float) -> str:
    """Stripe's v2 time format, UTC with milliseconds: ``2024-06-18T12:00:00.000Z``."""
    moment = dt.datetime.fromtimestamp(unix, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
