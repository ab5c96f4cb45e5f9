"""Stripe's error reports, emulated: event destinations, v2 events and the deliveries still owed, in
memory, built from the asynchronous errors the emulator records (``GET /_emulator/errors``).

The shapes and the grouping are the notifier's own (:mod:`processor.notify.reports`): one
``v1.billing.meter.error_report_triggered`` per meter and window, one ``v1.billing.meter.no_meter_found``
per window for errors without a meter, thin notifications signed with ``Stripe-Signature``. A window is
``[start, start + window)`` of the emulator's clock (so ``POST /_emulator/clock`` closes windows too); it
is reported as soon as the clock passed its end — errors are recorded in order, none arrives late, so no
grace period is needed. Mutated only from the server's event loop, like the rest of the state.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from processor.notify.reports import Windows, dumps, full_event, thin_event

__all__ = ["DEFAULT_WINDOW_S", "Delivery", "Notifications"]

DEFAULT_WINDOW_S = 60.0  # the notifier's default (processor.notify.dispatcher.DEFAULT_WINDOW_S)
RETRY_SPAN_S = 3 * 86_400  # Stripe retries a delivery for up to 3 days

#: Error positions, unique for the process: an event's id derives from its first error's position, so ids
#: stay distinct across ``POST /_emulator/reset`` (a receiver may still hold earlier notifications).
_POSITIONS = itertools.count(1)


@dataclass
class Delivery:
    """One thin notification owed to one destination; ``next_at`` and ``first_at`` are monotonic seconds."""

    event_id: str
    destination_id: str
    body: str
    first_at: float
    next_at: float
    failures: int = 0


class Notifications:
    def __init__(self, window_s: float = DEFAULT_WINDOW_S) -> None:
        self.windows = Windows(int(window_s * 1000), grace_ms=0)
        self.destinations: dict[str, dict[str, Any]] = {}  # id -> stored form (processor.notify.destinations)
        self.events: dict[str, dict[str, Any]] = {}  # id -> full event
        self.owed: list[Delivery] = []
        self.delivered = 0

    def error(self, *, code: str, message: str, identifier: str | None, meter_id: str | None, received: float) -> None:
        """An asynchronous error, to be reported with its meter's (``None``: no meter) window."""
        self.windows.add(
            partition=0,
            offset=next(_POSITIONS),
            code=code,
            message=message,
            identifier=identifier,
            meter_id=meter_id,
            received_ms=int(received * 1000),
        )

    def close_windows(self, now: float, monotonic: float) -> list[str]:
        """Turn every window that ended by ``now`` (emulated seconds) into its event, owed to each enabled
        destination that wants its type; the new event ids."""
        now_ms = int(now * 1000)
        made = []
        for bucket in self.windows.due(now_ms):
            event = full_event(bucket, now_ms)
            self.events[event["id"]] = event
            made.append(event["id"])
            body = dumps(thin_event(bucket, now_ms))
            for dest in self.destinations.values():
                if dest["status"] == "enabled" and bucket.type in dest["enabled_events"]:
                    self.owed.append(Delivery(event["id"], dest["id"], body, monotonic, monotonic))
        return made

    def take_due(self, monotonic: float) -> list[Delivery]:
        """The deliveries whose time has come, removed from the owed list (put back with :meth:`failed`)."""
        due = [d for d in self.owed if d.next_at <= monotonic]
        self.owed = [d for d in self.owed if d.next_at > monotonic]
        return due

    def failed(self, delivery: Delivery, wait_s: float, monotonic: float) -> None:
        """Owe ``delivery`` again in ``wait_s``, unless Stripe would have given up on it by then."""
        delivery.failures += 1
        delivery.next_at = monotonic + wait_s
        if delivery.next_at - delivery.first_at <= RETRY_SPAN_S and delivery.destination_id in self.destinations:
            self.owed.append(delivery)
