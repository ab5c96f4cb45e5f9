"""Whole numbers as Stripe accepts them, parsed exactly (no floats anywhere).

Accepted: JSON integers, JSON numbers with an integral value (``25.0``, ``1e3``; the record is parsed with
``parse_float=Decimal`` so nothing is rounded), and strings holding such a number (``"25"``, ``"-3"``,
``"1.0"``). Not accepted: ``"1.5"``, ``"abc"``, ``""``, booleans, null, objects, NaN/Infinity.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from processor.limits import MAX_SIGNIFICANT_DIGITS, MAX_TOTAL_DIGITS

__all__ = ["MAX_SIGNIFICANT_DIGITS", "MAX_TOTAL_DIGITS", "parse_whole", "significant_digits"]

# Guard against "1e999999999": Decimal would happily build a number with a billion digits.
_MAX_EXPONENT = 400


def parse_whole(value: object) -> int | None:
    """The integer ``value`` denotes, or ``None`` when it is not a whole number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        dec = value
    elif isinstance(value, float):
        dec = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip(" \t\n\r")
        if not text or len(text) > 1000 or not text.isascii():  # ASCII digits only: Arabic-Indic five is not 5
            return None
        try:
            dec = Decimal(text)
        except InvalidOperation:
            return None
    else:
        return None
    if not dec.is_finite():
        return None
    if dec.adjusted() > _MAX_EXPONENT:
        return None
    if dec != dec.to_integral_value():
        return None
    return int(dec)


def significant_digits(value: int) -> int:
    """Decimal digits without sign, leading zeros and trailing zeros (``1000`` → 1, ``0`` → 1)."""
    text = str(abs(value)).rstrip("0")
    return max(1, len(text))
