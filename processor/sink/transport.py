"""What the delivery engine needs from Stripe and from the meter registry, as two small interfaces.

:class:`~processor.sink.engine.SinkEngine` decides *what* to send, *when*, and what an answer means for
the offsets; it does not care how a request reaches Stripe. Keeping that behind :class:`StripeTransport`
lets the engine's whole logic (batching, retries, splitting a refused batch, the DLQ, in-order
acknowledgement) run in unit tests against an in-memory Stripe (``tests/sink/fake_stripe.py``), while the
integration tests keep the real SDK over HTTP against the emulator. The production implementation is
:class:`~processor.sink.delivery.RecordingStripeApi` (the SDK, plus the delivery record ``replay`` reads).

Contract of every ``send_*`` method: return when Stripe accepted the request; raise
:class:`~processor.errors.RetryableSinkError` for a transient failure (429, 5xx, network, an expired v2
session) and :class:`~processor.errors.StripeRejectedError` for a final answer (any other 4xx, including
Stripe's "already exists" for an identifier it holds, which the engine counts as delivered).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from processor.meters.model import Meter
from processor.sink.records import AcceptedRecord

__all__ = ["MeterEnsurer", "StripeTransport"]


class StripeTransport(Protocol):
    """The four requests that carry records to Stripe."""

    async def send_v1_event(self, record: AcceptedRecord) -> None:
        """``POST /v1/billing/meter_events`` for one event."""

    async def send_v1_cancel(self, record: AcceptedRecord) -> None:
        """``POST /v1/billing/meter_event_adjustments`` for one cancellation."""

    async def send_v2_cancel(self, record: AcceptedRecord) -> None:
        """``POST /v2/billing/meter_event_adjustments`` for one cancellation."""

    async def send_stream(self, records: Sequence[AcceptedRecord]) -> None:
        """``POST /v2/billing/meter_event_stream`` with up to 100 events, in order."""


class MeterEnsurer(Protocol):
    """Resolves a meter id of an accepted record to our meter, after making sure Stripe has it."""

    def get(self, meter_id: str) -> Meter | None:
        """The meter if it is already known to be in Stripe (no I/O), else None."""

    async def ensure(self, meter_id: str) -> Meter:
        """Raises :class:`~processor.errors.StateError` or :class:`~processor.errors.RetryableSinkError`
        while that cannot be known yet (retried by the engine), and
        :class:`~processor.errors.StripeRejectedError` when Stripe refuses the meter."""
