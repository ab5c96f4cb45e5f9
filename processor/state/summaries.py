"""Meter event summaries answered from the Redis aggregates, with Stripe's parameter rules.

Used by ``meterstream usage`` and by the gateway's ``GET /v1/billing/meters/{id}/event_summaries``.
A range ``[start, end)`` (minute-aligned) is split into whole days, whole hours and single minutes, each
read from its bucket hash; that is exact for every formula:

- ``sum`` / ``count`` add their parts;
- ``last`` is the value of the latest non-empty part (parts are disjoint and in time order, so the latest
  event of the range is in the latest non-empty part).

Buckets are kept ``METERSTREAM_USAGE_RETENTION_DAYS`` from their start (keys.USAGE_RETENTION_DAYS, 70 by
default): a range starting before that is refused (``retention_days``) rather than answered from buckets
that may be gone.
Values are exact integers (Python ints); the gateway turns them into Stripe's float ``aggregated_value``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from processor.errors import InvalidRequestError
from processor.state.keys import DAY_S, HOUR_S, Keys

__all__ = ["Summary", "check_range", "split_range", "summarize"]

MINUTE_S = 60


@dataclass(frozen=True)
class Summary:
    start_time: int
    end_time: int
    value: int | None  # None: no event in the window (a `last` meter reports nothing; sum/count report 0)

    @property
    def aggregated_value(self) -> int:
        return 0 if self.value is None else self.value


def check_range(start: int, end: int, grouping: str | None) -> None:
    """Stripe's rules: minute alignment always; hour / UTC-day alignment for the grouping window."""
    if start % MINUTE_S:
        raise InvalidRequestError("start_time must be aligned with minute boundaries.", param="start_time")
    if end % MINUTE_S:
        raise InvalidRequestError("end_time must be aligned with minute boundaries.", param="end_time")
    if end <= start:
        raise InvalidRequestError("end_time must be after start_time.", param="end_time")
    if grouping == "hour":
        for name, value in (("start_time", start), ("end_time", end)):
            if value % HOUR_S:
                raise InvalidRequestError(
                    f"{name} must be aligned with hour boundaries when value_grouping_window is hour.", param=name
                )
    elif grouping == "day":
        for name, value in (("start_time", start), ("end_time", end)):
            if value % DAY_S:
                raise InvalidRequestError(
                    f"{name} must be aligned with day boundaries (00:00 UTC) when value_grouping_window is day.",
                    param=name,
                )
    elif grouping is not None:
        raise InvalidRequestError(
            "Invalid value_grouping_window: must be one of hour or day", param="value_grouping_window"
        )


def split_range(start: int, end: int) -> list[tuple[str, int]]:
    """``[start, end)`` as disjoint parts in time order: ("minute"|"hour"|"day", part start)."""
    parts: list[tuple[str, int]] = []
    t = start
    while t < end:
        if t % DAY_S == 0 and t + DAY_S <= end:
            parts.append(("day", t))
            t += DAY_S
        elif t % HOUR_S == 0 and t + HOUR_S <= end:
            parts.append(("hour", t))
            t += HOUR_S
        else:
            parts.append(("minute", t))
            t += MINUTE_S
    return parts


def _value(raw: Any) -> int | None:
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    if "|" in text:  # raw `last` minute buckets hold "rank|value"
        text = text.rsplit("|", 1)[1]
    return int(text)


def _read(client: Any, keys: Keys, meter_id: str, customer: str, parts: list[tuple[str, int]]) -> list[int | None]:
    by_key: dict[str, list[int]] = {}
    for i, (kind, t) in enumerate(parts):
        if kind == "day":
            key = keys.usage_day(meter_id, customer)
        elif kind == "hour":
            key = keys.usage_hour(meter_id, customer)
        else:
            key = keys.minutes(meter_id, customer, t - t % DAY_S)
        by_key.setdefault(key, []).append(i)
    pipe = client.pipeline(transaction=False)
    order = list(by_key.items())
    for key, idxs in order:
        pipe.hmget(key, [str(parts[i][1]) for i in idxs])
    out: list[int | None] = [None] * len(parts)
    for (_, idxs), values in zip(order, pipe.execute(), strict=True):
        for i, raw in zip(idxs, values, strict=True):
            out[i] = _value(raw)
    return out


def _combine(formula: str, values: list[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if formula == "last":
        return present[-1]
    return sum(present)


def summarize(
    client: Any,
    keys: Keys,
    meter_id: str,
    formula: str,
    customer: str,
    start: int,
    end: int,
    grouping: str | None = None,
    *,
    retention_days: int | None = None,
    now: int | None = None,
) -> list[Summary]:
    """Summaries of ``[start, end)`` for one customer, oldest first: one per hour/day window when grouped
    (every window, empty ones included), else a single one for the whole range. With ``retention_days``
    (the deployment's usage retention), a range starting before ``now`` minus that many days is refused."""
    check_range(start, end, grouping)
    if retention_days is not None:
        oldest = (int(time.time()) if now is None else now) - retention_days * DAY_S
        if start < oldest:
            raise InvalidRequestError(
                f"start_time is older than this deployment's usage retention ({retention_days} days): "
                f"it must be at or after {oldest}.",
                param="start_time",
            )
    if grouping is None:
        parts = split_range(start, end)
        return [Summary(start, end, _combine(formula, _read(client, keys, meter_id, customer, parts)))]
    step = HOUR_S if grouping == "hour" else DAY_S
    windows = [(grouping, t) for t in range(start, end, step)]
    values = _read(client, keys, meter_id, customer, windows)
    return [Summary(t, t + step, v) for (_, t), v in zip(windows, values, strict=True)]
