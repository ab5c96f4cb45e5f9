"""``meterstream meters create|list|show|rename|deactivate|reactivate|apply|sync``.

Each command is one call on :class:`~processor.meters.MeterRegistry`; errors (validation, conflicts,
unknown ids) surface through the CLI group as one ``error:`` line with a non-zero exit code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from processor.config import Settings
from processor.meters import Meter, MeterRegistry
from processor.meters.apply import apply_file
from processor.meters.listing import MAX_LIMIT


@contextmanager
def _registry(settings: Settings) -> Iterator[MeterRegistry]:
    registry = MeterRegistry(settings)
    try:
        yield registry
    finally:
        registry.close()


def _echo_meter(meter: Meter) -> None:
    click.echo(json.dumps(meter.to_dict(), indent=2, sort_keys=True))


@click.group()
def meters() -> None:
    """Create and manage meters (Stripe's billing.meter)."""


@meters.command("create")
@click.option("--event-name", required=True, help="The event_name meter events carry (max 100 characters).")
@click.option("--display-name", required=True, help="Human-readable name (max 250 characters).")
@click.option("--formula", required=True, type=click.Choice(["sum", "count", "last"]), help="Aggregation formula.")
@click.option(
    "--window", type=click.Choice(["hour", "day"]), default=None, help="Pre-aggregated ingestion window (default: raw)."
)
@click.option("--customer-key", default=None, help="Payload key holding the customer id (default stripe_customer_id).")
@click.option("--value-key", default=None, help="Payload key holding the value (default value).")
@click.pass_obj
def create(
    settings: Settings,
    event_name: str,
    display_name: str,
    formula: str,
    window: str | None,
    customer_key: str | None,
    value_key: str | None,
) -> None:
    """Create a meter; prints it as JSON. Meters cannot be changed afterwards except their display name."""
    params: dict[str, Any] = {
        "event_name": event_name,
        "display_name": display_name,
        "default_aggregation": {"formula": formula},
    }
    if window is not None:
        params["event_time_window"] = window
    if customer_key is not None:
        params["customer_mapping"] = {"event_payload_key": customer_key, "type": "by_id"}
    if value_key is not None:
        params["value_settings"] = {"event_payload_key": value_key}
    with _registry(settings) as registry:
        _echo_meter(registry.create(params))


@meters.command("list")
@click.option("--status", type=click.Choice(["active", "inactive"]), default=None, help="Only meters with this status.")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=MAX_LIMIT, show_default=True)
@click.option("--starting-after", default=None, metavar="ID", help="Page after this meter id (older meters).")
@click.option("--json", "as_json", is_flag=True, help="Print Stripe's list object instead of a table.")
@click.pass_obj
def list_meters(settings: Settings, status: str | None, limit: int, starting_after: str | None, as_json: bool) -> None:
    """List meters, newest first."""
    with _registry(settings) as registry:
        page, has_more = registry.list(status=status, limit=limit, starting_after=starting_after)
    if as_json:
        body = {
            "object": "list",
            "data": [m.to_dict() for m in page],
            "has_more": has_more,
            "url": "/v1/billing/meters",
        }
        click.echo(json.dumps(body, indent=2, sort_keys=True))
        return
    rows = [("ID", "EVENT_NAME", "FORMULA", "WINDOW", "STATUS", "DISPLAY_NAME")]
    rows += [(m.id, m.event_name, m.formula, m.event_time_window or "-", m.status, m.display_name) for m in page]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    if has_more:
        click.echo(f"(more: --starting-after {page[-1].id})")


@meters.command("show")
@click.argument("meter_id")
@click.pass_obj
def show(settings: Settings, meter_id: str) -> None:
    """Print one meter as JSON."""
    with _registry(settings) as registry:
        _echo_meter(registry.get(meter_id))


@meters.command("rename")
@click.argument("meter_id")
@click.argument("display_name")
@click.pass_obj
def rename(settings: Settings, meter_id: str, display_name: str) -> None:
    """Change a meter's display name (the only setting that can change)."""
    with _registry(settings) as registry:
        _echo_meter(registry.rename(meter_id, display_name))


@meters.command("deactivate")
@click.argument("meter_id")
@click.pass_obj
def deactivate(settings: Settings, meter_id: str) -> None:
    """Stop accepting events for a meter (they are rejected with archived_meter)."""
    with _registry(settings) as registry:
        _echo_meter(registry.deactivate(meter_id))


@meters.command("reactivate")
@click.argument("meter_id")
@click.pass_obj
def reactivate(settings: Settings, meter_id: str) -> None:
    """Accept events for a deactivated meter again."""
    with _registry(settings) as registry:
        _echo_meter(registry.reactivate(meter_id))


@meters.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Only show what would change.")
@click.pass_obj
def apply(settings: Settings, file: Path, dry_run: bool) -> None:
    """Make the meters match FILE (a JSON or YAML list of Stripe create params, optionally with status).

    Idempotent: a second run reports every entry unchanged. Entries that would change an immutable
    setting are reported as errors (exit code 1); the other entries are still applied.
    """
    with _registry(settings) as registry:
        changes = apply_file(registry, file, dry_run=dry_run)
    for change in changes:
        click.echo(("(dry run) " if dry_run and change.action not in ("unchanged", "error") else "") + change.line())
    errors = sum(1 for c in changes if c.action == "error")
    if errors:
        click.echo(f"{errors} entr{'y' if errors == 1 else 'ies'} failed", err=True)
        raise SystemExit(1)


@meters.command("sync")
@click.option("--prune", is_flag=True, help="Drop mirror entries missing from the topic instead of restoring them.")
@click.pass_obj
def sync(settings: Settings, prune: bool) -> None:
    """Rebuild the Redis mirror from the meters topic and repair interrupted creates."""
    with _registry(settings) as registry:
        report = registry.sync(prune=prune)
    for line in report.lines():
        click.echo(line)
