"""Stripe's v2 time format: ISO 8601 strings on the wire (v1 uses Unix seconds).

Requests carry ``timestamp`` as ``2024-06-18T12:00:00.000Z`` (any ISO 8601 form Python reads; a time
without an offset is UTC); responses use UTC with milliseconds, as Stripe does. Only whole seconds are
kept: meter events are bucketed by second, and Unix seconds are what the topics carry.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["format_iso", "meter_event_session", "parse_iso"]

_MAX_LEN = 64


def parse_iso(text: object) -> int:
    """Unix seconds of an ISO 8601 date-time (fractions truncated toward the past); ``ValueError`` for
    anything else, including non-strings and absurdly long strings."""
    if not isinstance(text, str) or len(text) > _MAX_LEN or not text.isascii():  # ASCII digits only
        raise ValueError("not an ISO 8601 date-time")
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() // 1)


def format_iso(unix: float) -> str:
    """``unix`` seconds as Stripe's v2 time: UTC with milliseconds, ``2024-06-18T12:00:00.000Z``."""
    moment = dt.datetime.fromtimestamp(unix, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def meter_event_session(session_id: str, token: str, created: float, expires_at: float) -> dict[str, object]:
    """Stripe's ``v2.billing.meter_event_session`` object (the same shape from the gateway and the emulator)."""
    return {
        "id": session_id,
        "object": "v2.billing.meter_event_session",
        "authentication_token": token,
        "created": format_iso(created),
        "expires_at": format_iso(expires_at),
        "livemode": False,
    }
