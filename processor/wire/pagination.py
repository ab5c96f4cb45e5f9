"""Stripe list objects and cursor pagination.

A Stripe list is ``{"object": "list", "data": [...], "has_more": bool, "url": "/v1/..."}``. ``limit`` is
1..100 (default 10); ``starting_after=<id>`` gives the page after that object, ``ending_before=<id>`` the
page just before it (the ``limit`` objects closest to it, still in list order). ``has_more`` says whether
more objects lie beyond the page in the direction of travel — that is what the SDK's
``auto_paging_iter`` follows.

The cursor arithmetic is separate from how a caller finds a cursor (:func:`page_bounds` takes positions),
so a caller whose items are a sorted index can locate cursors by bisection instead of scanning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from processor.errors import InvalidRequestError
from processor.wire.params import get_int, get_str

__all__ = ["MAX_LIMIT", "PageParams", "list_object", "page_bounds", "paginate_by_id"]

T = TypeVar("T")

DEFAULT_LIMIT = 10
MAX_LIMIT = 100


@dataclass(frozen=True)
class PageParams:
    limit: int = DEFAULT_LIMIT
    starting_after: str | None = None
    ending_before: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PageParams:
        """Read ``limit``/``starting_after``/``ending_before``; 400 on a bad limit or both cursors."""
        limit = get_int(params, "limit", minimum=1, maximum=MAX_LIMIT)
        after = get_str(params, "starting_after", max_length=5000)
        before = get_str(params, "ending_before", max_length=5000)
        return cls.checked(DEFAULT_LIMIT if limit is None else limit, after, before)

    @classmethod
    def checked(cls, limit: int, starting_after: str | None, ending_before: str | None) -> PageParams:
        """Page params from values already typed (the CLI, the registry): the rules every list shares."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequestError(
                f"Invalid limit: must be an integer between 1 and {MAX_LIMIT}, got {limit!r}",
                param="limit",
                code="parameter_invalid_integer",
            )
        if starting_after is not None and ending_before is not None:
            raise InvalidRequestError(
                "You may only specify one of these parameters: ending_before, starting_after.",
                param="ending_before",
                code="parameters_exclusive",
            )
        return cls(limit, starting_after, ending_before)


def page_bounds(
    total: int, page: PageParams, *, after: int | None = None, before: int | None = None
) -> tuple[int, int, bool]:
    """The slice ``[lo, hi)`` of a list of ``total`` items to return, and ``has_more``.

    ``after`` is the index of the first item that follows the ``starting_after`` cursor; ``before`` the
    index just past the last item that precedes the ``ending_before`` cursor. Pass neither for the first
    page.
    """
    if page.ending_before is not None:
        hi = total if before is None else max(0, min(before, total))
        lo = max(0, hi - page.limit)
        return lo, hi, lo > 0
    lo = 0 if after is None else max(0, min(after, total))
    hi = min(total, lo + page.limit)
    return lo, hi, hi < total


def paginate_by_id(
    items: Sequence[T],
    id_of: Callable[[T], str],
    page: PageParams,
    *,
    object_name: str = "object",
) -> tuple[Sequence[T], bool]:
    """One page of ``items`` (already in list order) whose cursors are object ids.

    An unknown cursor is a 400 ``resource_missing`` naming the cursor parameter, as Stripe answers.
    """
    after = before = None
    cursor = page.starting_after if page.starting_after is not None else page.ending_before
    if cursor is not None:
        for i, item in enumerate(items):
            if id_of(item) == cursor:
                after, before = i + 1, i
                break
        else:
            param = "starting_after" if page.starting_after is not None else "ending_before"
            raise InvalidRequestError(f"No such {object_name}: '{cursor[:100]}'", param=param, code="resource_missing")
    lo, hi, more = page_bounds(len(items), page, after=after, before=before)
    return items[lo:hi], more


def list_object(data: Sequence[Any], *, has_more: bool, url: str) -> dict[str, Any]:
    """Stripe's list envelope."""
    return {"object": "list", "data": list(data), "has_more": has_more, "url": url}
