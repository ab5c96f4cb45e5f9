"""Run an aiohttp app on its own event loop in a daemon thread: for tests, benchmarks and ``meterstream
up``-style embedding, where the caller's thread must stay free (and synchronous SDK calls must reach a
real HTTP server). ``port=0`` lets the OS pick a free port; :attr:`AppThread.url` says which.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from aiohttp import web

__all__ = ["AppThread"]


class AppThread:
    """``with AppThread(app) as server: ... server.url ...`` — start-up and clean-up signals run as usual."""

    def __init__(self, app: web.Application, *, host: str = "127.0.0.1", port: int = 0, name: str = "http") -> None:
        self.app = app
        self.host = host
        self.port = port
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, access_log=None)
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
