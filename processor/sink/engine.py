"""The sink's delivery engine: intake → planner → dispatcher → Stripe → done watermark → ack.

It knows nothing of faust: the app (:mod:`.app`) feeds it records with :meth:`SinkEngine.submit` and
gives it two callbacks, ``ack`` (a record may now be committed) and ``dead_letter`` (produce to the
Stripe DLQ and wait for the broker's acknowledgement). So the whole delivery logic runs in tests and
benchmarks without a consumer group.

Flow of one record:

1. ``submit`` waits for room (at most ``max_pending`` records are held), parses the record, makes sure
   its meter exists in Stripe (:class:`~.meters.StripeMeters`), tracks its offset
   (:class:`~.watermark.OffsetTracker`) and queues it by customer (:class:`~.planner.Planner`). A record
   that cannot be parsed goes to the DLQ at once.
2. The dispatcher waits for a free request slot and a rate token, asks the planner for the next request
   (a v2 stream batch of up to 100 events, one v1 event, or one cancellation) and sends it as a task,
   which retries transient failures with backoff and jitter (:mod:`.retry`) while the customers of
   that request stay blocked.
3. Every record of the finished request is *done*: delivered, "already exists" (delivered), or rejected
   and written to the DLQ (and only then done). A v2 batch Stripe rejects as a whole is resent event
   by event, so only the event at fault is dead-lettered.
4. Done records release the partition's contiguous done prefix to ``ack``; the app commits that.

Errors that are no record's fault (Stripe refusing our API key, the DLQ unwritable) stop the engine:
``on_fatal`` is called, nothing more is acknowledged, and the records are read again after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from processor.errors import (
    ConfigError,
    MeterstreamError,
    RetryableSinkError,
    StateError,
    StripeRejectedError,
)
from processor.meters.model import Meter
from processor.retry import retry_async
from processor.sink.meters import order_sensitive
from processor.sink.metrics import SinkMetrics
from processor.sink.planner import Planner, QueuedItem, Unit
from processor.sink.ratelimit import AsyncRateLimiter
from processor.sink.records import AcceptedRecord, parse_accepted
from processor.sink.retry import STRIPE_BACKOFF, retry_transient
from processor.sink.stripe_api import is_already_exists
from processor.sink.transport import MeterEnsurer, StripeTransport
from processor.sink.watermark import OffsetTracker, Token

__all__ = ["DEFAULT_CONCURRENCY", "Outcome", "SinkEngine", "dlq_value"]

log = logging.getLogger(__name__)

Partition = tuple[str, int]
#: Requests in flight at once. v2 batches carry up to 100 events each, so a few suffice; v1 sends one
#: event per request and needs more to keep many customers moving. The rate limit caps both.
DEFAULT_CONCURRENCY = {"v2_stream": 8, "v1": 32}
#: How long the dispatcher lets a v2 stream batch of fewer than 100 events fill up before sending it.
LINGER_S = 0.02
#: Records held (queued + in flight) before intake waits: bounds memory and the redelivery after a crash.
DEFAULT_MAX_PENDING = 20_000
_STREAM_BATCH = 100


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one record ended: ``delivered``, ``duplicate`` (Stripe already had it) or ``rejected``."""

    status: Literal["delivered", "duplicate", "rejected"]
    error: StripeRejectedError | None = None


@dataclass(slots=True)
class _Pending:
    record: AcceptedRecord
    token: Token


_DELIVERED = Outcome("delivered")
_DUPLICATE = Outcome("duplicate")


def dlq_value(record: object, error: dict[str, object], http_status: int | None, request_id: str | None) -> bytes:
    """A ``meter-events-stripe-dlq`` value: the accepted record as read, Stripe's error object, the HTTP
    status and request id of the rejection, and ``failed_at`` (Unix seconds; docs/topics.md)."""
    body: dict[str, object] = {"record": record, "error": error, "request_id": request_id}
    if http_status is not None:
        body["http_status"] = http_status
    body["failed_at"] = int(time.time())
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class SinkEngine:
    """See the module docstring. ``start()`` the dispatcher, ``submit()`` records, ``drain()`` at the end."""

    def __init__(
        self,
        *,
        mode: str,
        stripe: StripeTransport,
        registry: MeterEnsurer,
        limiter: AsyncRateLimiter,
        metrics: SinkMetrics,
        dead_letter: Callable[[str, bytes], Awaitable[None]],
        ack: Callable[[Any], None],
        on_fatal: Callable[[BaseException], None] = lambda _exc: None,
        concurrency: int | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        rng: random.Random | None = None,
    ) -> None:
        if mode not in DEFAULT_CONCURRENCY:
            raise ConfigError(f"METERSTREAM_STRIPE_MODE must be v2_stream or v1, got {mode!r}")
        self.mode = mode
        self.stripe = stripe
        self.registry = registry
        self.limiter = limiter
        self.metrics = metrics
        self._dead_letter = dead_letter
        self._ack = ack
        self._on_fatal = on_fatal
        self.concurrency = concurrency or DEFAULT_CONCURRENCY[mode]
        self.max_pending = max_pending
        self._rng = rng or random.Random()
        self.planner: Planner[_Pending] = Planner(_STREAM_BATCH if mode == "v2_stream" else 1)
        self.tracker: OffsetTracker[Any] = OffsetTracker()
        self._changed = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._requests: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._draining = False
        self._intake_writes = 0
        self.failure: BaseException | None = None

    # ---- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch(), name="sink-dispatcher")

    async def drain(self, timeout: float) -> bool:
        """Stop taking records and planning requests, finish the requests in flight (up to ``timeout``
        seconds), stop the dispatcher. Queued records are left: they are not acknowledged, so the next owner
        of the partition reads them again. Returns whether every request in flight finished."""
        self._draining = True
        self._notify()
        finished = True
        try:
            await asyncio.wait_for(self._wait_for(self._drained), timeout)
        except TimeoutError:
            finished = False
            log.warning(
                "drain timed out after %.0f s with %d records in flight; they will be read again",
                timeout,
                self.planner.in_flight_items,
            )
        await self.stop()
        return finished

    async def stop(self) -> None:
        """Cancel the dispatcher and any request still in flight (their records stay unacknowledged)."""
        tasks = [*self._requests, *([self._dispatcher] if self._dispatcher else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._requests.clear()
        self._dispatcher = None

    def _drained(self) -> bool:
        return self.failure is not None or (self.planner.in_flight_items == 0 and self._intake_writes == 0)

    # ---- rebalances -------------------------------------------------------------------------------
    def assign(self, partitions: set[Partition]) -> None:
        """Partitions assigned in a rebalance: their offsets are tracked afresh (a new generation)."""
        for partition in partitions:
            self.tracker.assign(partition)

    def revoke(self, partitions: set[Partition]) -> None:
        """Partitions revoked: forget their queued records (the next owner reads them again). Requests
        in flight finish, and keep their customers blocked until then, but are no longer acknowledged."""
        dropped = self.planner.drop(partitions)
        for partition in partitions:
            self.tracker.revoke(partition)
        if dropped:
            log.info("rebalance: dropped %d queued records of %d revoked partitions", len(dropped), len(partitions))
        self._notify()

    # ---- intake -----------------------------------------------------------------------------------
    async def submit(
        self,
        partition: Partition,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        ref: Any,
        *,
        current: Callable[[], bool] = lambda: True,
    ) -> None:
        """Take one record read from ``partition`` at ``offset``. Waits while the engine is full, and
        forever once it drains (the caller is cancelled at shutdown). ``current`` says whether the
        record still belongs to this consumer's assignment (false after a rebalance moved it)."""
        await self._wait_for(lambda: not self._draining and self._held() < self.max_pending)
        if self.failure is None:
            try:
                await self._intake(partition, offset, key, value, ref, current)
                return
            except Exception as exc:
                # Never skip a record silently: a record not tracked would let later offsets be
                # committed past it. Stop instead; it is read again after the restart.
                self.fail(exc)
        await asyncio.Event().wait()  # stopped: take nothing more (the caller is cancelled at shutdown)

    async def _intake(
        self,
        partition: Partition,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        ref: Any,
        current: Callable[[], bool],
    ) -> None:
        if not self.tracker.is_new(partition, offset):
            log.debug("record %s/%d was read before in this assignment; skipped", partition, offset)
            return
        try:
            record = parse_accepted(value)
        except ValueError as exc:
            await self._reject_at_intake(partition, offset, key, value, ref, str(exc), current)
            return
        try:
            meter = self.registry.get(record.meter_id) or await self._ensure_meter(record.meter_id)
        except StripeRejectedError as exc:
            if not current():
                return
            token = self.tracker.track(partition, offset, ref)
            await self._write_dlq(record.raw, record.customer, exc, intake=True)
            self._release(token)
            return
        if not current():
            return
        token = self.tracker.track(partition, offset, ref)
        item = QueuedItem(
            customer=record.customer,
            is_cancel=record.is_cancel,
            partition=partition,
            order_key=record.meter_id if order_sensitive(meter) else None,
            value=_Pending(record, token),
        )
        self.planner.add(item)
        self._notify()

    async def _ensure_meter(self, meter_id: str) -> Meter:
        """The meter, ensured in Stripe; transient trouble (Stripe, Redis, a meter not mirrored yet) is
        retried here, holding intake back, because nothing of that meter can be sent before."""

        def note(exc: Exception, failures: int, delay: float) -> None:
            log.warning("cannot ensure meter %s yet (%s); retrying in %.1f s", meter_id, exc, delay)

        return await retry_async(
            lambda: self.registry.ensure(meter_id),
            policy=STRIPE_BACKOFF,
            transient=(RetryableSinkError, StateError),
            on_retry=note,
            rng=self._rng,
        )

    async def _reject_at_intake(
        self,
        partition: Partition,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        ref: Any,
        reason: str,
        current: Callable[[], bool],
    ) -> None:
        if not current():
            return
        token = self.tracker.track(partition, offset, ref)
        text = (value or b"").decode("utf-8", "replace")
        try:
            raw: object = json.loads(text)
        except ValueError:
            raw = text
        customer = (key or b"").decode("utf-8", "replace")
        error: dict[str, object] = {
            "type": "invalid_request_error",
            "code": "invalid_accepted_record",
            "message": reason,
        }
        log.error("record %s/%d is not a valid accepted record (%s): dead-lettered", partition, offset, reason)
        await self._write_dlq(raw, customer, StripeRejectedError(reason, stripe_error=error), intake=True)
        self._release(token)

    # ---- requests ---------------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        """The one planner of requests: waits for a free request slot, for something to send and for a
        rate token, lets a small v2 batch fill up, then starts the request as its own task. One
        dispatcher (rather than many workers polling the planner) means one wake-up per change, and
        one lingering batch at a time collects everything that arrives meanwhile."""
        try:
            while True:
                await self._slots.acquire()
                await self._wait_for(self._may_plan)
                await self.limiter.acquire()
                if self.planner.max_batch > 1 and self.planner.queued < self.planner.max_batch:
                    await self._linger()
                unit = self.planner.next_unit() if self._may_plan() else None
                if unit is None:
                    self._slots.release()  # the token goes unused: never faster than the limit
                    continue
                task = asyncio.create_task(self._request(unit))
                self._requests.add(task)
                task.add_done_callback(self._requests.discard)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.fail(exc)

    async def _request(self, unit: Unit[_Pending]) -> None:
        try:
            outcomes = await self._deliver(unit)
            await self._settle(unit, outcomes)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.fail(exc)
        finally:
            self._slots.release()

    async def _deliver(self, unit: Unit[_Pending]) -> list[Outcome]:
        records = [item.value.record for item in unit.items]
        if unit.kind == "cancel":
            send_cancel = self.stripe.send_v2_cancel if self.mode == "v2_stream" else self.stripe.send_v1_cancel
            return [await self._attempts(lambda: send_cancel(records[0]), "cancellation")]
        if self.mode == "v1":
            return [await self._attempts(lambda: self.stripe.send_v1_event(records[0]), "v1 event")]
        outcome = await self._attempts(lambda: self.stripe.send_stream(records), "stream batch")
        if outcome.status != "rejected" or len(records) == 1:
            return [outcome] * len(records)
        # Stripe refused the whole batch: resend event by event (same order) to find the culprit(s).
        log.warning("Stripe rejected a batch of %d events (%s); resending one by one", len(records), outcome.error)
        outcomes = []
        for record in records:
            await self.limiter.acquire()
            outcomes.append(await self._attempts(functools.partial(self.stripe.send_stream, [record]), "stream event"))
        return outcomes

    async def _attempts(self, send: Callable[[], Awaitable[None]], what: str) -> Outcome:
        """Send until Stripe gives a final answer. The caller holds the token for the first attempt;
        each resend takes its own."""
        try:
            await retry_transient(
                send,
                what=what,
                rng=self._rng,
                before_retry=self.limiter.acquire,
                on_retry=lambda: self.metrics.incr("retried"),
            )
        except StripeRejectedError as exc:
            return _DUPLICATE if is_already_exists(exc) else Outcome("rejected", exc)
        return _DELIVERED

    async def _settle(self, unit: Unit[_Pending], outcomes: list[Outcome]) -> None:
        for item, outcome in zip(unit.items, outcomes, strict=True):
            pending = item.value
            if outcome.status == "rejected" and outcome.error is not None:
                await self._write_dlq(pending.record.raw, pending.record.customer, outcome.error)
            else:
                self.metrics.incr("delivered")
                if outcome.status == "duplicate":
                    self.metrics.incr("duplicates_ok")
            self._release(pending.token)
        self.planner.complete(unit)
        self._notify()

    async def _write_dlq(self, record: object, customer: str, error: StripeRejectedError, intake: bool = False) -> None:
        log.warning("dead-lettering a record of customer %s: %s", customer, error)
        value = dlq_value(record, error.stripe_error, error.http_status, error.request_id)
        if intake:
            self._intake_writes += 1
        try:
            await self._dead_letter(customer, value)
        finally:
            if intake:
                self._intake_writes -= 1
                self._notify()
        self.metrics.incr("dead_lettered")

    # ---- helpers ----------------------------------------------------------------------------------
    def _release(self, token: Token) -> None:
        released = self.tracker.done(token)
        if self.failure is not None:
            return  # stopping on an error: acknowledge nothing more
        for ref in released:
            self._ack(ref)

    async def _linger(self) -> None:
        """Give a small v2 batch up to :data:`LINGER_S` to fill up (like Kafka's ``linger.ms``): a request
        costs the same for 1 event as for 100, so under a trickle of records this trades a few
        milliseconds of latency for far fewer requests (and rate tokens)."""
        full = self.planner.max_batch
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wait_for(lambda: self.planner.queued >= full or self._draining), LINGER_S)

    def _may_plan(self) -> bool:
        return not self._draining and self.failure is None and self.planner.has_ready()

    def _held(self) -> int:
        return self.planner.queued + self.planner.in_flight_items

    def _notify(self) -> None:
        self._changed.set()

    async def _wait_for(self, predicate: Callable[[], bool]) -> None:
        # Check, clear and wait with no await in between: a wake-up can never be lost.
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    def fail(self, exc: BaseException) -> None:
        """Stop on an error no record is at fault for: acknowledge nothing more, tell the app."""
        if self.failure is None:
            self.failure = exc
            if isinstance(exc, MeterstreamError):
                log.error("sink stopping: %s", exc)
            else:
                log.error("sink stopping on an unexpected error", exc_info=exc)
            self._on_fatal(exc)
        self._notify()
