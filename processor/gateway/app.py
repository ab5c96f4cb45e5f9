"""The gateway's aiohttp app: the shared Stripe wire stack (:mod:`processor.wire`) plus two middlewares.

``observe`` (outermost of ours) times every request for Prometheus, counts Stripe error codes, and turns
"Kafka or Redis is not answering" into Stripe's retryable ``api_error`` (503, ``Stripe-Should-Retry:
true``) instead of an opaque 500. ``guard`` authenticates: every route but ``/healthz`` needs an API key
(``Authorization: Bearer`` for SDKs, HTTP Basic for browsers); the v2 stream takes a session token instead,
checked by its handler. Failed authentications slow their client down exponentially
(:class:`~processor.wire.auth.FailedAuthThrottle`). Browser requests coming from another site are refused, because a browser attaches
the dashboard's cached Basic credentials to them (cross-site request forgery).

Nothing logs a credential: there is no access log, and errors never echo the presented key.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from processor.config import Settings
from processor.errors import (
    AuthenticationFailedError,
    InvalidRequestError,
    KafkaDeliveryError,
    PermissionDeniedError,
    RateLimitedError,
    SessionExpiredError,
    StateError,
)
from processor.gateway import api_v1, api_v2, dashboard, destinations, explorer, history, upload
from processor.gateway.idempotency import idempotency_middleware
from processor.gateway.state import GATEWAY, Gateway
from processor.logs import mask_secrets
from processor.wire import DEFAULT_MAX_BODY, api_error_response, create_app, require_key

__all__ = ["build_app"]

_STARTED = web.RequestKey("gateway_started", float)
_PUBLIC = frozenset({"/healthz"})
_BASIC_CHALLENGE = 'Basic realm="meterstream", charset="UTF-8"'


def _route(request: web.Request) -> str:
    """The route pattern (``/v1/billing/meters/{id}``), so ids never become metric labels."""
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


def _refuse_cross_site(request: web.Request) -> None:
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    foreign_origin = origin is not None and origin != "null" and urlsplit(origin).netloc != request.host
    if site in ("cross-site", "same-site") or foreign_origin or origin == "null":
        raise PermissionDeniedError("Requests from other web sites are refused.")


def _middlewares(gw: Gateway) -> list[Middleware]:
    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[_STARTED] = time.perf_counter()
        try:
            return await handler(request)
        except InvalidRequestError as err:
            gw.metrics.errors.labels(err.code or err.error_type).inc()
            raise
        except (KafkaDeliveryError, StateError, RedisConnectionError, RedisTimeoutError) as exc:
            # Redis or Kafka away: Stripe's retryable 503, whichever route met it (a redis-py error that no
            # state function translated is the same outage as a StateError).
            gw.metrics.errors.labels("api_error").inc()
            message = mask_secrets(str(exc))
            return api_error_response(f"The request could not be completed: {message}", status=503, should_retry=True)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in _PUBLIC:
            return await handler(request)
        _refuse_cross_site(request)
        client = request.remote or "unknown"
        throttle = gw.auth_throttle
        if throttle.saturated(client):  # refused before any key is checked: more connections gain nothing
            raise RateLimitedError("Too many failed authentications from this address; retry later.")
        try:
            if path != api_v2.STREAM_PATH:
                require_key(request, gw.checker)
            return await handler(request)  # the stream checks its session token itself
        except SessionExpiredError:
            raise  # a real token, just old: the SDK makes a new session
        except AuthenticationFailedError:
            delay = throttle.failed(client)
            if delay:
                await throttle.hold(client, delay)
            raise

    return [observe, guard, idempotency_middleware(gw.idempotency)]


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    if response.status == 401 and request.path != api_v2.STREAM_PATH:
        response.headers.setdefault("WWW-Authenticate", _BASIC_CHALLENGE)
    started = request.get(_STARTED)
    if started is not None:
        request.app[GATEWAY].metrics.observe_request(
            _route(request), request.method, response.status, time.perf_counter() - started
        )


def build_app(
    settings: Settings, *, gateway: Gateway | None = None, client_max_size: int = DEFAULT_MAX_BODY
) -> web.Application:
    """The gateway as an aiohttp app (its state in ``app[GATEWAY]``). Connects nothing until started."""
    gw = gateway or Gateway(settings)
    app = create_app(middlewares=_middlewares(gw), client_max_size=client_max_size)
    app[GATEWAY] = gw
    app.on_response_prepare.append(_on_prepare)
    app.add_routes(api_v1.routes)
    app.add_routes(api_v2.routes)
    app.add_routes(destinations.routes)
    upload.install(app)  # before the dashboard: /static/upload.js is served by upload, not /static/{name}
    app.add_routes(dashboard.routes)
    explorer.install(app)

    async def _start(_: web.Application) -> None:
        await gw.start()

    async def _close(_: web.Application) -> None:
        await gw.close()

    app.on_startup.append(_start)
    app.on_cleanup.append(_close)
    history.install(app)  # after _start: the sampler uses the gateway's clients
    return app
