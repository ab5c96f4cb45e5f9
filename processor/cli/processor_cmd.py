"""``meterstream processor``: run the stream processor until SIGTERM/Ctrl-C (the batch in progress finishes)."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from processor.config import Settings


@click.command("processor")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics of this process on this port (off by default).",
)
@click.pass_obj
def processor(settings: Settings, metrics_port: int | None) -> None:
    """Run the stream processor (Kafka → Redis aggregates → accepted topic)."""
    from processor.aggregator.runner import Processor

    if metrics_port is not None:
        from processor.metrics import start_metrics_server

        start_metrics_server(metrics_port)

    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    proc = Processor(settings)
    try:
        proc.run(stop)
    finally:
        proc.close()
