"""Pure parsing rules of meter events, the emulator's own (it must not borrow the processor's code, so
that the two implementations check each other). Wire formats are not rules: v2's ISO 8601 times come from
:mod:`processor.wire.times`, shared with the gateway as SPEC §6 asks.

- Values are whole numbers: a decimal string or JSON number with an integral value (``"25"``, ``"-3"``,
  ``"1.0"``, ``"1e3"``, ``7``); not ``"1.5"``, ``"abc"``, ``""``, booleans or containers. At most 15
  significant digits (trailing zeros are not significant), as Stripe enforces since 2026-04-22; absurd
  magnitudes (more than 60 digits in all) count as too many digits so one request cannot make the
  emulator build a huge integer.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = ["MAX_SIGNIFICANT_DIGITS", "ValueProblem", "parse_value"]

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
