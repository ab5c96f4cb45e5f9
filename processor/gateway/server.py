"""Ways to run the gateway: :func:`serve` in the foreground (``meterstream gateway``), optionally as
several worker processes sharing the port, and :class:`GatewayServer` in a background thread (tests).

Workers (``--workers N``) exist because one Python process is bound to one core: the kernel spreads
connections over processes listening with ``SO_REUSEPORT``. Everything a worker keeps is either shared
(sessions and meters live in Redis, records go to Kafka) or aggregated (Prometheus multiprocess mode), so
it does not matter which worker a request reaches. The parent only starts, watches and stops them.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import threading
import time
from types import FrameType

from aiohttp import web

from processor.config import Settings
from processor.gateway.app import build_app
from processor.gateway.state import GATEWAY, Gateway, check_settings
from processor.logs import configure_logging
from processor.state.keys import GATEWAY_SESSION_TTL_S
from processor.wire import DEFAULT_MAX_BODY
from processor.wire.http import BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT_S
from processor.wire.runner import HEADER_TIMEOUT_S, AppThread, run_app

__all__ = ["GatewayServer", "serve"]

log = logging.getLogger(__name__)

#: prometheus_client reads this variable (its own switch, at import) to keep values in shared files.
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def serve(settings: Settings, *, host: str = "0.0.0.0", workers: int = 1) -> None:
    """Serve until SIGINT/SIGTERM; queued records get a few seconds to be acknowledged at shutdown."""
    check_settings(settings)
    if workers <= 1:
        _serve_one(settings, host, reuse_port=False, metrics_dir=None)
        return
    metrics_dir = tempfile.mkdtemp(prefix="meterstream-gateway-metrics-")
    os.environ[_MULTIPROC_ENV] = metrics_dir  # inherited by the spawned workers, before they import it
    ctx = mp.get_context("spawn")
    children = [
        ctx.Process(target=_worker, args=(settings, host, metrics_dir, os.getpid()), name=f"gateway-{i}")
        for i in range(workers)
    ]
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        for child in children:
            child.start()
        log.info("gateway: %d workers on port %d", workers, settings.gateway_port)
        while not stop.wait(0.5):
            if any(not child.is_alive() for child in children):
                log.error("a gateway worker exited; stopping the others")
                break
    finally:
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
        for child in children:
            child.join(30)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if not stop.is_set():
        raise SystemExit(1)


def _worker(settings: Settings, host: str, metrics_dir: str, parent: int) -> None:
    configure_logging(settings.log_level)

    def _orphan_watch() -> None:  # the parent was killed (-9): do not live on without it
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=_orphan_watch, name="parent-watch", daemon=True).start()
    _serve_one(settings, host, reuse_port=True, metrics_dir=metrics_dir)


def _serve_one(settings: Settings, host: str, *, reuse_port: bool, metrics_dir: str | None) -> None:
    app = build_app(settings, gateway=Gateway(settings, metrics_dir=metrics_dir))

    async def _announce(_: web.Application) -> None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        log.info(
            "gateway listening on %s:%d (dashboard http://%s:%d/, %d API key(s) configured)",
            host,
            settings.gateway_port,
            shown,
            settings.gateway_port,
            len(settings.api_keys),
        )

    app.on_startup.append(_announce)
    run_app(app, host=host, port=settings.gateway_port, reuse_port=reuse_port or None)


class GatewayServer(AppThread):
    """The gateway on its own event loop in a daemon thread (``settings.gateway_port`` is ignored: pass
    ``port``, 0 for a free one)."""

    def __init__(
        self,
        settings: Settings,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_in_flight: int | None = None,
        session_ttl_s: int = GATEWAY_SESSION_TTL_S,
        client_max_size: int = DEFAULT_MAX_BODY,
        header_timeout_s: float = HEADER_TIMEOUT_S,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    ) -> None:
        gateway = Gateway(settings, max_in_flight=max_in_flight, session_ttl_s=session_ttl_s)
        app = build_app(settings, gateway=gateway, client_max_size=client_max_size)
        app[BODY_TIMEOUT] = body_timeout_s
        super().__init__(app, host=host, port=port, name="gateway", header_timeout_s=header_timeout_s)
        self.gateway = self.app[GATEWAY]
