"""The emulator's aiohttp app, its middleware (auth, faults, idempotency), and two ways to run it:
:func:`serve` in the foreground (the CLI) and :class:`EmulatorServer` in a background thread (tests,
``meterstream up``)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from processor.emulator import api_events, api_v1, api_v2, control
from processor.emulator.api_v1 import EMULATOR
from processor.emulator.control import FAULTS, INITIAL_FAULTS
from processor.emulator.faults import FaultConfig, Faults
from processor.emulator.notifications import DEFAULT_WINDOW_S
from processor.emulator.state import Emulator
from processor.errors import IdempotencyKeyError, IdempotencyKeyInUseError, InvalidRequestError, RateLimitedError
from processor.retry import Backoff
from processor.wire import KeyChecker, api_error_response, create_app, require_key
from processor.wire.runner import AppThread

__all__ = ["EmulatorConfig", "EmulatorServer", "build_app", "serve"]

log = logging.getLogger(__name__)

TEST_KEY_PREFIX = "sk_test_"
MAX_RETRY_WAIT_S = 3600.0  # the notifier's cap (processor.notify.dispatcher.MAX_BACKOFF_S)


@dataclass(frozen=True)
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 12111
    #: The one accepted API key; ``None`` accepts any key that starts with ``sk_test_``.
    api_key: str | None = field(default=None, repr=False)
    faults: FaultConfig = field(default_factory=FaultConfig)
    seed: int | None = None
    strict_customers: bool = False
    #: Error reports: the window asynchronous errors are grouped in (the notifier's 60 s by default), the
    #: first retry wait of a refused delivery (doubling up to an hour), how often the windows are checked.
    report_window_s: float = DEFAULT_WINDOW_S
    report_retry_s: float = 1.0
    report_poll_s: float = 0.5


def _middleware(emu: Emulator, faults: Faults, checker: KeyChecker) -> Middleware:
    in_flight: set[str] = set()

    @web.middleware
    async def emulate(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_emulator/"):
            return await handler(request)
        emu.stats["requests"] += 1
        if faults.config.latency_ms:
            await asyncio.sleep(faults.config.latency_ms / 1000)
        if path != api_v2.STREAM_PATH:  # the stream authenticates with a session token (its handler)
            require_key(request, checker)
        verdict = faults.admit()
        if verdict is not None:
            emu.stats[f"fault_{verdict}"] += 1
            if verdict == "rate_limited":
                raise RateLimitedError()
            if verdict == "429":
                raise RateLimitedError("Too many requests (injected by the emulator). Retry with backoff.")
            return api_error_response("An unknown error occurred (injected by the emulator).")

        key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
        fingerprint = b""
        if key:
            if len(key) > 255:
                raise InvalidRequestError(
                    "Invalid Idempotency-Key: it must be 1 to 255 characters.",
                    param="Idempotency-Key",
                    code="parameter_invalid_string",
                )
            fingerprint = emu.fingerprint(request.method, path, await request.read())
            saved = emu.saved_response(key)
            if saved is not None:
                if saved.fingerprint != fingerprint:
                    raise IdempotencyKeyError(key)
                emu.stats["idempotent_replays"] += 1
                return web.Response(
                    body=saved.body,
                    status=saved.status,
                    content_type="application/json",
                    headers={"Idempotent-Replayed": "true"},
                )

            if key in in_flight:  # a request under this key is still running (Stripe: 409, retryable)
                raise IdempotencyKeyInUseError(key)
            in_flight.add(key)
        try:
            response = await handler(request)
        finally:
            if key:
                in_flight.discard(key)
        if request.method == "POST" and 200 <= response.status < 300 and isinstance(response, web.Response):
            if key and isinstance(response.body, bytes):
                emu.save_response(key, fingerprint, response.status, response.body)
            if faults.fail_after_commit():
                emu.stats["fault_after_commit"] += 1
                return api_error_response("An unknown error occurred after the request was carried out (injected).")
        return response

    return emulate


def build_app(config: EmulatorConfig, emulator: Emulator | None = None) -> web.Application:
    """The emulator as an aiohttp app (state in ``app[EMULATOR]``, faults in ``app[FAULTS]``)."""
    emu = emulator or Emulator(strict_customers=config.strict_customers, report_window_s=config.report_window_s)
    faults = Faults(config.faults, seed=config.seed)
    checker = KeyChecker([config.api_key]) if config.api_key else KeyChecker(prefixes=[TEST_KEY_PREFIX])
    app = create_app(middlewares=[_middleware(emu, faults, checker)])
    app[EMULATOR] = emu
    app[FAULTS] = faults
    app[INITIAL_FAULTS] = config.faults
    app.add_routes(api_v1.routes)
    app.add_routes(api_v2.routes)
    app.add_routes(api_events.routes)
    app.add_routes(control.routes)
    backoff = Backoff(base_s=config.report_retry_s, cap_s=MAX_RETRY_WAIT_S)
    app.cleanup_ctx.append(api_events.deliveries(backoff, poll_s=config.report_poll_s, seed=config.seed))
    return app


def serve(config: EmulatorConfig, *, announce: bool = True) -> None:
    """Run in the foreground until interrupted."""
    app = build_app(config)

    async def _announce(_: web.Application) -> None:
        if announce:
            url = f"http://{config.host}:{config.port}"
            print(f"Stripe emulator listening on {url}", flush=True)
            if config.api_key:
                print("API key: the one given with --api-key", flush=True)
            else:
                print(
                    f"API key: any key that starts with {TEST_KEY_PREFIX} (e.g. {TEST_KEY_PREFIX}emulator)", flush=True
                )
            print(
                f"SDK: stripe.StripeClient(key, base_addresses={{'api': '{url}', 'meter_events': '{url}'}})", flush=True
            )

    app.on_startup.append(_announce)
    web.run_app(app, host=config.host, port=config.port, access_log=None, print=None, handle_signals=True)


class EmulatorServer(AppThread):
    """The emulator on its own event loop in a daemon thread (the wire layer's AppThread). ``port=0`` picks
    a free port.

    Usage::

        with EmulatorServer(EmulatorConfig(port=0)) as server:
            client = stripe.StripeClient("sk_test_x", base_addresses={"api": server.url, "meter_events": server.url})
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig(port=0)
        app = build_app(self.config)
        self.emulator = app[EMULATOR]
        super().__init__(app, host=self.config.host, port=self.config.port, name="stripe-emulator")

    def start(self, timeout: float = 30.0) -> EmulatorServer:
        super().start(timeout)
        return self

    def __enter__(self) -> EmulatorServer:
        return self.start()
