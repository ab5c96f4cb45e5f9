"""The boundary to Stripe: the official SDK, its exceptions translated, v2 sessions kept fresh.

Everything that talks to Stripe goes through :class:`StripeApi`, and every SDK call in it sits
inside :func:`map_stripe_errors`, so no ``stripe.*Error`` (or aiohttp error) leaves this module:

- transient failures (see :func:`~processor.sink.retry.should_retry`) → :class:`RetryableSinkError`;
- an expired v2 session → :class:`RetryableSinkError` with ``retry_after=0`` (the session is renewed, so
  an immediate resend is right);
- a 401/403 on our API key → :class:`ConfigError`: no record is at fault, so nothing is dead-lettered,
  the sink stops without committing and says which variable to fix;
- any other 4xx → :class:`StripeRejectedError` carrying Stripe's error object, status and request id.

The SDK runs with ``max_network_retries=0`` (the sink retries itself, see :mod:`.engine`) and its default
random ``Idempotency-Key`` per call: the business-level dedup is the meter-event ``identifier``, which
is deterministic, while a deterministic idempotency key would make Stripe replay a stored 500 forever.

Rate limiting is the caller's job (it decides when a request is made), except for sessions, which this
module decides to create on its own and so it takes their token itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import aiohttp
import stripe

from processor.config import STRIPE_DEFAULT_API_BASE, Settings
from processor.errors import ConfigError, RetryableSinkError, StripeRejectedError
from processor.sink.records import AcceptedRecord, cancel_params, v1_event_params, v2_event_params
from processor.sink.retry import should_retry

if TYPE_CHECKING:
    from stripe._base_address import BaseAddresses
    from stripe.params.billing import (
        MeterCreateParams,
        MeterEventAdjustmentCreateParams,
        MeterEventCreateParams,
        MeterListParams,
    )
    from stripe.params.v2.billing import MeterEventAdjustmentCreateParams as V2AdjustmentParams
    from stripe.params.v2.billing import MeterEventStreamCreateParams

__all__ = ["SESSION_REFRESH_MARGIN_S", "StripeApi", "base_addresses", "is_already_exists", "map_stripe_errors"]

log = logging.getLogger(__name__)

#: Renew a v2 session this long before Stripe says it expires (sessions last 15 minutes): a request
#: that starts just before expiry must not arrive just after it.
SESSION_REFRESH_MARGIN_S = 60.0
#: Per-request HTTP timeout. A timed-out request is retried (the identifier makes that safe).
HTTP_TIMEOUT_S = 30.0


def _error_object(exc: stripe.StripeError) -> dict[str, object]:
    body = exc.json_body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return dict(body["error"])
    return {"type": "api_error", "message": exc.user_message or type(exc).__name__}


def is_already_exists(exc: StripeRejectedError) -> bool:
    """Stripe's 400 for an identifier it already holds ("An event already exists with identifier …").
    For the sink that is a resend of something Stripe has: delivered."""
    message = str(exc.stripe_error.get("message") or "").lower()
    code = str(exc.stripe_error.get("code") or "")
    return exc.http_status == 400 and ("already exists" in message or code == "resource_already_exists")


@contextlib.contextmanager
def map_stripe_errors(what: str) -> Iterator[None]:
    """Translate whatever the SDK (or its HTTP client) raises during ``what`` into our error tree."""
    try:
        yield
    except stripe.TemporarySessionExpiredError as exc:
        raise RetryableSinkError(f"{what}: the meter event session expired", retry_after=0.0) from exc
    except stripe.StripeError as exc:
        status = exc.http_status
        if should_retry(exc) or (status is not None and status < 400):
            # (a 2xx/3xx with a body the SDK could not read is a broken answer, not a rejection)
            raise RetryableSinkError(f"{what}: HTTP {status}: {exc.user_message or type(exc).__name__}") from exc
        if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
            raise ConfigError(
                f"Stripe rejected METERSTREAM_STRIPE_API_KEY during {what} (HTTP {status}): {exc.user_message}"
            ) from exc
        raise StripeRejectedError(
            f"{what}: HTTP {status}: {exc.user_message}",
            stripe_error=_error_object(exc),
            http_status=status,
            request_id=exc.request_id,
        ) from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        # The SDK wraps errors of sending the request, but not of reading the response body.
        raise RetryableSinkError(f"{what}: connection error: {type(exc).__name__}") from exc


def base_addresses(api_base: str) -> BaseAddresses:
    """The SDK's hosts for ``METERSTREAM_STRIPE_API_BASE``. Real Stripe serves the v2 meter event
    stream on its own host (``meter-events.stripe.com``, the SDK's default), so the default API base
    keeps it; any other base (the emulator, the gateway, a proxy) serves both from one address."""
    if api_base.rstrip("/") == STRIPE_DEFAULT_API_BASE:
        return {"api": STRIPE_DEFAULT_API_BASE}
    return {"api": api_base, "meter_events": api_base}


def _parse_iso(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class StripeApi:
    """The Stripe calls the sink makes. Construct, then ``await open()``; ``await close()`` at the end."""

    def __init__(
        self,
        settings: Settings,
        *,
        acquire: Callable[[], Awaitable[None]],
        on_request: Callable[[str], None] = lambda _name: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = settings.stripe_api_key
        self._bases = base_addresses(settings.stripe_api_base)
        self.api_base = settings.stripe_api_base
        self._acquire = acquire
        self._on_request = on_request
        self._clock = clock
        self._http: stripe.AIOHTTPClient | None = None
        self._client: stripe.StripeClient | None = None
        self._session_client: stripe.StripeClient | None = None
        self._session_deadline = 0.0
        self._session_lock = asyncio.Lock()

    async def open(self) -> None:
        if not self._key:
            raise ConfigError("METERSTREAM_STRIPE_API_KEY is not set (the sink needs a Stripe secret key)")
        self._http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S))
        self._client = stripe.StripeClient(
            self._key.reveal(), base_addresses=self._bases, max_network_retries=0, http_client=self._http
        )

    async def close(self) -> None:
        if self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.close_async()  # type: ignore[no-untyped-call]
            self._http = None

    @property
    def client(self) -> stripe.StripeClient:
        if self._client is None:
            raise RuntimeError("StripeApi.open() was not awaited")
        return self._client

    # ---- meters -----------------------------------------------------------------------------------
    async def list_meters(self) -> list[dict[str, Any]]:
        """Every meter of the account (all statuses), following pagination; one rate token per page."""
        meters: list[dict[str, Any]] = []
        starting_after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100}
            if starting_after:
                params["starting_after"] = starting_after
            await self._acquire()
            self._on_request("meters.list")
            with map_stripe_errors("listing meters"):
                page = await self.client.v1.billing.meters.list_async(cast("MeterListParams", params))
            meters.extend(m.to_dict() for m in page.data)
            if not page.has_more or not page.data:
                return meters
            starting_after = page.data[-1].id

    async def retrieve_meter(self, stripe_id: str) -> dict[str, Any]:
        await self._acquire()
        self._on_request("meters.retrieve")
        with map_stripe_errors(f"retrieving meter {stripe_id}"):
            meter = await self.client.v1.billing.meters.retrieve_async(stripe_id)
        return meter.to_dict()

    async def create_meter(self, params: dict[str, Any]) -> dict[str, Any]:
        await self._acquire()
        self._on_request("meters.create")
        with map_stripe_errors(f"creating meter {params.get('event_name')}"):
            meter = await self.client.v1.billing.meters.create_async(cast("MeterCreateParams", params))
        return meter.to_dict()

    async def reactivate_meter(self, stripe_id: str) -> dict[str, Any]:
        await self._acquire()
        self._on_request("meters.reactivate")
        with map_stripe_errors(f"reactivating meter {stripe_id}"):
            meter = await self.client.v1.billing.meters.reactivate_async(stripe_id)
        return meter.to_dict()

    # ---- v1 ---------------------------------------------------------------------------------------
    async def send_v1_event(self, record: AcceptedRecord) -> None:
        """``POST /v1/billing/meter_events``. The caller holds a rate token."""
        self._on_request("v1.meter_events")
        with map_stripe_errors("v1 meter event"):
            await self.client.v1.billing.meter_events.create_async(
                cast("MeterEventCreateParams", v1_event_params(record))
            )

    async def send_v1_cancel(self, record: AcceptedRecord) -> None:
        """``POST /v1/billing/meter_event_adjustments`` (cancel). The caller holds a rate token."""
        self._on_request("v1.meter_event_adjustments")
        with map_stripe_errors("v1 meter event adjustment"):
            await self.client.v1.billing.meter_event_adjustments.create_async(
                cast("MeterEventAdjustmentCreateParams", cancel_params(record))
            )

    # ---- v2 ---------------------------------------------------------------------------------------
    async def send_v2_cancel(self, record: AcceptedRecord) -> None:
        """``POST /v2/billing/meter_event_adjustments`` (cancel). The caller holds a rate token."""
        self._on_request("v2.meter_event_adjustments")
        with map_stripe_errors("v2 meter event adjustment"):
            await self.client.v2.billing.meter_event_adjustments.create_async(
                cast("V2AdjustmentParams", cancel_params(record))
            )

    async def send_stream(self, records: Sequence[AcceptedRecord]) -> None:
        """``POST /v2/billing/meter_event_stream`` with up to 100 events, on a fresh-enough session.
        The caller holds a rate token for this request (a session renewal takes its own)."""
        if not 1 <= len(records) <= 100:
            raise ValueError(f"a stream request carries 1 to 100 events, not {len(records)}")
        client = await self._stream_client()
        params = {"events": [v2_event_params(r) for r in records]}
        self._on_request("v2.meter_event_stream")
        with map_stripe_errors("v2 meter event stream"):
            try:
                await client.v2.billing.meter_event_stream.create_async(cast("MeterEventStreamCreateParams", params))
            except (stripe.TemporarySessionExpiredError, stripe.AuthenticationError) as exc:
                # The session token is no longer good (expired early, or revoked): renew it and resend at
                # once. A second consecutive failure goes through backoff like any retry (see the engine).
                self._drop_session(client)
                raise RetryableSinkError(
                    f"v2 meter event stream: the session token was rejected (HTTP {exc.http_status})",
                    retry_after=0.0,
                ) from exc

    async def _stream_client(self) -> stripe.StripeClient:
        async with self._session_lock:
            if self._session_client is None or self._clock() >= self._session_deadline:
                await self._acquire()
                self._on_request("v2.meter_event_session")
                with map_stripe_errors("creating a meter event session"):
                    session = await self.client.v2.billing.meter_event_session.create_async()
                self._session_client = stripe.StripeClient(
                    session.authentication_token,
                    base_addresses=self._bases,
                    max_network_retries=0,
                    http_client=self._http,
                )
                # The session's lifetime as Stripe states it, counted on our monotonic clock from now: no
                # dependence on our wall clock agreeing with Stripe's.
                lifetime = _parse_iso(session.expires_at) - _parse_iso(session.created)
                # (A short-lived session, as an emulator may hand out, is renewed after 3/4 of its life.)
                margin = min(SESSION_REFRESH_MARGIN_S, lifetime / 4)
                self._session_deadline = self._clock() + max(0.0, lifetime - margin)
                log.info("new v2 meter event session %s, expires at %s", session.id, session.expires_at)
            return self._session_client

    def _drop_session(self, client: stripe.StripeClient) -> None:
        if self._session_client is client:
            self._session_client = None
