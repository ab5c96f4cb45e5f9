"""Serving an aiohttp app with the wire stack's connection rules, in the foreground (:func:`run_app`) or on
its own event loop in a daemon thread (:class:`AppThread`: tests, benchmarks, embedding, where the caller's
thread must stay free). ``port=0`` lets the OS pick a free port; :attr:`AppThread.url` says which.

Both use :class:`StripeAppRunner`, whose connections differ from aiohttp's in two ways (issue 13):

- errors aiohttp answers itself, before any route or middleware runs (a request line or header over
  8 KB, a method that is not a token, a malformed request), are Stripe's JSON error envelope instead of
  plain text, and are logged in one line without a traceback (they are the client's fault, and a
  traceback per request is a log flood anyone can cause);
- a connection that has not sent a request's complete headers within ``header_timeout_s`` (counted from
  the connection or the end of the previous answer) is closed, so slow clients cannot hold connections
  open. Bodies have their own deadline (:data:`processor.wire.http.BODY_TIMEOUT`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from processor.wire.http import protocol_error_response

__all__ = ["HEADER_TIMEOUT_S", "AppThread", "StripeAppRunner", "run_app"]

log = logging.getLogger(__name__)

#: Seconds a connection may take to send a request's headers (also the idle keep-alive time).
HEADER_TIMEOUT_S = 15.0


class _StripeRequestHandler(RequestHandler):
    """aiohttp's connection protocol with Stripe-shaped answers to the errors it produces itself."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # an answer is under way: the connection can only be dropped
            raise ConnectionError("the response was already started; cannot send the error")
        if status >= 500:
            log.error("error answering a request from %s", request.remote, exc_info=exc)
        else:
            log.debug("refused a malformed request from %s (%s)", request.remote, type(exc).__name__)
        response = protocol_error_response(status)
        response.force_close()
        return response


class _StripeServer(web.Server):
    """aiohttp's server factory making :class:`_StripeRequestHandler` connections."""

    def __call__(self) -> RequestHandler:
        return _StripeRequestHandler(self, loop=self._loop, **self._kwargs)


class StripeAppRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections use the wire stack's rules (module docstring)."""

    def __init__(self, app: web.Application, *, header_timeout_s: float = HEADER_TIMEOUT_S, **kwargs: Any) -> None:
        # aiohttp closes a connection whose next request has not been parsed by the keep-alive deadline,
        # which also covers headers trickling in: one knob for both.
        super().__init__(app, access_log=None, keepalive_timeout=header_timeout_s, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _StripeServer  # same state, this factory (aiohttp offers no handler-class option)
        return server


def run_app(app: web.Application, *, host: str, port: int, reuse_port: bool | None = None) -> None:
    """Serve ``app`` in the foreground until SIGINT/SIGTERM, then run its clean-up."""

    async def main() -> None:
        runner = StripeAppRunner(app)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_port=reuse_port).start()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


class AppThread:
    """``with AppThread(app) as server: ... server.url ...`` — start-up and clean-up signals run as usual."""

    def __init__(
        self,
        app: web.Application,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "http",
        header_timeout_s: float = HEADER_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner = StripeAppRunner(app, header_timeout_s=header_timeout_s)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
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
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.port = port
        self.url = f"http://{host}:{port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def start(self, timeout: float = 30.0) -> AppThread:
        self._thread.start()
        self._ready.wait(timeout)
        if self._error is not None:
            raise self._error
        if not self.url:
            raise RuntimeError(f"the HTTP server did not start within {timeout:g} s")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving and run the app's clean-up (waits for it)."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> AppThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
