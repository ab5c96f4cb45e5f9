"""``meterstream usage``: print a meter's aggregates for one customer, read from Redis."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from processor.cli.timerange import range_options, resolve_range
from processor.config import Settings
from processor.errors import InvalidRequestError, MeterNotFoundError
from processor.meters.model import Meter
from processor.state.connect import SyncRedis, sync_redis
from processor.state.keys import Keys
from processor.state.summaries import Summary, summarize


def find_meter(client: SyncRedis, keys: Keys, ref: str) -> Meter:
    """A meter by id or by event_name, from the Redis mirror of the registry."""
    raw = client.hget(keys.meters, ref)
    if raw is None:
        meter_id = client.hget(keys.meter_names, ref)
        if meter_id is not None and not str(meter_id).startswith("pending:"):
            raw = client.hget(keys.meters, meter_id)
    if raw is None:
        raise MeterNotFoundError(ref)
    return Meter.from_json(raw)


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: Alignment of a ``--last`` range per grouping (Stripe's summaries need minute, hour or day boundaries).
_ALIGN = {None: 60, "hour": 3600, "day": 86400}


def usage_table(meter: Meter, customer: str, rows: list[Summary], start: int, end: int, group: str | None) -> list[str]:
    """The human-readable answer: which meter and customer, a header, one line per bucket, a total.

    An empty bucket reads ``0`` for sum/count (what Stripe's summaries answer) and ``(none)`` for a
    ``last`` meter (no event: no value); sum/count end with a total line."""
    lines = [
        f"meter     {meter.id} ({meter.event_name}, {meter.formula})",
        f"customer  {customer}",
        f"range     {_iso(start)} .. {_iso(end)}" + (f" by {group}" if group else ""),
        "",
        f"{'start':<20}  {'end':<20}  {'value':>20}",
    ]
    for row in rows:
        if row.value is None:
            shown = "(none)" if meter.formula == "last" else "0"
        else:
            shown = str(row.value)
        lines.append(f"{_iso(row.start_time)}  {_iso(row.end_time)}  {shown:>20}")
    if meter.formula != "last" and len(rows) > 1:
        lines.append(f"{'total':<20}  {'':<20}  {sum(r.value or 0 for r in rows):>20}")
    return lines


@click.command("usage")
@click.option("--meter", required=True, help="Meter id (mtr_...) or its event_name.")
@click.option("--customer", required=True, help="Customer id.")
@range_options(
    "Range (inclusive, minute-aligned)", to_help="End (exclusive): unix seconds or ISO 8601, minute-aligned."
)
@click.option("--group", type=click.Choice(["hour", "day"]), default=None, help="One row per hour or UTC day.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@click.pass_obj
def usage(
    settings: Settings,
    meter: str,
    customer: str,
    start: str | None,
    end: str | None,
    last: str | None,
    group: str | None,
    as_json: bool,
) -> None:
    """Print a meter's aggregates for a customer, read from Redis (exact integers).

    \b
    meterstream usage --meter api_requests --customer cus_123 --last 7d --group day
    meterstream usage --meter api_requests --customer cus_123 --from 2026-11-01 --to 2026-12-01
    """
    lo, hi = resolve_range(start, end, last, align=_ALIGN[group])
    assert lo is not None and hi is not None
    client = sync_redis(settings, decode_responses=True)
    keys = Keys(settings.redis_prefix)
    try:
        m = find_meter(client, keys, meter)
        try:
            rows = summarize(
                client, keys, m.id, m.formula, customer, lo, hi, group, retention_days=settings.usage_retention_days
            )
        except InvalidRequestError as exc:
            raise click.UsageError(f"{exc.message} ({exc.param})") from None
    finally:
        client.close()
    if not as_json:
        for line in usage_table(m, customer, rows, lo, hi, group):
            click.echo(line)
        return
    for row in rows:
        click.echo(
            json.dumps(
                {
                    "meter": m.id,
                    "customer": customer,
                    "start_time": row.start_time,
                    "end_time": row.end_time,
                    "aggregated_value": row.value,
                }
            )
        )
