"""The emulator's aiohttp app, its middleware (auth, faults, idempotency), and two ways to run it:
:func:`serve` in the foreground (the CLI) and :class:`EmulatorServer` in a background thread (tests,
``meterstream up``)."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from processor.emulator import api_v1, api_v2, control
from processor.emulator.api_v1 import EMULATOR
from processor.emulator.control import FAULTS, INITIAL_FAULTS
from processor.emulator.faults import FaultConfig, Faults
from processor.emulator.state import Emulator
from processor.errors import IdempotencyKeyError, InvalidRequestError, RateLimitedError
from processor.wire import KeyChecker, api_error_response, create_app, require_key

__all__ = ["EmulatorConfig", "EmulatorServer", "build_app", "serve"]

log = logging.getLogger(__name__)

TEST_KEY_PREFIX = "sk_test_"


@dataclass(frozen=True)
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 12111
    #: The one accepted API key; ``None`` accepts any key that starts with ``sk_test_``.
    api_key: str | None = field(default=None, repr=False)
    faults: FaultConfig = field(default_factory=FaultConfig)
    seed: int | None = None
    strict_customers: bool = False


def _middleware(emu: Emulator, faults: Faults, checker: KeyChecker) -> Middleware:
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
                raise InvalidRequestError("Idempotency-Key must be at most 255 characters.", param="Idempotency-Key")
            fingerprint = emu.fingerprint(request.method, path, await request.read())
            saved = emu.saved_response(key)
            if saved is not None:
                if saved.fingerprint != fingerprint:
                    raise IdempotencyKeyError(
                        "Keys for idempotent requests can only be used with the same parameters they were first "
                        f"used with. Try using a key other than '{key}' if you meant to execute a different request."
                    )
                emu.stats["idempotent_replays"] += 1
                return web.Response(
                    body=saved.body,
                    status=saved.status,
                    content_type="application/json",
                    headers={"Idempotent-Replayed": "true"},
                )

        response = await handler(request)
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
    emu = emulator or Emulator(strict_customers=config.strict_customers)
    faults = Faults(config.faults, seed=config.seed)
    checker = KeyChecker([config.api_key]) if config.api_key else KeyChecker(prefixes=[TEST_KEY_PREFIX])
    app = create_app(middlewares=[_middleware(emu, faults, checker)])
    app[EMULATOR] = emu
    app[FAULTS] = faults
    app[INITIAL_FAULTS] = config.faults
    app.add_routes(api_v1.routes)
    app.add_routes(api_v2.routes)
    app.add_routes(control.routes)
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


class EmulatorServer:
    """The emulator on its own event loop in a daemon thread. ``port=0`` picks a free port.

    Usage::

        with EmulatorServer(EmulatorConfig(port=0)) as server:
            client = stripe.StripeClient("sk_test_x", base_addresses={"api": server.url, "meter_events": server.url})
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig(port=0)
        self.app = build_app(self.config)
        self.emulator = self.app[EMULATOR]
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(self.app, access_log=None)
        self._thread = threading.Thread(target=self._run, name="stripe-emulator", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    async def _start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def start(self) -> EmulatorServer:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        if not self.url:
            raise RuntimeError("the Stripe emulator did not start within 30 s")
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
