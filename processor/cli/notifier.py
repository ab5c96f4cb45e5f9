"""``meterstream notifier``: deliver Stripe-shaped error reports of ``meter-event-errors`` to the event
destinations created with ``POST /v2/core/event_destinations`` (docs/notifications.md)."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from processor.config import Settings


@click.command("notifier")
@click.option(
    "--window",
    "window_s",
    type=click.FloatRange(1, 3600),
    default=60,
    show_default=True,
    envvar="METERSTREAM_NOTIFY_WINDOW_S",
    help="Seconds of errors one report covers (per meter); a report goes out about this long after its first error.",
)
@click.pass_obj
def notifier(settings: Settings, window_s: float) -> None:
    """Build error reports from meter-event-errors and deliver them, signed, to event destinations."""
    from processor.notify.dispatcher import Notifier

    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    notify = Notifier(settings, window_s=window_s)
    try:
        notify.run(stop)
    finally:
        notify.close()
