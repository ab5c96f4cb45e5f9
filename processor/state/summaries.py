"""Meter event summaries answered from the Redis aggregates, with Stripe's parameter rules.

Used by ``meterstream usage`` and by the gateway's ``GET /v1/billing/meters/{id}/event_summaries``.
A range ``[start, end)`` (minute-aligned) is split into whole days, whole hours and single minutes, each
read from its bucket hash; that is exact for every formula:

- ``sum`` / ``count`` add their parts;
- ``last`` is the value of the latest non-empty part (parts are disjoint and in time order, so the latest
  event of the range is in the latest non-empty part).

The work never grows with the width of a range: a run of whole days is read as the day hash (as many
fields as days holding usage), and the gateway's grouped lists page over :func:`usage_windows` (the
windows holding usage) instead of listing every window of the range.

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

__all__ = [
    "MAX_GROUPED_WINDOWS",
    "Summary",
    "check_range",
    "split_range",
    "summarize",
    "usage_windows",
    "window_values",
]

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


#: Most windows :func:`summarize` returns for one grouped range (it lists empty windows too, so its work
#: grows with the range): 10 years of hours. The gateway pages with :func:`usage_windows` instead.
MAX_GROUPED_WINDOWS = 87_840


def split_range(start: int, end: int) -> list[tuple[str, int, int]]:
    """``[start, end)`` as disjoint parts in time order: ``(kind, part start, part end)`` with kind
    "minute", "hour" or "days" (a run of whole UTC days, read from the day hash at once).

    At most 59 minutes and 23 hours on each side of one run of days, so the parts of any range, however
    wide, are a bounded handful: the work of a summary never grows with the width of its range.
    """
    parts: list[tuple[str, int, int]] = []
    t = start
    while t < end:
        if t % DAY_S == 0 and t + DAY_S <= end:
            stop = t + (end - t) // DAY_S * DAY_S
            parts.append(("days", t, stop))
            t = stop
        elif t % HOUR_S == 0 and t + HOUR_S <= end:
            parts.append(("hour", t, t + HOUR_S))
            t += HOUR_S
        else:
            parts.append(("minute", t, t + MINUTE_S))
            t += MINUTE_S
    return parts


def _value(raw: Any) -> int | None:
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    if "|" in text:  # raw `last` minute buckets hold "rank|value"
        text = text.rsplit("|", 1)[1]
    return int(text)


def _field(raw: Any) -> int | None:
    """A bucket hash's field (a window start in unix seconds) as an int; ``None`` for anything else."""
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return int(text) if text.isascii() and text.isdigit() else None


def _read(
    client: Any, keys: Keys, meter_id: str, formula: str, customer: str, parts: list[tuple[str, int, int]]
) -> list[int | None]:
    """The value of each part, in the order given. A "days" part combines the day buckets inside it with
    the meter's formula; the day hash is read whole, so its cost is the number of days holding usage,
    never the number of days in the part."""
    by_key: dict[str, list[int]] = {}
    runs: list[tuple[int, int, int]] = []  # (part index, run start, run end)
    for i, (kind, t, stop) in enumerate(parts):
        if kind == "days":
            runs.append((i, t, stop))
            continue
        key = keys.usage_hour(meter_id, customer) if kind == "hour" else keys.minutes(meter_id, customer, t - t % DAY_S)
        by_key.setdefault(key, []).append(i)
    pipe = client.pipeline(transaction=False)
    order = list(by_key.items())
    for key, idxs in order:
        pipe.hmget(key, [str(parts[i][1]) for i in idxs])
    if runs:
        pipe.hgetall(keys.usage_day(meter_id, customer))
    results = pipe.execute() if order or runs else []
    out: list[int | None] = [None] * len(parts)
    for (_, idxs), values in zip(order, results, strict=False):
        for i, raw in zip(idxs, values, strict=True):
            out[i] = _value(raw)
    if runs:
        days = sorted((day, raw) for f, raw in results[-1].items() if (day := _field(f)) is not None)
        for i, lo, hi in runs:
            out[i] = _combine(formula, [_value(raw) for day, raw in days if lo <= day < hi])
    return out


def _combine(formula: str, values: list[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if formula == "last":
        return present[-1]
    return sum(present)


def usage_windows(
    client: Any, keys: Keys, meter_id: str, customer: str, start: int, end: int, grouping: str
) -> list[int]:
    """The starts of the hour / day windows in ``[start, end)`` that hold usage, ascending.

    Only the bucket hash's field names are read (HKEYS): the cost is the number of windows this customer
    ever had usage in, never the width of the range, so a range of a million years costs what a day does.
    """
    check_range(start, end, grouping)
    key = keys.usage_hour(meter_id, customer) if grouping == "hour" else keys.usage_day(meter_id, customer)
    return sorted(t for f in client.hkeys(key) if (t := _field(f)) is not None and start <= t < end)


def window_values(
    client: Any, keys: Keys, meter_id: str, customer: str, grouping: str, starts: list[int]
) -> list[int | None]:
    """The values of the hour / day windows starting at ``starts`` (one HMGET: a page's worth)."""
    if not starts:
        return []
    key = keys.usage_hour(meter_id, customer) if grouping == "hour" else keys.usage_day(meter_id, customer)
    return [_value(raw) for raw in client.hmget(key, [str(t) for t in starts])]


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
        return [Summary(start, end, _combine(formula, _read(client, keys, meter_id, formula, customer, parts)))]
    step = HOUR_S if grouping == "hour" else DAY_S
    if (end - start) // step > MAX_GROUPED_WINDOWS:
        raise InvalidRequestError(
            f"The range holds more than {MAX_GROUPED_WINDOWS} {grouping} windows; ask for a shorter one.",
            param="end_time",
        )
    starts = list(range(start, end, step))
    values = window_values(client, keys, meter_id, customer, grouping, starts)
    return [Summary(t, t + step, v) for t, v in zip(starts, values, strict=True)]
