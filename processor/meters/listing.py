"""Stripe-style list pagination over meters, as a pure function (the registry, the gateway and the CLI
share it, and it is property-tested without Redis).

Order is Stripe's: newest first. ``created`` has one-second resolution, so meters created in the same
second are ordered by id (descending) to keep pages stable. Cursors are positions in the *unfiltered*
order, so a cursor stays valid when the meter it names does not match the ``status`` filter.
"""

from __future__ import annotations

from collections.abc import Iterable

from processor.errors import InvalidRequestError, MeterValidationError
from processor.meters.model import Meter

__all__ = ["MAX_LIMIT", "STATUSES", "order_key", "paginate"]

MAX_LIMIT = 100
STATUSES = ("active", "inactive")


def order_key(meter: Meter) -> tuple[int, str]:
    """Sort key for Stripe's newest-first order (use with ``reverse=True``)."""
    return (meter.created, meter.id)


def paginate(
    meters: Iterable[Meter],
    *,
    status: str | None = None,
    limit: int = 10,
    starting_after: str | None = None,
    ending_before: str | None = None,
) -> tuple[list[Meter], bool]:
    """One page of ``meters`` and ``has_more``, with Stripe's list params and errors.

    ``starting_after`` pages towards older meters, ``ending_before`` towards newer ones (the page holds
    the ``limit`` meters just before the cursor, still newest first); ``has_more`` says whether more lie
    beyond the page in the direction of travel.
    """
    if status is not None and status not in STATUSES:
        raise MeterValidationError(
            "Invalid status: must be one of active or inactive", param="status", code="parameter_invalid_string"
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise MeterValidationError(
            f"Invalid limit: must be an integer between 1 and {MAX_LIMIT}, got {limit!r}",
            param="limit",
            code="parameter_invalid_integer",
        )
    if starting_after is not None and ending_before is not None:
        raise InvalidRequestError(
            "You may only specify one of these parameters: ending_before, starting_after.",
            param="starting_after",
            code="parameters_exclusive",
        )
    ordered = sorted(meters, key=order_key, reverse=True)

    def position(cursor: str, param: str) -> int:
        for index, meter in enumerate(ordered):
            if meter.id == cursor:
                return index
        raise InvalidRequestError(f"No such billing.meter: '{cursor}'", param=param, code="resource_missing")

    if ending_before is not None:
        before = [m for m in ordered[: position(ending_before, "ending_before")] if _keep(m, status)]
        page = before[-limit:]
        return page, len(before) > limit
    start = position(starting_after, "starting_after") + 1 if starting_after is not None else 0
    after = [m for m in ordered[start:] if _keep(m, status)]
    return after[:limit], len(after) > limit


def _keep(meter: Meter, status: str | None) -> bool:
    return status is None or meter.status == status
