"""An in-memory Stripe for the delivery engine's unit tests (:class:`processor.sink.transport.StripeTransport`).

It keeps what Stripe would keep for the sink's purposes (each identifier once, cancellations of known
identifiers) and can be told to answer like Stripe under trouble: a queue of transient failures, and
identifiers it refuses for good. The HTTP emulator (processor/emulator) stays the integration tests'
Stripe, through the real SDK; this fake lets the engine's logic run in milliseconds."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from processor.errors import RetryableSinkError, StripeRejectedError
from processor.meters.model import Meter
from processor.sink.records import AcceptedRecord

__all__ = ["InMemoryStripe", "KnownMeters"]


def _rejected(message: str, code: str) -> StripeRejectedError:
    error: dict[str, object] = {"type": "invalid_request_error", "code": code, "message": message}
    return StripeRejectedError(message, stripe_error=error, http_status=400, request_id="req_fake")


@dataclass
class InMemoryStripe:
    """Stripe's ledger of meter events as the sink sees it."""

    #: identifier → the accepted event Stripe holds.
    events: dict[str, AcceptedRecord] = field(default_factory=dict)
    #: identifiers cancelled, in the order the cancellations arrived.
    cancelled: list[str] = field(default_factory=list)
    #: every request as (name, identifiers), in the order they were sent.
    requests: list[tuple[str, list[str]]] = field(default_factory=list)
    #: transient failures to raise, one per request, before answering normally.
    transient: deque[RetryableSinkError] = field(default_factory=deque)
    #: identifiers Stripe refuses for good (e.g. a customer that does not exist).
    refuse: set[str] = field(default_factory=set)
    #: an exception to raise on every request (a fatal error such as a revoked API key).
    fatal: BaseException | None = None

    def _request(self, name: str, records: Sequence[AcceptedRecord]) -> None:
        self.requests.append((name, [r.identifier for r in records]))
        if self.fatal is not None:
            raise self.fatal
        if self.transient:
            raise self.transient.popleft()

    def _record(self, record: AcceptedRecord) -> None:
        if record.identifier in self.refuse:
            raise _rejected(f"No such customer: '{record.customer}'", "resource_missing")
        if record.identifier in self.events:
            raise _rejected(f"An event already exists with identifier {record.identifier}.", "resource_already_exists")
        self.events[record.identifier] = record

    def _cancel(self, record: AcceptedRecord) -> None:
        if record.identifier not in self.events:
            raise _rejected(f"No event found with identifier {record.identifier}.", "resource_missing")
        if record.identifier not in self.cancelled:
            self.cancelled.append(record.identifier)

    async def send_v1_event(self, record: AcceptedRecord) -> None:
        self._request("v1.meter_event", [record])
        self._record(record)

    async def send_v1_cancel(self, record: AcceptedRecord) -> None:
        self._request("v1.meter_event_adjustment", [record])
        self._cancel(record)

    async def send_v2_cancel(self, record: AcceptedRecord) -> None:
        self._request("v2.meter_event_adjustment", [record])
        self._cancel(record)

    async def send_stream(self, records: Sequence[AcceptedRecord]) -> None:
        """Stripe's stream validates the batch before taking any of it: one bad event refuses all."""
        self._request("v2.meter_event_stream", records)
        for record in records:
            if record.identifier in self.refuse:
                raise _rejected(f"No such customer: '{record.customer}'", "resource_missing")
        for record in records:
            if record.identifier not in self.events:
                self.events[record.identifier] = record


@dataclass
class KnownMeters:
    """A :class:`processor.sink.transport.MeterEnsurer` whose meters are all in Stripe already."""

    meters: dict[str, Meter]

    def get(self, meter_id: str) -> Meter | None:
        return self.meters.get(meter_id)

    async def ensure(self, meter_id: str) -> Meter:
        meter = self.meters.get(meter_id)
        if meter is None:
            raise _rejected(f"No such meter: '{meter_id}'", "resource_missing")
        return meter
