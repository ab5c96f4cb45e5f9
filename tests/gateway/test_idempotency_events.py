"""Meter events claim their Idempotency-Key in the same Redis script as their duplicate check (held.lua),
after their rules: the answers must be those of claiming first. A taken key still answers before the
rules and the duplicate check do; a duplicate leaves the key free; a claim left by a crashed request is a
409 until its lease ends, then the retry runs; a replay is byte-identical."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import stripe

from processor.config import Settings
from processor.gateway.idempotency import fingerprint
from processor.state.connect import SyncRedis
from processor.state.keys import idempotency_key
from tests.fixtures import values
from tests.gateway.conftest import bearer, http, make_meter, run_processor

ReadTopic = Callable[..., list[Any]]
PATH = "/v1/billing/meter_events"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def post(url: str, body: bytes, key: str, path: str = PATH) -> tuple[int, dict[str, str], bytes]:
    headers = bearer() | FORM | {"Idempotency-Key": key}
    if path.startswith("/v2/"):
        headers["Content-Type"] = "application/json"
    return http(url + path, "POST", body=body, headers=headers)


def code(raw: bytes) -> str | None:
    error = json.loads(raw).get("error")
    return None if error is None else error.get("code")


def test_a_replay_with_an_identifier_is_byte_identical_and_publishes_nothing(
    client: stripe.StripeClient, url: str, gw_settings: Settings, read_topic: ReadTopic
) -> None:
    make_meter(client, "replayed")
    body = b"event_name=replayed&payload[stripe_customer_id]=c1&payload[value]=3&identifier=rep-1"
    first = post(url, body, "rep-key")
    again = post(url, body, "rep-key")
    assert first[0] == again[0] == 200
    assert again[2] == first[2]  # the stored bytes, not a new answer (its `created` would differ)
    assert again[1].get("Idempotent-Replayed") == "true" and "Idempotent-Replayed" not in first[1]
    v2 = json.dumps(
        {"event_name": "replayed", "payload": {"stripe_customer_id": "c1", "value": "4"}, "identifier": "rep-2"}
    ).encode()
    first_v2 = post(url, v2, "rep-key-v2", "/v2/billing/meter_events")
    again_v2 = post(url, v2, "rep-key-v2", "/v2/billing/meter_events")
    assert first_v2[0] == again_v2[0] == 200 and again_v2[2] == first_v2[2]
    assert again_v2[1].get("Idempotent-Replayed") == "true"
    records = values(read_topic(gw_settings, "meter-events", expect=2, idle=1.0))
    assert sorted(r["identifier"] for r in records) == ["rep-1", "rep-2"]


def test_a_taken_key_answers_before_the_rules_and_the_duplicate_check(
    client: stripe.StripeClient, url: str, gw_settings: Settings, redis_client: SyncRedis
) -> None:
    make_meter(client, "taken")
    r, prefix = redis_client, gw_settings.redis_prefix
    body = b"event_name=taken&payload[stripe_customer_id]=c1&payload[value]=1&identifier=tk-1"
    fp = fingerprint("POST", PATH, body)

    # Another request is running under the key (its claim, same parameters): 409, retryable.
    r.set(idempotency_key(prefix, "running"), f"p{fp}:elsewhere", px=60_000)
    status, headers, raw = post(url, body, "running")
    assert (status, code(raw), headers.get("Stripe-Should-Retry")) == (409, "idempotency_key_in_use", "true")

    # A stored answer is replayed even when the request would now be refused by a rule (no such meter).
    refused = b"event_name=no_such_meter&payload[stripe_customer_id]=c1&identifier=tk-2"
    stored = b'{"object":"billing.meter_event","identifier":"tk-2"}'
    r.set(idempotency_key(prefix, "answered"), f"d{fingerprint('POST', PATH, refused)}|200|".encode() + stored, ex=600)
    status, headers, raw = post(url, refused, "answered")
    assert (status, raw, headers.get("Idempotent-Replayed")) == (200, stored, "true")

    # The same key with other parameters: idempotency_error, also ahead of the refusing rule.
    status, _, raw = post(url, refused.replace(b"c1", b"c2"), "answered")
    assert (status, code(raw)) == (400, None) and json.loads(raw)["error"]["type"] == "idempotency_error"

    # A request refused by a rule under a free key saves nothing: the key stays free.
    status, _, raw = post(url, refused, "free")
    assert (status, code(raw)) == (400, "no_meter")
    assert r.get(idempotency_key(prefix, "free")) is None


def test_a_duplicate_leaves_its_key_free(
    client: stripe.StripeClient, url: str, gw_settings: Settings, redis_client: SyncRedis
) -> None:
    make_meter(client, "held")
    body = b"event_name=held&payload[stripe_customer_id]=c1&payload[value]=2&identifier=held-1"
    assert post(url, body, "held-a")[0] == 200
    run_processor(gw_settings)  # the processor holds held-1 now
    status, headers, raw = post(url, body, "held-b")
    assert (status, json.loads(raw)["error"]["param"], headers.get("Stripe-Should-Retry")) == (
        400,
        "identifier",
        "false",
    )
    assert headers.get("Idempotent-Replayed") is None
    assert redis_client.get(idempotency_key(gw_settings.redis_prefix, "held-b")) is None  # a 400 is not saved
    # The first key still replays its answer (the stored one wins over the duplicate check).
    status, headers, _ = post(url, body, "held-a")
    assert (status, headers.get("Idempotent-Replayed")) == (200, "true")


def test_a_claim_left_by_a_crash_is_in_use_until_its_lease_ends(
    client: stripe.StripeClient, url: str, gw_settings: Settings, redis_client: SyncRedis
) -> None:
    """A gateway that died after claiming (before storing its answer) leaves a claim with a lease: retries
    are answered 409 (the SDK retries those) until it expires, then the request runs."""
    make_meter(client, "crashed")
    body = b"event_name=crashed&payload[stripe_customer_id]=c1&payload[value]=1&identifier=cr-1"
    name = idempotency_key(gw_settings.redis_prefix, "crash-key")
    redis_client.set(name, f"p{fingerprint('POST', PATH, body)}:dead-gateway", px=1_000)
    status, _, raw = post(url, body, "crash-key")
    assert (status, code(raw)) == (409, "idempotency_key_in_use")
    deadline = time.monotonic() + 30
    while redis_client.exists(name):
        assert time.monotonic() < deadline, "the lease did not expire"
        time.sleep(0.05)
    status, headers, raw = post(url, body, "crash-key")
    assert status == 200 and headers.get("Idempotent-Replayed") is None
    assert json.loads(raw)["identifier"] == "cr-1"
