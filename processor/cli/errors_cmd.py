"""``meterstream errors list|show|replay``: read the error topic and replay rejected events.

``list`` is what an on-call person reads first after "usage is missing", so each line says whose event it
was (the customer, read with the meter's customer key) and whether it was already replayed — a list that
shows fixed errors as if they were open sends people chasing problems that are gone.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from processor.cli.timerange import range_options, resolve_range
from processor.config import Settings
from processor.ops.console import echo_decisions, iso

__all__ = ["customer_of", "errors", "replay_state"]

#: ``replayed`` column: what the errors-replayed record says about an error.
REPLAY_STATES = {"d": "replayed", "p": "replaying"}


@click.group("errors")
def errors() -> None:
    """Read the error topic (meter-event-errors) and replay rejected events once their cause is fixed."""


@dataclass(frozen=True)
class _Filters:
    """The options that choose error records, shared by ``list`` and ``replay``."""

    codes: tuple[str, ...]
    meter: str | None
    start: str | None
    end: str | None
    last: str | None

    def read(self, settings: Settings) -> Any:
        """The error records that match, oldest first."""
        from processor.meters.log import load_meters
        from processor.ops.rejected import read_errors

        names: list[str] = []
        if self.meter is not None:
            _, latest = load_meters(settings)
            names = [latest[self.meter].event_name] if self.meter in latest else [self.meter]
        lo, hi = resolve_range(self.start, self.end, self.last, align=60, required=False)
        return read_errors(
            settings,
            codes=self.codes,
            event_names=names,
            start_ms=None if lo is None else lo * 1000,
            end_ms=None if hi is None else hi * 1000,
        )


def _with_filters(f: Callable[..., Any]) -> Callable[..., Any]:
    """The filter options on a command, handed to it as one ``filters`` argument."""

    @functools.wraps(f)
    def command(
        *args: Any,
        codes: tuple[str, ...],
        meter: str | None,
        start: str | None,
        end: str | None,
        last: str | None,
        **kwargs: Any,
    ) -> Any:
        return f(*args, filters=_Filters(codes, meter, start, end, last), **kwargs)

    wrapped: Callable[..., Any] = range_options("Received time", to_help="Received time to, exclusive.")(command)
    wrapped = click.option("--meter", help="Meter id or event_name of the rejected events.")(wrapped)
    return click.option("--code", "codes", multiple=True, help="Stripe error code (repeatable), e.g. no_meter.")(
        wrapped
    )


def customer_of(error: Any, customer_keys: dict[str, str]) -> str | None:
    """The customer of a rejected event: its payload under the meter's customer key (by event_name),
    else ``stripe_customer_id``. None for a cancellation or an unreadable event."""
    event = error.event
    if not isinstance(event, dict) or not isinstance(event.get("payload"), dict):
        return None
    key = customer_keys.get(str(event.get("event_name")), "stripe_customer_id")
    value = event["payload"].get(key)
    return value if isinstance(value, str) and value else None


def replay_state(client: Any, settings: Settings, found: list[Any]) -> list[str | None]:
    """Per error: ``replayed``, ``replaying`` (a replay started, not acknowledged) or None."""
    from processor.ops.rejected import replay_marks
    from processor.state.keys import Keys

    marks = replay_marks(client, Keys(settings.redis_prefix), found)
    return [REPLAY_STATES.get(m[:1]) if m else None for m in marks]


def _error_line(e: Any, customer: str | None = None, state: str | None = None) -> str:
    when = iso((e.received_at or 0) // 1000)
    return (
        f"{when}  {e.code:<28}  {e.ref:<30}  {e.event_name or '-':<24}  {customer or '-':<20}  {state or '-':<9}"
        f"  {e.message}"
    )


ERROR_HEADER = (
    f"{'received':<20}  {'code':<28}  {'record':<30}  {'event_name':<24}  {'customer':<20}  {'replayed':<9}  message"
)


@errors.command("list")
@_with_filters
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True, help="Lines shown.")
@click.option("--json", "as_json", is_flag=True, help="Print the error records as JSON lines.")
@click.pass_obj
def errors_list(settings: Settings, filters: _Filters, limit: int, as_json: bool) -> None:
    """List rejected records (oldest first) with their customer and whether they were already replayed,
    and count them by code. --json adds "customer" and "replayed" to each error record."""
    from processor.meters.log import load_meters
    from processor.state.connect import sync_redis

    found = filters.read(settings)
    if not found:
        if not as_json:
            click.echo("no rejected events match")
        return
    _, latest = load_meters(settings)
    customer_keys = {m.event_name: m.customer_key for m in latest.values()}
    shown = found[:limit]
    client = sync_redis(settings)
    try:
        states = replay_state(client, settings, shown)
    finally:
        client.close()
    if as_json:
        for e, state in zip(shown, states, strict=True):
            extra = {"customer": customer_of(e, customer_keys), "replayed": state}
            click.echo(json.dumps({**e.raw, **extra}, ensure_ascii=False))
        return
    click.echo(ERROR_HEADER)
    for e, state in zip(shown, states, strict=True):
        click.echo(_error_line(e, customer_of(e, customer_keys), state))
    if len(found) > limit:
        click.echo(f"... {len(found) - limit} more (raise --limit)")
    by_code = Counter(e.code for e in found)
    replayed = sum(1 for s in states if s == "replayed")
    click.echo(
        f"{len(found)} rejected event(s): "
        + ", ".join(f"{c} {n}" for c, n in by_code.most_common())
        + (f"; {replayed} of those shown already replayed" if replayed else "")
    )


@errors.command("show")
@click.argument("ref")
@click.pass_obj
def errors_show(settings: Settings, ref: str) -> None:
    """Print the full error record(s) of one original record, REF = <topic>/<partition>/<offset> as
    `errors list` shows it."""
    from processor.errors import InvalidRequestError
    from processor.ops.rejected import read_errors

    found = [e for e in read_errors(settings) if e.ref == ref]
    if not found:
        raise InvalidRequestError(f"no error record for {ref} on the error topic", code="resource_missing")
    for e in found:
        click.echo(json.dumps(e.raw, indent=2, ensure_ascii=False))


@errors.command("replay")
@_with_filters
@click.option("--dry-run", is_flag=True, help="Only say what would and would not be replayed.")
@click.option("--list", "list_items", is_flag=True, help="One line per error with its decision.")
@click.pass_obj
def errors_replay(settings: Settings, filters: _Filters, dry_run: bool, list_items: bool) -> None:
    """Re-publish rejected events whose cause is fixed (e.g. no_meter after the meter was created),
    each at most once, with its original identifier and time.

    \b
    meterstream errors replay --code no_meter --meter api_requests --dry-run
    """
    from processor.meters.log import load_meters
    from processor.ops.rejected import plan_errors_replay, run_errors_replay
    from processor.state.connect import sync_redis
    from processor.state.keys import Keys

    found = filters.read(settings)
    book, _ = load_meters(settings)
    client = sync_redis(settings)
    plan = plan_errors_replay(client, Keys(settings.redis_prefix), book, found)
    echo_decisions(Counter((i.send, i.reason) for i in plan), "will replay", "will not replay")
    if list_items:
        for item in plan:
            click.echo(f"  {'send' if item.send else 'skip'}  {_error_line(item.error)}  -> {item.reason}")
    if dry_run:
        return
    result = run_errors_replay(settings, client, plan)
    click.echo(f"replayed {result.published} record(s) into their input topics")
