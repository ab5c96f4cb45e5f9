"""``meterstream reconcile``: compare the Redis aggregates with Stripe's event summaries, bucket by bucket.

Stripe is asked through the official SDK (``meters.event_summaries.list``), so the same command checks
real Stripe and the emulator. Both sides are summarised the same way — per hour or UTC day window of
``[from, to)`` — and compared exactly: Stripe's ``aggregated_value`` (a float in Stripe's API) is read as
a decimal, and an integral float is the integer it spells. For ``sum``/``count`` an absent window and 0
are the same; for ``last`` a window holds a value or nothing.

Drift in the newest buckets can be transient (the sink forwards asynchronously, and Stripe's summaries
are eventually consistent): reconcile ranges that ended a few minutes ago. Customers are taken from the
meter's customers index in Redis (a customer only Stripe knows cannot be listed through summaries).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar, cast

import stripe

from processor.config import Settings
from processor.errors import ConfigError, MeterNotFoundError, RetryableSinkError, StripeRejectedError
from processor.meters.model import Meter
from processor.retry import Backoff, retry
from processor.sink.ratelimit import TokenBucket
from processor.sink.stripe_api import map_stripe_errors
from processor.state.keys import Keys
from processor.state.summaries import check_range, summarize

__all__ = ["BucketDrift", "CustomerResult", "Reconciler", "stripe_value"]


T = TypeVar("T")

#: Patience per Stripe read. Stripe answers 429 when a key goes over its rate limit (and the SDK retries
#: a 429 only when told to), 5xx at times; a read can always be repeated, so reconcile waits and tries
#: again (8 calls, waits from 0.5 s up to 8 s, jittered) rather than stopping a long comparison at one
#: busy moment.
READ_RETRY = Backoff(base_s=0.5, cap_s=8.0, max_attempts=8)


@dataclass(frozen=True)
class BucketDrift:
    start: int
    end: int
    ours: int | None
    stripe: int | Decimal | None


@dataclass
class CustomerResult:
    customer: str
    windows: int = 0
    ours_total: int = 0
    stripe_total: int | Decimal = 0
    drift: list[BucketDrift] = field(default_factory=list)


def stripe_value(raw: Any) -> int | Decimal | None:
    """Stripe's ``aggregated_value`` exactly: an int when integral, else the Decimal of its text."""
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    dec = Decimal(str(raw))
    return int(dec) if dec == dec.to_integral_value() else dec


def _same(formula: str, ours: int | None, theirs: int | Decimal | None) -> bool:
    if formula == "last":
        return ours == theirs
    return (ours or 0) == (theirs or 0)


class Reconciler:
    """Compares one meter, customer by customer. Constructing it does no I/O."""

    def __init__(
        self,
        settings: Settings,
        redis_client: Any,
        meter: Meter,
        *,
        client: stripe.StripeClient | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if client is None:
            if not settings.stripe_api_key:
                raise ConfigError(
                    "METERSTREAM_STRIPE_API_KEY is not set (reconcile asks Stripe's summaries; for the local "
                    "emulator paste the METERSTREAM_STRIPE_API_KEY/_API_BASE export lines `meterstream up` printed)"
                )
            base = settings.stripe_api_base
            client = stripe.StripeClient(
                settings.stripe_api_key.reveal(),
                base_addresses={"api": base, "meter_events": base},
                max_network_retries=3,
            )
        self.settings = settings
        self.redis = redis_client
        self.keys = Keys(settings.redis_prefix)
        self.meter = meter
        self.stripe = client
        self._bucket = TokenBucket(settings.stripe_rate)
        self._clock = clock
        self._sleep = sleep
        self._stripe_id: str | None = None

    # ---- Stripe -----------------------------------------------------------------------------------
    def _read(self, fn: Callable[[], T]) -> T:
        """``fn()`` (a whole read, pages included), again after a transient failure (429, 5xx, network)."""
        return retry(fn, policy=READ_RETRY, transient=RetryableSinkError, sleep=self._sleep)

    def _pace(self) -> None:
        wait_ns = self._bucket.reserve(self._clock())
        if wait_ns:
            self._sleep(wait_ns / 1e9)

    def stripe_meter_id(self) -> str:
        """Stripe's meter for ours: the sink's remembered mapping (same Stripe server), else by event_name."""
        if self._stripe_id is not None:
            return self._stripe_id
        raw = self.redis.hget(self.keys.sink_stripe_meters, self.meter.id)
        if raw is not None:
            data = json.loads(raw)
            if isinstance(data, dict) and data.get("api_base") == self.settings.stripe_api_base:
                self._stripe_id = str(data["stripe_id"])
                return self._stripe_id

        def list_meters() -> list[Any]:
            self._pace()
            with map_stripe_errors("listing meters"):
                return [
                    m
                    for m in self.stripe.v1.billing.meters.list({"limit": 100}).auto_paging_iter()
                    if m.event_name == self.meter.event_name
                ]

        found = self._read(list_meters)
        if not found:
            raise MeterNotFoundError(f"{self.meter.id} (no Stripe meter has event_name {self.meter.event_name!r})")
        found.sort(key=lambda m: m.status != "active")
        self._stripe_id = str(found[0].id)
        return self._stripe_id

    def stripe_windows(self, customer: str, start: int, end: int, grouping: str) -> dict[int, int | Decimal | None]:
        """Stripe's summaries by window start (missing windows: nothing at Stripe). An unknown customer
        (404) has nothing at Stripe."""
        meter_id = self.stripe_meter_id()
        params = {"customer": customer, "start_time": start, "end_time": end, "value_grouping_window": grouping}

        def list_summaries() -> dict[int, int | Decimal | None]:
            out: dict[int, int | Decimal | None] = {}
            with map_stripe_errors(f"listing event summaries of {customer}"):
                self._pace()
                page = self.stripe.v1.billing.meters.event_summaries.list(meter_id, cast(Any, {**params, "limit": 100}))
                for summary in self._pages(page):
                    out[int(summary.start_time)] = stripe_value(summary.aggregated_value)
            return out

        try:
            return self._read(list_summaries)
        except StripeRejectedError as exc:
            if exc.http_status == 404 and exc.stripe_error.get("param") == "customer":
                return {}
            raise

    def _pages(self, page: Any) -> Iterator[Any]:
        while True:
            yield from page.data
            if not page.has_more:
                return
            self._pace()
            page = page.next_page()

    # ---- comparison -------------------------------------------------------------------------------
    def customers(self) -> list[str]:
        raw = self.redis.zrange(self.keys.customers(self.meter.id), 0, -1)
        return sorted(r.decode() if isinstance(r, bytes) else str(r) for r in raw)

    def compare(self, customer: str, start: int, end: int, grouping: str) -> CustomerResult:
        check_range(start, end, grouping)
        ours = summarize(self.redis, self.keys, self.meter.id, self.meter.formula, customer, start, end, grouping)
        theirs = self.stripe_windows(customer, start, end, grouping)
        result = CustomerResult(customer, windows=len(ours))
        for row in ours:
            value = theirs.get(row.start_time)
            result.ours_total += row.value or 0
            result.stripe_total += value or 0
            if not _same(self.meter.formula, row.value, value):
                result.drift.append(BucketDrift(row.start_time, row.end_time, row.value, value))
        return result
