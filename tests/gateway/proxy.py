"""A test-only HTTP proxy in front of the gateway that can lose answers: it forwards a request, lets the
gateway carry it out, then closes the client's connection instead of answering (what a client sees when
a load balancer times out or a network path breaks after the server did the work)."""

from __future__ import annotations

from collections import Counter

import aiohttp
from aiohttp import web

from processor.wire.runner import AppThread

_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


class LossyProxy(AppThread):
    """``drop[path] = n``: the next ``n`` answers to POSTs of ``path`` are lost. ``seen`` lists the
    ``(path, Idempotency-Key)`` of every request that reached the proxy."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.drop: Counter[str] = Counter()
        self.seen: list[tuple[str, str | None]] = []
        self.dropped = 0
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        super().__init__(app, name="lossy-proxy")

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((request.path, request.headers.get("Idempotency-Key")))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with aiohttp.ClientSession() as session:
            async with session.request(
                request.method, self.upstream + request.path_qs, data=body, headers=headers
            ) as up:
                raw = await up.read()
                status, out_headers = up.status, {k: v for k, v in up.headers.items() if k.lower() not in _HOP}
        if request.method == "POST" and self.drop[request.path] > 0:
            self.drop[request.path] -= 1
            self.dropped += 1
            assert request.transport is not None
            request.transport.abort()  # the gateway answered; the client never hears it
            return web.Response(status=204)
        return web.Response(body=raw, status=status, headers=out_headers)
