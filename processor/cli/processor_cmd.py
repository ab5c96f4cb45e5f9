"""``meterstream processor``: run the stream processor until SIGTERM/Ctrl-C (the batch in progress finishes)."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from processor.config import Settings


@click.command("processor")
@click.pass_obj
def processor(settings: Settings) -> None:
    """Run the stream processor (Kafka → Redis aggregates → accepted topic)."""
    from processor.aggregator.runner import Processor

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
