"""``meterstream sink``: forward accepted records to Stripe (faust-streaming app)."""

from __future__ import annotations

import click

from processor.cli import pass_settings
from processor.config import Settings


@click.command("sink")
@pass_settings
def sink(settings: Settings) -> None:
    """Forward meter-events-accepted to Stripe (v2 stream or v1), with retries, rate limit and a DLQ."""
    from processor.sink.app import run_sink

    run_sink(settings)
