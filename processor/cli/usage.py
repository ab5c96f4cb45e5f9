"""``meterstream usage``: print aggregates from Redis."""

from __future__ import annotations

import click


@click.command("usage")
def usage() -> None:
    """Print a meter's aggregates for a customer from Redis."""
    raise click.ClickException("not implemented yet")
