"""``meterstream meters ...`` (owned by the meters work: create|list|show|rename|deactivate|reactivate|apply)."""

from __future__ import annotations

import click


@click.group()
def meters() -> None:
    """Create and manage meters (Stripe's billing.meter)."""
