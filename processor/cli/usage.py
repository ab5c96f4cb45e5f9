"""``meterstream usage``: print a meter's aggregates for one customer, read from Redis."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from processor.config import Settings
from processor.errors import InvalidRequestError, MeterNotFoundError
from processor.meters.model import Meter
from processor.state.connect import SyncRedis, sync_redis
from processor.state.keys import Keys
from processor.state.summaries import summarize


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


@click.command("usage")
@click.option("--meter", required=True, help="Meter id (mtr_...) or its event_name.")
@click.option("--customer", required=True, help="Customer id.")
@click.option("--from", "start", required=True, help="Start (inclusive): unix seconds or ISO 8601, minute-aligned.")
@click.option("--to", "end", required=True, help="End (exclusive): unix seconds or ISO 8601, minute-aligned.")
@click.option("--group", type=click.Choice(["hour", "day"]), default=None, help="One row per hour or UTC day.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@click.pass_obj
def usage(
    settings: Settings, meter: str, customer: str, start: str, end: str, group: str | None, as_json: bool
) -> None:
    """Print a meter's aggregates for a customer, read from Redis (exact integers)."""
    client = sync_redis(settings, decode_responses=True)
    keys = Keys(settings.redis_prefix)
    try:
        m = find_meter(client, keys, meter)
        try:
            rows = summarize(
                client,
                keys,
                m.id,
                m.formula,
                customer,
                parse_time(start),
                parse_time(end),
                group,
                retention_days=settings.usage_retention_days,
            )
        except InvalidRequestError as exc:
            raise click.UsageError(f"{exc.message} ({exc.param})") from None
    finally:
        client.close()
    for row in rows:
        if as_json:
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
        else:
            shown = "-" if row.value is None else str(row.value)
            click.echo(f"{_iso(row.start_time)}  {_iso(row.end_time)}  {shown:>20}")
