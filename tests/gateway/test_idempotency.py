"""Idempotency-Key as Stripe documents it, proven with the official SDK's own retries: an answer lost on
the way back is retried by ``max_network_retries`` under the same key and the usage counts once; the
same key with other parameters fails; a key still running answers 409; two gateway processes share it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

from processor.config import Settings
from processor.embedded import free_port
from processor.gateway.idempotency import derived_identifier, fingerprint
from processor.state.connect import SyncRedis
from processor.state.keys import idempotency_key
from tests.fixtures import values
from tests.gateway.conftest import API_KEY, bearer, http, make_meter, run_processor
from tests.gateway.proxy import LossyProxy

ReadTopic = Callable[..., list[Any]]
DAY = 86_400


@pytest.fixture
def proxy(url: str) -> Iterator[LossyProxy]:
    with LossyProxy(url) as server:
        yield server  # type: ignore[misc]


def sdk(url: str, key: str = API_KEY, retries: int = 0) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": url, "meter_events": url}, max_network_retries=retries)


def usage(client: stripe.StripeClient, meter_id: str, customer: str) -> int:
    now = int(time.time()) // 60 * 60
    summaries = client.v1.billing.meters.event_summaries.list(
        meter_id, {"customer": customer, "start_time": now - 2 * DAY, "end_time": now + 120}
    )
    return int(summaries.data[0].aggregated_value)


def test_lost_answers_retried_by_the_sdk_count_once(
    client: stripe.StripeClient, proxy: LossyProxy, gw_settings: Settings, read_topic: ReadTopic
) -> None:
    meter = make_meter(client, "lossy")
    through = sdk(proxy.url, retries=3)
    proxy.drop["/v1/billing/meter_events"] = 2  # the first attempt and the first retry lose their answer
    event = through.v1.billing.meter_events.create(
        {"event_name": "lossy", "payload": {"stripe_customer_id": "c1", "value": "5"}}
    )
    assert proxy.dropped == 2
    keys = [k for path, k in proxy.seen if path == "/v1/billing/meter_events"]
    assert len(keys) == 3 and len(set(keys)) == 1 and keys[0]  # the SDK retried under its own key
    assert event.identifier == derived_identifier(keys[0])

    token = through.v2.billing.meter_event_session.create().authentication_token
    proxy.drop["/v2/billing/meter_event_stream"] = 1
    batch = [{"event_name": "lossy", "payload": {"stripe_customer_id": "c1", "value": "1"}} for _ in range(10)]
    sdk(proxy.url, token, retries=2).v2.billing.meter_event_stream.create({"events": batch})  # type: ignore[typeddict-item]

    records = values(read_topic(gw_settings, "meter-events", expect=11, idle=1.5))
    assert len(records) == 11  # the retries were replayed: nothing published twice
    run_processor(gw_settings)
    assert usage(client, meter.id, "c1") == 15


def test_replay_other_params_and_key_in_use(
    client: stripe.StripeClient, url: str, gw_settings: Settings, redis_client: SyncRedis
) -> None:
    make_meter(client, "keyed", "count")
    params = {"event_name": "keyed", "payload": {"stripe_customer_id": "c1"}}
    first = client.v1.billing.meter_events.create(params, {"idempotency_key": "key-1"})  # type: ignore[arg-type]
    again = client.v1.billing.meter_events.create(params, {"idempotency_key": "key-1"})  # type: ignore[arg-type]
    assert again.to_dict() == first.to_dict()
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert first.last_response.headers.get("Idempotent-Replayed") is None

    other = {"event_name": "keyed", "payload": {"stripe_customer_id": "c2"}}
    with pytest.raises(stripe.IdempotencyError) as mismatch:
        client.v1.billing.meter_events.create(other, {"idempotency_key": "key-1"})  # type: ignore[arg-type]
    assert mismatch.value.http_status == 400
    assert mismatch.value.headers is not None and mismatch.value.headers.get("Stripe-Should-Retry") == "false"

    # A request still running under a key: 409 idempotency_key_in_use, retryable.
    body = b"event_name=keyed&payload[stripe_customer_id]=c3"
    r = redis_client
    fp = fingerprint("POST", "/v1/billing/meter_events", body)
    r.set(idempotency_key(gw_settings.redis_prefix, "key-2"), f"p{fp}:other", px=60_000)
    headers = bearer() | {"Idempotency-Key": "key-2", "Content-Type": "application/x-www-form-urlencoded"}
    status, answer_headers, raw = http(url + "/v1/billing/meter_events", "POST", body=body, headers=headers)
    assert status == 409 and json.loads(raw)["error"]["code"] == "idempotency_key_in_use"
    assert answer_headers.get("Stripe-Should-Retry") == "true"

    # A validation error is not saved: the same key may be used again once the request is fixed.
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meter_events.create({"event_name": "nope", "payload": {}}, {"idempotency_key": "key-3"})  # type: ignore[typeddict-item,arg-type]
    assert r.get(idempotency_key(gw_settings.redis_prefix, "key-3")) is None

    # A retried meter create gets the meter, not resource_already_exists.
    spec = {"display_name": "Once", "event_name": "once", "default_aggregation": {"formula": "sum"}}
    m1 = client.v1.billing.meters.create(spec, {"idempotency_key": "meter-1"})  # type: ignore[arg-type]
    m2 = client.v1.billing.meters.create(spec, {"idempotency_key": "meter-1"})  # type: ignore[arg-type]
    assert m1.id == m2.id


def test_retry_whose_first_answer_was_not_saved_is_deduplicated(
    client: stripe.StripeClient, url: str, gw_settings: Settings, redis_client: SyncRedis
) -> None:
    """A retryable 503 saves nothing, but its records may have reached Kafka: the retry publishes again,
    with the same identifiers (derived from the key), and the processor counts them once."""
    meter = make_meter(client, "again")
    r = redis_client
    params = {"event_name": "again", "payload": {"stripe_customer_id": "c1", "value": "4"}}
    first = client.v1.billing.meter_events.create(params, {"idempotency_key": "k-503"})  # type: ignore[arg-type]
    r.delete(idempotency_key(gw_settings.redis_prefix, "k-503"))  # as after an answer that was not saved
    second = client.v1.billing.meter_events.create(params, {"idempotency_key": "k-503"})  # type: ignore[arg-type]
    assert second.last_response.headers.get("Idempotent-Replayed") is None  # carried out again
    assert first.identifier == second.identifier
    run_processor(gw_settings)
    assert usage(client, meter.id, "c1") == 4


def test_two_gateway_processes_share_idempotency(
    client: stripe.StripeClient, gw_settings: Settings, tmp_path: Path, read_topic: ReadTopic
) -> None:
    make_meter(client, "shared", "count")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERSTREAM_")} | gw_settings.to_env()
    env["METERSTREAM_GATEWAY_PORT"] = str(port)
    other_url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "gateway.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "processor", "gateway"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 90
            while True:
                assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
                try:
                    if http(other_url + "/healthz")[0] == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "the second gateway did not start"
                time.sleep(0.2)
            params = {"event_name": "shared", "payload": {"stripe_customer_id": "c1"}}
            here = client.v1.billing.meter_events.create(params, {"idempotency_key": "both"})  # type: ignore[arg-type]
            there = sdk(other_url).v1.billing.meter_events.create(params, {"idempotency_key": "both"})  # type: ignore[arg-type]
            assert there.last_response.headers.get("Idempotent-Replayed") == "true"
            assert there.identifier == here.identifier
            with pytest.raises(stripe.IdempotencyError):
                sdk(other_url).v1.billing.meter_events.create(
                    {"event_name": "shared", "payload": {"stripe_customer_id": "c9"}},
                    {"idempotency_key": "both"},  # type: ignore[arg-type]
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    assert len(read_topic(gw_settings, "meter-events", expect=1, idle=1.0)) == 1
