"""Time windows and orderings. Pure functions: the single place where a timestamp becomes a bucket.

Buckets are UTC (unix time has no offsets), so an hour bucket is ``ts - ts % 3600`` and a day bucket
``ts - ts % 86400``; Python's ``%`` floors, which keeps this right for timestamps before 1970 too.
Ranks are fixed-width strings so that Lua (which has only doubles) can compare them exactly.
"""

from __future__ import annotations

__all__ = ["DAY", "HOUR", "bucket", "day_start", "hour_start", "received_rank", "timestamp_rank"]

HOUR = 3600
DAY = 86_400


def hour_start(ts: int) -> int:
    return ts - ts % HOUR


def day_start(ts: int) -> int:
    return ts - ts % DAY


def bucket(ts: int, window: str) -> int:
    """Start of the ``window`` ("hour" or "day") that holds ``ts``."""
    if window == "hour":
        return hour_start(ts)
    if window == "day":
        return day_start(ts)
    raise ValueError(f"unknown window {window!r}")


def received_rank(received_ms: int, partition: int, offset: int) -> str:
    """Order of "most recently received": received time, then partition, then offset.

    Pre-aggregated meters keep the event with the greatest rank in each window.
    """
    return f"{received_ms:015d}.{partition:05d}.{offset:015d}"


def timestamp_rank(ts: int, received_ms: int, partition: int, offset: int) -> str:
    """Order for the ``last`` formula: the latest event timestamp, ties to the later received."""
    return f"{ts + 10**11:012d}." + received_rank(received_ms, partition, offset)
