"""Two ways to run the gateway: :func:`serve` in the foreground (``meterstream gateway``, one process per
container or per ``up``), and :class:`GatewayServer` in a background thread (tests, benchmarks)."""

from __future__ import annotations

import logging

from aiohttp import web

from processor.config import Settings
from processor.gateway.app import build_app
from processor.gateway.state import GATEWAY, Gateway
from processor.state.keys import GATEWAY_SESSION_TTL_S
from processor.wire import DEFAULT_MAX_BODY
from processor.wire.runner import AppThread

__all__ = ["GatewayServer", "serve"]

log = logging.getLogger(__name__)


def serve(settings: Settings, *, host: str = "0.0.0.0") -> None:
    """Serve until SIGINT/SIGTERM; queued records get a few seconds to be acknowledged at shutdown."""
    app = build_app(settings)

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
    web.run_app(app, host=host, port=settings.gateway_port, access_log=None, print=None, handle_signals=True)


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
    ) -> None:
        gateway = Gateway(settings, max_in_flight=max_in_flight, session_ttl_s=session_ttl_s)
        app = build_app(settings, gateway=gateway, client_max_size=client_max_size)
        super().__init__(app, host=host, port=port, name="gateway")
        self.gateway = self.app[GATEWAY]
