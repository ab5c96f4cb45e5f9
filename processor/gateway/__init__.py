"""The Stripe-compatible HTTP gateway (SPEC §6): Stripe's billing-meter API over Kafka and Redis, so a
service using the official ``stripe`` SDK records usage through meterstream by changing only its base
address; plus the web dashboard, ``/healthz`` and Prometheus ``/metrics``.

Layout: :mod:`.app` (middlewares, routes), :mod:`.api_v1` / :mod:`.api_v2` (Stripe's endpoints),
:mod:`.summaries` (event summaries from Redis), :mod:`.ingest` (produce and await Kafka's ack),
:mod:`.sessions` (v2 session tokens), :mod:`.dashboard` (the page and its data), :mod:`.pipeline`
(health, counters, lag), :mod:`.metrics` (Prometheus), :mod:`.state` (clients), :mod:`.server` (running it).
The wire protocol itself (forms, errors, pagination, auth) is :mod:`processor.wire`, shared with the
Stripe emulator.
"""

from processor.gateway.app import build_app
from processor.gateway.server import GatewayServer, serve
from processor.gateway.state import GATEWAY, Gateway

__all__ = ["GATEWAY", "Gateway", "GatewayServer", "build_app", "serve"]
