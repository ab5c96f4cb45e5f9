"""``meterstream processor``: run the stream processor."""

from __future__ import annotations

import click


@click.command("processor")
def processor() -> None:
    """Run the stream processor (Kafka → Redis aggregates → accepted topic)."""
    raise click.ClickException("not implemented yet")
