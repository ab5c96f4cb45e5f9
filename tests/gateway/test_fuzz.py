"""Issue 13: hypothesis throws well-formed, malformed and hostile bodies at the v1 form parser and the v2 JSON
routes of a real gateway (real broker and Redis). Whatever arrives: never a 500, never a traceback in the
log, every error in Stripe's shape; and every event answered 200 is on the topic exactly once (the valid
inputs are counted exactly, none lost, none extra)."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any
from urllib.parse import quote, quote_from_bytes

import pytest
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.config import Settings
from processor.gateway import GatewayServer
from tests.gateway.conftest import bearer, http, make_meter
from topics import Topic

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure is reproducible, never flaky
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Pieces a hostile or careless client puts in form keys and values.
_NASTY = st.sampled_from(
    ["", "[", "]", "[]", "[0]", "%", "%ZZ", "%00", "%FF", "%C3%28", "%ED%A0%80", "+", "&", "=", "\u0665", "1E400"]
)
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_KEYS = st.one_of(
    st.sampled_from(["event_name", "payload", "identifier", "timestamp", "expand", "cancel", "0", "\u00b2"]),
    _TEXT.map(lambda t: quote(t, safe="[]")),
)


@st.composite
def form_bodies(draw: st.DrawFn) -> bytes:
    """A form body: random bytes, or bracketed pairs mixing real parameter names and hostile pieces."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    pairs = []
    for _ in range(draw(st.integers(0, 8))):
        key = draw(_KEYS) + "".join(
            draw(st.lists(st.sampled_from(["[stripe_customer_id]", "[value]", "[]", "[0]", "["]), max_size=10))
        )
        value = quote(draw(_TEXT), safe="") + draw(_NASTY)
        pairs.append(f"{key}{draw(_NASTY)}={value}")
    return "&".join(pairs).encode("utf-8", "surrogatepass")


def _json_values(depth: int) -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _TEXT)
    return st.recursive(
        leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3), max_leaves=depth
    )


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    """A v2 body: random bytes, deep nesting, or an event-shaped object with random values in it."""
    kind = draw(st.sampled_from(["bytes", "deep", "event", "stream"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        n = draw(st.integers(10, 3000))
        return draw(st.sampled_from([b'{"a":' * n + b"1" + b"}" * n, b"[" * n, b'{"events":' + b"[" * n]))
    event: dict[str, Any] = {
        "event_name": draw(st.one_of(_TEXT, _json_values(4))),
        "payload": draw(
            st.one_of(st.dictionaries(_TEXT, st.one_of(_TEXT, st.integers()), max_size=3), _json_values(6))
        ),
    }
    if draw(st.booleans()):
        event[draw(_TEXT)] = draw(_json_values(4))
    body = {"events": [event]} if kind == "stream" else event
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


def valid_event() -> dict[str, Any]:
    ident = "fz_" + uuid.uuid4().hex
    return {"event_name": "fuzz_units", "payload": {"stripe_customer_id": "cus_fz", "value": "3"}, "identifier": ident}


def _check(status: int, headers: dict[str, str], raw: bytes) -> Any:
    assert status < 500, (status, raw[:300])
    assert "Request-Id" in headers
    body = json.loads(raw)
    if status >= 400:
        error = body["error"]
        assert isinstance(error["type"], str) and isinstance(error["message"], str), body
        assert set(error) <= {"type", "message", "code", "param", "doc_url"}, body
    return body


def test_fuzz_v1_form_and_v2_json(
    gateway: GatewayServer,
    client: stripe.StripeClient,
    gw_settings: Settings,
    read_topic: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = gateway.url
    make_meter(client, "fuzz_units")  # the valid events' meter: the gateway judges events synchronously
    caplog.set_level(logging.INFO)
    accepted: list[str] = []  # identifiers of the events the gateway answered 200
    session_raw = http(f"{url}/v2/billing/meter_event_session", "POST", body=b"{}", headers=bearer())[2]
    token = json.loads(session_raw)["authentication_token"]
    form = {**bearer(), "Content-Type": "application/x-www-form-urlencoded"}
    as_json = {**bearer(), "Content-Type": "application/json"}

    @FUZZ
    @given(form_bodies(), json_bodies(), st.booleans())
    def run(form_body: bytes, json_body: bytes, with_valid: bool) -> None:
        for path in ("/v1/billing/meter_events", "/v1/billing/meters", "/v1/billing/meter_event_adjustments"):
            status, headers, raw = http(f"{url}{path}", "POST", body=form_body, headers=form)
            body = _check(status, headers, raw)
            if status == 200 and path == "/v1/billing/meter_events":
                accepted.append(body["identifier"])
        status, headers, raw = http(
            f"{url}/v1/billing/meters?{quote_from_bytes(form_body, safe='&=[]%+')}", headers=bearer()
        )
        _check(status, headers, raw)
        for path, headers_ in (
            ("/v2/billing/meter_events", as_json),
            ("/v2/billing/meter_event_session", as_json),
            (
                "/v2/billing/meter_event_stream",
                {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            ),
        ):
            status, headers, raw = http(f"{url}{path}", "POST", body=json_body, headers=headers_)
            body = _check(status, headers, raw)
            if status == 200 and path == "/v2/billing/meter_event_stream":
                # the stream judges events one by one (a bad one goes to meter-event-errors): a 200 needs
                # only a well-shaped batch
                assert isinstance(json.loads(json_body)["events"], list)
            if status == 200 and path == "/v2/billing/meter_events":
                accepted.append(body["identifier"])
        if with_valid:  # a valid event among the garbage: always accepted, and counted below
            event = valid_event()
            form_event = (
                f"event_name={event['event_name']}&payload[stripe_customer_id]=cus_fz&payload[value]=3"
                f"&identifier={event['identifier']}"
            ).encode()
            status, headers, raw = http(f"{url}/v1/billing/meter_events", "POST", body=form_event, headers=form)
            assert status == 200, raw
            accepted.append(event["identifier"])
            event2 = valid_event()
            status, headers, raw = http(
                f"{url}/v2/billing/meter_events", "POST", body=json.dumps(event2).encode(), headers=as_json
            )
            assert status == 200, raw
            accepted.append(event2["identifier"])

    run()
    records = read_topic(gw_settings, Topic.EVENTS, expect=len(accepted))
    assert sorted(json.loads(m.value())["identifier"] for m in records) == sorted(accepted)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
