"""Redis stops under a running gateway: every route that needs Redis answers Stripe's retryable 503
(``api_error``, ``Stripe-Should-Retry: true``), never a 500; /healthz and the dashboard's pipeline panel
say Redis is down and /metrics still answers (docs/http-api.md, "Errors")."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import stripe

from processor.config import Settings
from processor.embedded import EmbeddedRedis
from processor.gateway import GatewayServer
from tests.gateway.conftest import API_KEY, bearer, http, make_meter

pytestmark = pytest.mark.integration

#: (method, path, body, extra headers): every kind of route that reads or writes Redis.
ROUTES: list[tuple[str, str, bytes | None, dict[str, str]]] = [
    ("GET", "/v1/billing/meters", None, {}),
    ("GET", "/v1/billing/meters/{meter}", None, {}),
    ("GET", "/v1/billing/meters/{meter}/event_summaries?customer=c&start_time=0&end_time=3600", None, {}),
    ("POST", "/v1/billing/meters", b"display_name=X&event_name=x2&default_aggregation[formula]=sum", {}),
    (
        "POST",
        "/v1/billing/meter_events",
        b"event_name=down_calls&identifier=i1&payload[stripe_customer_id]=c&payload[value]=1",
        {"Idempotency-Key": "k-1"},
    ),
    ("POST", "/v2/billing/meter_event_session", b"{}", {"Content-Type": "application/json"}),
    ("GET", "/v2/core/event_destinations", None, {}),
    ("GET", "/v2/core/events/evt_1", None, {}),
    ("GET", "/dashboard/api/customers?meter={meter}", None, {}),
    ("GET", "/dashboard/api/top?meter={meter}", None, {}),
    ("GET", "/dashboard/api/history", None, {}),
]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(workdir=tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


def test_every_route_answers_a_retryable_503_when_redis_is_down(
    settings_factory: Callable[..., Settings], own_redis: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_factory(METERSTREAM_API_KEYS=API_KEY, METERSTREAM_REDIS_URL=own_redis.url)
    with GatewayServer(settings) as gateway:
        client = stripe.StripeClient(API_KEY, base_addresses={"api": gateway.url, "meter_events": gateway.url})
        meter = make_meter(client, "down_calls")
        own_redis.stop()
        caplog.set_level(logging.WARNING)
        answers = {}
        for method, path, body, headers in ROUTES:
            url = gateway.url + path.replace("{meter}", meter.id)
            kind = {"Content-Type": "application/x-www-form-urlencoded"} if body and not headers else {}
            status, got, raw = http(url, method, body=body, headers={**bearer(), **kind, **headers})
            answers[path] = (status, got.get("Stripe-Should-Retry"), raw[:200])
        wrong = {
            path: answer
            for path, answer in answers.items()
            if answer[0] != 503
            or answer[1] != "true"
            or json.loads(answer[2] or b"{}").get("error", {}).get("type") != "api_error"
        }
        assert wrong == {}
        # the dashboard's pipeline panel is a health report itself: it answers, and says what is down
        status, _, raw = http(gateway.url + "/dashboard/api/pipeline", headers=bearer())
        assert status == 200 and json.loads(raw)["health"]["redis"]["ok"] is False
        status, _, raw = http(gateway.url + "/healthz")
        assert status == 503 and json.loads(raw)["redis"]["ok"] is False
        status, _, raw = http(gateway.url + "/metrics", headers=bearer())
        assert status == 200 and b'meterstream_dependency_up{dependency="redis"} 0' in raw
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
