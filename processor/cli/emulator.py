"""``meterstream stripe-emulator``: the local Stripe billing emulator."""

from __future__ import annotations

import click


@click.command("stripe-emulator")
def stripe_emulator() -> None:
    """Run a local Stripe billing-meter API emulator."""
    raise click.ClickException("not implemented yet")
