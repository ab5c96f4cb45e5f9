"""``meterstream events send|cancel``: publish meter events and cancellations."""

from __future__ import annotations

import click


@click.group()
def events() -> None:
    """Publish meter events and cancellations to Kafka."""
