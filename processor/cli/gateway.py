"""``meterstream gateway``: the Stripe-compatible HTTP gateway, the dashboard and ``/metrics``."""

from __future__ import annotations

import click

from processor.config import Settings


@click.command("gateway")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=None, help="Port (default: METERSTREAM_GATEWAY_PORT, 8080).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes sharing the port (SO_REUSEPORT); one Python process uses one core.",
)
@click.pass_obj
def gateway(settings: Settings, host: str, port: int | None, workers: int) -> None:
    """Serve Stripe's billing-meter API over Kafka and Redis, plus the web dashboard (until Ctrl-C)."""
    from processor.gateway.server import serve

    serve(settings if port is None else settings.replace(gateway_port=port), host=host, workers=workers)
