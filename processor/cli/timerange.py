"""Time ranges of the CLI: ``--from``/``--to`` (unix seconds or ISO 8601) or ``--last 7d``, one rule for every
command that takes a range (usage, rebuild, replay, reconcile, errors list|replay).

``--last`` exists so that a command copied from the README or a runbook means the same thing on any date:
a fixed ``--from 2026-11-01`` goes stale, "the last 7 days" does not. The relative range ends at the next
boundary of the command's alignment (a minute, an hour or a UTC day: what the command requires) and starts
``N`` units before it, so ``usage --last 7d --group day`` shows today and the six days before, and a
``--last 2h`` of a minute-aligned command covers the last two hours up to the current minute's end.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

__all__ = ["UNITS", "parse_last", "parse_time", "range_options", "resolve_range"]

#: ``--last`` units, in seconds.
UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_LAST_RE = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$")


def parse_time(text: str) -> int:
    """Unix seconds, or an ISO 8601 date/time (UTC unless it carries an offset)."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither unix seconds nor an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def parse_last(text: str) -> int:
    """``30m``, ``24h``, ``7d``, ``2w`` → seconds."""
    m = _LAST_RE.match(text)
    if m is None or int(m.group(1)) == 0:
        raise click.BadParameter(
            f"{text!r} is not a duration: a positive number and one of m, h, d, w (e.g. 7d)", param_hint="'--last'"
        )
    return int(m.group(1)) * UNITS[m.group(2)]


def resolve_range(
    start: str | None,
    end: str | None,
    last: str | None,
    *,
    align: int = 1,
    now: int | None = None,
    required: bool = True,
) -> tuple[int | None, int | None]:
    """``(from, to)`` in unix seconds. ``--last`` excludes ``--from``/``--to``; it ends at the next
    ``align`` boundary after ``now`` and spans its duration rounded up to whole ``align`` units.
    With ``required`` a missing bound is a usage error naming the options."""
    if last is not None:
        if start is not None or end is not None:
            raise click.UsageError("--last cannot be combined with --from/--to")
        span = parse_last(last)
        t = int(time.time()) if now is None else now
        hi = (t // align + 1) * align
        lo = hi - -(-span // align) * align
        return lo, hi
    first = _one(start, "--from")
    until = _one(end, "--to")
    if required and (first is None or until is None):
        missing = "--from" if first is None else "--to"
        raise click.UsageError(f"Missing option '{missing}' (or give a relative range such as --last 7d).")
    if first is not None and until is not None and until <= first:
        raise click.UsageError("--to must be after --from")
    return first, until


def _one(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except click.BadParameter as exc:
        raise click.BadParameter(str(exc.message), param_hint=f"'{name}'") from None


def range_options(what: str = "Range", *, to_help: str = "End, exclusive.") -> Callable[[Any], Any]:
    """``--from``, ``--to`` and ``--last`` on a command (parameters ``start``, ``end``, ``last``)."""

    def decorate(f: Any) -> Any:
        f = click.option(
            "--last",
            "last",
            help="Relative range instead of --from/--to: 30m, 24h, 7d, 2w (ends at the current minute/hour/day).",
        )(f)
        f = click.option("--to", "end", help=to_help)(f)
        f = click.option("--from", "start", help=f"{what} start: unix seconds or ISO 8601 (UTC).")(f)
        return f

    return decorate
