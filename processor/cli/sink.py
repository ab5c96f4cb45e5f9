"""``meterstream sink``: forward accepted records to Stripe (faust-streaming app)."""

from __future__ import annotations

import click

from processor.cli import pass_settings
from processor.config import Settings


@click.command("sink")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus metrics of this process on this port (off by default).",
)
@pass_settings
def sink(settings: Settings, metrics_port: int | None) -> None:
    """Forward meter-events-accepted to Stripe (v2 stream or v1), with retries, rate limit and a DLQ."""
    from processor.sink.app import SinkService

    service = SinkService(settings)
    if metrics_port is not None:
        from processor.sink.metrics import start_sink_metrics_server

        start_sink_metrics_server(service.metrics, metrics_port)
    service.run()
