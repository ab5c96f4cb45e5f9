"""Operations surface of the gateway: /healthz, /metrics, the dashboard's data endpoints, authentication
of every route, refusal of cross-site browser requests, and no credential in any log line."""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import stripe

from processor.config import Settings
from processor.embedded import free_port
from processor.gateway import GatewayServer
from processor.gateway.pipeline import LAG_MAX_AGE_S
from processor.state.keys import Keys
from tests.gateway.conftest import API_KEY, OTHER_KEY, bearer, get_json, http, make_meter, run_processor
from tests.helpers import wait_until

DAY = 86400


def _metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the exposition, or None."""
    for line in text.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if match is None or match.group(1) != name:
            continue
        if dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or "")) == labels:
            return float(match.group(3))
    return None


def test_healthz_is_public_and_reports_both_services(url: str) -> None:
    status, headers, raw = http(url + "/healthz")
    body = json.loads(raw)
    assert status == 200 and body["status"] == "ok"
    assert body["kafka"]["ok"] is True and body["redis"]["ok"] is True
    assert headers["Request-Id"].startswith("req_")


def test_healthz_degraded_when_services_are_unreachable(gw_settings: Settings) -> None:
    dead = gw_settings.replace(
        redis_url=f"redis://127.0.0.1:{free_port()}/0", kafka_bootstrap=f"127.0.0.1:{free_port()}"
    )
    with GatewayServer(dead) as server:
        status, _, raw = http(server.url + "/healthz")
        scraped, _, metrics_raw = http(server.url + "/metrics", headers=bearer())
    body = json.loads(raw)
    assert status == 503 and body["status"] == "degraded"
    assert body["redis"]["ok"] is False and body["kafka"]["ok"] is False
    # /metrics still answers, saying what is down (deploy/monitoring alerts on it)
    assert scraped == 200
    for dependency in ("redis", "kafka"):
        assert _metric(metrics_raw.decode(), "meterstream_dependency_up", dependency=dependency) == 0


def test_every_route_but_healthz_needs_a_key(url: str) -> None:
    for path in ("/", "/static/app.js", "/metrics", "/v1/billing/meters", "/dashboard/api/pipeline", "/nowhere"):
        status, headers, raw = http(url + path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Basic realm=")
        assert json.loads(raw)["error"]["type"] == "invalid_request_error"
    status, _, _ = http(url + "/v1/billing/meters", headers=bearer("sk_test_wrong_key_000"))
    assert status == 401
    for key in (API_KEY, OTHER_KEY):  # every configured key works
        assert http(url + "/v1/billing/meters", headers=bearer(key))[0] == 200


def test_browser_basic_auth_page_and_assets(url: str) -> None:
    basic = {"Authorization": "Basic " + base64.b64encode(f"{API_KEY}:".encode()).decode()}
    status, headers, page = http(url + "/", headers=basic)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for src in re.findall(rb'(?:src|href)="(/static/[^"]+)"', page):
        asset_status, _, body = http(url + src.decode(), headers=basic)
        assert asset_status == 200 and body, src
    assert http(url + "/static/../config.py", headers=basic)[0] == 404
    assert http(url + "/static/secret.txt", headers=basic)[0] == 404
    status, _, raw = http(url + "/v9/nothing", headers=basic)
    assert status == 404 and "Unrecognized request URL" in json.loads(raw)["error"]["message"]


def test_cross_site_browser_requests_are_refused(url: str) -> None:
    for extra in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}, {"Origin": "null"}):
        status, _, raw = http(url + "/v1/billing/meters", headers={**bearer(), **extra})
        assert status == 403 and json.loads(raw)["error"]["type"] == "invalid_request_error", extra
    same = {"Origin": url, "Sec-Fetch-Site": "same-origin"}
    assert http(url + "/v1/billing/meters", headers={**bearer(), **same})[0] == 200


def test_metrics(client: stripe.StripeClient, url: str, gw_settings: Settings, redis_client: redis.Redis) -> None:
    meter = make_meter(client, "metered")
    for i in range(3):
        payload = {"stripe_customer_id": f"c{i}", "value": "1"}
        client.v1.billing.meter_events.create({"event_name": "metered", "payload": payload})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meter_events.create({"event_name": "nameless", "payload": {"stripe_customer_id": "c"}})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meter_events.create({"event_name": "metered", "payload": {"v": "1"}})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meters.retrieve("mtr_missing")
    client.v1.billing.meters.retrieve(meter.id)
    run_processor(gw_settings)
    redis_client.hincrby(Keys(gw_settings.redis_prefix).stats("sink"), "delivered:v2_stream", 3)

    assert http(url + "/metrics")[0] == 401
    status, headers, raw = http(url + "/metrics", headers=bearer())
    text = raw.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert _metric(text, "meterstream_gateway_events_total", endpoint="v1", result="acked") == 3
    assert _metric(text, "meterstream_gateway_events_total", endpoint="v1", result="invalid") is None  # refused before
    assert _metric(text, "meterstream_gateway_errors_total", code="meter_event_no_customer_defined") == 1
    assert _metric(text, "meterstream_gateway_errors_total", code="no_meter") == 1
    assert _metric(text, "meterstream_gateway_errors_total", code="resource_missing") == 1
    route = "/v1/billing/meters/{id}"
    assert _metric(text, "meterstream_gateway_requests_total", route=route, method="GET", status="404") == 1
    assert _metric(text, "meterstream_gateway_requests_total", route=route, method="GET", status="200") == 1
    assert _metric(text, "meterstream_gateway_request_seconds_count", route="/v1/billing/meter_events") == 5
    assert _metric(text, "meterstream_pipeline_processor_records_total", kind="event", result="new") == 3
    assert _metric(text, "meterstream_pipeline_processor_rejected_total", code="no_meter") is None  # refused before
    assert _metric(text, "meterstream_pipeline_sink_records_total", counter="delivered", mode="v2_stream") == 3
    assert _metric(text, "meterstream_dependency_up", dependency="redis") == 1
    assert _metric(text, "meterstream_dependency_up", dependency="kafka") == 1

    def drained() -> str | None:
        """The scrape once it shows the processor drained everything (lag 0)."""
        page = http(url + "/metrics", headers=bearer())[2].decode()
        group = gw_settings.processor_group
        lag = _metric(page, "meterstream_pipeline_consumer_lag", group=group, topic="meter-events", partition="0")
        return page if lag == 0 else None

    # Lag is measured at most every LAG_MAX_AGE_S (5 s) and shared with the dashboard's history sampler,
    # which may have measured while the processor still ran: a later scrape must show the drained state.
    text = wait_until(drained, "the processor's lag to read 0", timeout=4 * LAG_MAX_AGE_S, interval=0.5)
    sink_lags = [
        _metric(
            text,
            "meterstream_pipeline_consumer_lag",
            group=gw_settings.sink_group,
            topic="meter-events-accepted",
            partition=str(p),
        )
        for p in range(3)
    ]
    assert sum(v or 0 for v in sink_lags) == 3  # no sink ran: every accepted record is still waiting


def test_dashboard_data_endpoints(client: stripe.StripeClient, url: str, gw_settings: Settings) -> None:
    meter = make_meter(client, "dash")
    today = int(time.time()) // DAY * DAY
    sends = [
        ("cus_small", 3, today + 1),
        ("cus_big", 50, today + 2),
        ("cus_mid", 10, today + 3),
        ("cus_old", 99, today - 60),
    ]
    for customer, value, ts in sends:
        client.v1.billing.meter_events.create(
            {"event_name": "dash", "payload": {"stripe_customer_id": customer, "value": str(value)}, "timestamp": ts}
        )
    run_processor(gw_settings)

    customers = get_json(f"{url}/dashboard/api/customers?meter={meter.id}")
    assert [c["customer"] for c in customers["data"]] == ["cus_mid", "cus_big", "cus_small", "cus_old"]
    assert customers["data"][0]["last_event"] == today + 3
    limited = get_json(f"{url}/dashboard/api/customers?meter={meter.id}&limit=2")
    assert len(limited["data"]) == 2 and limited["has_more"] is True

    top = get_json(f"{url}/dashboard/api/top?meter={meter.id}&day={today}&limit=2")
    assert top["data"] == [{"customer": "cus_big", "value": 50}, {"customer": "cus_mid", "value": 10}]
    yesterday = get_json(f"{url}/dashboard/api/top?meter={meter.id}&day={today - DAY}")
    assert yesterday["data"] == [{"customer": "cus_old", "value": 99}]
    status, _, raw = http(f"{url}/dashboard/api/top?meter={meter.id}&day={today + 5}", headers=bearer())
    assert status == 400 and json.loads(raw)["error"]["param"] == "day"
    assert http(f"{url}/dashboard/api/top?meter=mtr_nope", headers=bearer())[0] == 404

    # Lag is measured at most every LAG_MAX_AGE_S and shared with the history sampler, which may have
    # measured while the processor still ran: a later read must show the drained state.
    def drained() -> dict[str, Any] | None:
        """The pipeline view once every processor partition it lists has lag 0."""
        pipeline: dict[str, Any] = get_json(f"{url}/dashboard/api/pipeline")
        rows = [r for r in pipeline["lag"] if r["group"] == gw_settings.processor_group]
        return pipeline if all(r["lag"] == 0 for r in rows) else None

    pipeline = wait_until(drained, "the processor's lag to read 0", timeout=4 * LAG_MAX_AGE_S, interval=0.5)
    processor_lag = [r for r in pipeline["lag"] if r["group"] == gw_settings.processor_group]
    assert pipeline["health"]["status"] == "ok"
    assert pipeline["processor"]["event:new"] == 4
    assert {r["topic"] for r in processor_lag} == {"meter-events", "meter-event-adjustments"}
    assert all(r["lag"] == 0 for r in processor_lag)


def test_no_credential_in_logs(
    caplog: pytest.LogCaptureFixture, settings_factory: Callable[..., Settings], url: str
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk_test_wrongkey_in_logs_123"
    http(url + "/v1/billing/meters", headers=bearer(wrong))
    http(url + "/v1/billing/meters", headers=bearer())
    basic = {"Authorization": "Basic " + base64.b64encode(f"{API_KEY}:".encode()).decode()}
    http(url + "/", headers=basic)
    session = json.loads(http(url + "/v2/billing/meter_event_session", "POST", headers=bearer())[2])
    token = session["authentication_token"]
    http(url + "/v2/billing/meter_event_stream", "POST", body=b"{not json", headers=bearer(token))
    http(url + "/v1/billing/meter_events", "POST", body=b"event_name=x&payload[a]=1", headers=bearer())
    with pytest.raises(Exception, match="METERSTREAM_API_KEYS"):
        GatewayServer(settings_factory(ensure=False))  # no key configured: refused at start
    text = caplog.text
    for secret in (API_KEY, OTHER_KEY, wrong, token, base64.b64encode(f"{API_KEY}:".encode()).decode()):
        assert secret not in text
