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
from processor.wire.pagination import MAX_LIMIT, PageParams, page_bounds

__all__ = ["MAX_LIMIT", "STATUSES", "order_key", "paginate"]
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
    """One page of ``meters`` and ``has_more``, with Stripe's list params and errors (the limit, cursor and
    page arithmetic are :mod:`processor.wire.pagination`'s, shared with every list of the HTTP API).

    ``starting_after`` pages towards older meters, ``ending_before`` towards newer ones (the page holds
    the ``limit`` meters just before the cursor, still newest first); ``has_more`` says whether more lie
    beyond the page in the direction of travel.
    """
    if status is not None and status not in STATUSES:
        raise MeterValidationError(
            "Invalid status: must be one of active or inactive", param="status", code="parameter_invalid_string"
        )
    page = PageParams.checked(limit, starting_after, ending_before)
    ordered = sorted(meters, key=order_key, reverse=True)

    def position(cursor: str, param: str) -> int:
        for index, meter in enumerate(ordered):
            if meter.id == cursor:
                return index
        raise InvalidRequestError(f"No such billing.meter: '{cursor[:100]}'", param=param, code="resource_missing")

    # Cursors are positions in the unfiltered order; the status filter applies to what lies beyond them.
    if page.ending_before is not None:
        candidates = [m for m in ordered[: position(page.ending_before, "ending_before")] if _keep(m, status)]
    else:
        start = position(page.starting_after, "starting_after") + 1 if page.starting_after is not None else 0
        candidates = [m for m in ordered[start:] if _keep(m, status)]
    lo, hi, more = page_bounds(len(candidates), page)
    return candidates[lo:hi], more


def _keep(meter: Meter, status: str | None) -> bool:
    return status is None or meter.status == status
