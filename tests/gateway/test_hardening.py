"""Issue 13: the bad requests an attacker or a careless client sends, each answered with a Stripe-shaped
4xx (never a 500, never a traceback in the log), byte for byte as the issue found them."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from typing import Any

import pytest
import stripe

from processor.config import Secret, Settings
from processor.gateway import GatewayServer
from processor.limits import CUSTOMER_ID_MAX
from processor.state.connect import SyncRedis
from processor.state.keys import Keys
from tests.gateway.conftest import API_KEY, OTHER_KEY, bearer, http, make_meter


def raw_request(gateway: GatewayServer, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as it is (headers may hold any bytes) and read the whole answer."""
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def request_bytes(method: str, path: str, headers: dict[str, bytes], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: localhost", b"Connection: close"]
    lines += [name.encode() + b": " + value for name, value in headers.items()]
    if body or method == "POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def stripe_error(body: bytes) -> dict[str, Any]:
    """The error object of a Stripe error body (fails the test when the body is not one)."""
    error = json.loads(body)["error"]
    assert isinstance(error, dict) and isinstance(error["type"], str) and isinstance(error["message"], str)
    return error


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "credential",
    [b"Basic \xc3\xa9", b"Basic w6k=\xc3\xa9", b"Bearer sk_test_\xc3\xa9\xff", b"Basic \xff\xfe"],
)
def test_non_ascii_credentials_are_a_401(
    gateway: GatewayServer, caplog: pytest.LogCaptureFixture, credential: bytes
) -> None:
    """Issue 13, item 2: non-ASCII bytes in Basic auth were a 500 and a traceback per request."""
    caplog.set_level(logging.INFO)
    status, _, body = raw_request(gateway, request_bytes("GET", "/v1/billing/meters", {"Authorization": credential}))
    assert status == 401 and stripe_error(body)["type"] == "invalid_request_error"
    no_tracebacks(caplog)


def _post(
    gateway: GatewayServer, path: str, body: bytes, *, json_body: bool, headers: dict[str, bytes] | None = None
) -> tuple[int, dict[str, Any]]:
    kind = b"application/json" if json_body else b"application/x-www-form-urlencoded"
    all_headers = {"Authorization": f"Bearer {API_KEY}".encode(), "Content-Type": kind, **(headers or {})}
    status, _, raw = raw_request(gateway, request_bytes("POST", path, all_headers, body))
    return status, stripe_error(raw) if status >= 400 else json.loads(raw)


DEEP = [b'{"a":' * 1000 + b"1" + b"}" * 1000, b'{"a":' * 1000, b"[" * 100_000 + b"]" * 100_000]


@pytest.mark.parametrize("body", DEEP, ids=["closed", "unclosed", "arrays"])
@pytest.mark.parametrize(
    "path", ["/v2/billing/meter_events", "/v2/billing/meter_event_session", "/v2/billing/meter_event_adjustments"]
)
def test_deeply_nested_json_is_a_400(
    gateway: GatewayServer, caplog: pytest.LogCaptureFixture, path: str, body: bytes
) -> None:
    """Issue 13, item 4: ``{"a":`` x 1000 was a 500 with a RecursionError traceback."""
    status, error = _post(gateway, path, body, json_body=True)
    assert status == 400 and error["type"] == "invalid_request_error", error
    assert error["code"] == "parameter_invalid_json"
    no_tracebacks(caplog)


def test_deeply_nested_json_on_the_stream_is_a_400(gateway: GatewayServer, caplog: pytest.LogCaptureFixture) -> None:
    status, session = _post(gateway, "/v2/billing/meter_event_session", b"{}", json_body=True)
    assert status == 200
    token = f"Bearer {session['authentication_token']}".encode()
    for body in DEEP:
        status, error = _post(
            gateway, "/v2/billing/meter_event_stream", body, json_body=True, headers={"Authorization": token}
        )
        assert status == 400 and error["code"] == "parameter_invalid_json", error
    no_tracebacks(caplog)


BAD_TEXT_FORMS = [
    # (form body, the parameter the 400 names) -- issue 13, item 8
    (b"event_name=ev%C3%28&payload[stripe_customer_id]=c&payload[value]=1", "event_name"),
    (b"event_name=ev&payload[stripe_customer_id]=c%FF&payload[value]=1", "payload[stripe_customer_id]"),
    (b"event_name=ev%00x&payload[stripe_customer_id]=c&payload[value]=1", "event_name"),
    (b"event_name=ev&payload[stripe_customer_id]=c%00&payload[value]=1", "payload[stripe_customer_id]"),
    (b"event_name=ev&payload[stripe_customer_id]=c&identifier=id%00", "identifier"),
    (b"event_name=ev&payload[stripe_customer_id]=c&payload[value]=\xff\xfe", "payload[value]"),
]


@pytest.mark.parametrize(("body", "param"), BAD_TEXT_FORMS)
def test_nul_and_invalid_utf8_form_values_are_refused_by_name(gateway: GatewayServer, body: bytes, param: str) -> None:
    """Invalid UTF-8 was stored as U+FFFD with a 200; NUL bytes were stored in names and ids."""
    status, error = _post(gateway, "/v1/billing/meter_events", body, json_body=False)
    assert status == 400 and error["param"] == param, error


def test_nul_in_a_meter_name_and_a_query_is_refused(gateway: GatewayServer) -> None:
    body = b"display_name=A%00B&event_name=nul_meter&default_aggregation[formula]=sum"
    status, error = _post(gateway, "/v1/billing/meters", body, json_body=False)
    assert status == 400 and error["param"] == "display_name", error
    path = "/v1/billing/meters/mtr_x/event_summaries?customer=c%00&start_time=0&end_time=60"
    status, _, raw = raw_request(gateway, request_bytes("GET", path, {"Authorization": f"Bearer {API_KEY}".encode()}))
    assert status == 400 and stripe_error(raw)["param"] == "customer"


@pytest.mark.parametrize(
    ("event", "param"),
    [
        ({"event_name": "ev\u0000", "payload": {"stripe_customer_id": "c"}}, "event_name"),
        ({"event_name": "ev", "payload": {"stripe_customer_id": "c\ud800"}}, "payload[stripe_customer_id]"),
        ({"event_name": "ev", "payload": {"stripe_customer_id": "c"}, "identifier": "i\u0000"}, "identifier"),
    ],
)
def test_nul_and_surrogates_in_v2_json_are_refused_by_name(
    gateway: GatewayServer, event: dict[str, Any], param: str
) -> None:
    body = json.dumps(event).encode()  # ensure_ascii: "\\u0000" and "\\ud800" escapes, as a client sends them
    status, error = _post(gateway, "/v2/billing/meter_events", body, json_body=True)
    assert status == 400 and error["param"] == param, error


@pytest.mark.parametrize("length", [CUSTOMER_ID_MAX + 1, 100_000, 400_000])
def test_customer_ids_over_the_cap_are_refused_at_the_gateway(
    gateway: GatewayServer, client: stripe.StripeClient, length: int
) -> None:
    """Issue 13, item 5: a 100,000-character customer id was accepted (four 100 KB Redis key names); a
    400,000-character one got a 200 and was rejected later by the processor."""
    make_meter(client, "ev")  # the gateway judges events of known meters only (no_meter otherwise)
    customer = "c" * length
    form = f"event_name=ev&payload[stripe_customer_id]={customer}&payload[value]=1".encode()
    status, error = _post(gateway, "/v1/billing/meter_events", form, json_body=False)
    assert status == 400 and error["param"] == "payload[stripe_customer_id]", error
    body = json.dumps({"event_name": "ev", "payload": {"stripe_customer_id": customer}}).encode()
    status, error = _post(gateway, "/v2/billing/meter_events", body, json_body=True)
    assert status == 400 and error["param"] == "payload[stripe_customer_id]", error


def test_a_customer_id_at_the_cap_is_accepted(gateway: GatewayServer, client: stripe.StripeClient) -> None:
    make_meter(client, "ev")
    form = f"event_name=ev&payload[stripe_customer_id]={'c' * CUSTOMER_ID_MAX}&payload[value]=1".encode()
    status, answer = _post(gateway, "/v1/billing/meter_events", form, json_body=False)
    assert status == 200, answer


def _stream(url: str, token: str) -> int:
    body = json.dumps({"events": [{"event_name": "ev", "payload": {"stripe_customer_id": "c"}}]}).encode()
    status, _, _ = http(
        f"{url}/v2/billing/meter_event_stream",
        "POST",
        body=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    return status


def test_a_session_is_revoked_with_the_key_that_issued_it(gw_settings: Settings, redis_client: SyncRedis) -> None:
    """Issue 13, item 6: a session token stayed valid after the key that issued it was removed, and anyone
    who could write Redis could forge one."""
    with GatewayServer(gw_settings) as both:
        status, _, raw = http(
            f"{both.url}/v2/billing/meter_event_session", "POST", body=b"{}", headers=bearer(OTHER_KEY)
        )
        assert status == 200
        token = json.loads(raw)["authentication_token"]
        assert _stream(both.url, token) == 200
    only_first = gw_settings.replace(api_keys=(Secret(API_KEY),))  # OTHER_KEY removed, gateway restarted
    with GatewayServer(only_first) as server:
        assert _stream(server.url, token) == 401
        # a session written into Redis by hand (the old value format: an expiry alone) is no session
        forged = "mes_" + "ab" * 32
        digest = hashlib.sha256(forged.encode()).hexdigest()[:40]
        redis_client.set(Keys(gw_settings.redis_prefix).gateway_session(digest), "9999999999")
        assert _stream(server.url, forged) == 401


def test_failed_authentications_slow_their_client_down(gateway: GatewayServer) -> None:
    """3,254 wrong-key guesses per second were answered. Now failures beyond the first few are held back
    exponentially; a right key is never held."""
    throttle = gateway.gateway.auth_throttle
    for _ in range(throttle.free + 2):
        status, _, raw = http(f"{gateway.url}/v1/billing/meters", headers=bearer("sk_test_wrong_wrong_wrong"))
        assert status == 401 and stripe_error(raw)["type"] == "invalid_request_error"
    assert throttle.failures("127.0.0.1") == throttle.free + 2
    status, _, _ = http(f"{gateway.url}/v1/billing/meters", headers=bearer())
    assert status == 200


@pytest.mark.parametrize(
    "data",
    [
        request_bytes("GET", "/v1/billing/meters?x=" + "a" * 9000, {"Authorization": f"Bearer {API_KEY}".encode()}),
        request_bytes("GET", "/v1/billing/meters", {"X-Long": b"a" * 9000}),
        b"G{T /v1/billing/meters HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /v1/billing/meters HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n",
        request_bytes("POST", "/v1/billing/meters", {"Content-Length": b"-1"}),
        request_bytes("POST", "/v1/billing/meters", {"Transfer-Encoding": b"chunked"}, b"zz\r\n"),
    ],
    ids=["url-9k", "header-9k", "method", "version", "tls", "length", "chunk"],
)
def test_errors_aiohttp_answers_itself_are_in_stripes_envelope(
    gateway: GatewayServer, caplog: pytest.LogCaptureFixture, data: bytes
) -> None:
    """Issue 13, item 7: these got aiohttp's plain-text 400 (and an ERROR traceback in the log)."""
    caplog.set_level(logging.INFO)
    status, headers, body = raw_request(gateway, data)
    assert 400 <= status < 500 and headers["content-type"].startswith("application/json"), (status, body)
    assert stripe_error(body)["type"] == "invalid_request_error"
    no_tracebacks(caplog)


def test_slow_headers_are_cut_off(gw_settings: Settings) -> None:
    """200 clients trickling their headers were all held open. A connection that has not sent complete
    headers by the header deadline is closed (the socket's own timeout only guards the test)."""
    with GatewayServer(gw_settings, header_timeout_s=0.5) as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"GET /v1/billing/meters HTTP/1.1\r\nHost: x\r\n")  # never finished
            assert sock.recv(1024) == b""  # closed by the server


def test_a_body_shorter_than_its_content_length_is_a_408(gw_settings: Settings) -> None:
    with GatewayServer(gw_settings, body_timeout_s=0.5) as server:
        for path in ("/v1/billing/meter_events", "/v2/billing/meter_events"):
            data = request_bytes("POST", path, {"Authorization": f"Bearer {API_KEY}".encode()})
            data = data.replace(b"Content-Length: 0", b"Content-Length: 100") + b"event_name"
            status, _, body = raw_request(server, data)
            assert status == 408 and stripe_error(body)["type"] == "invalid_request_error", body


@pytest.mark.parametrize("body", [b"0=x", b"0=x&1=y", b"payload[%C2%B2]=1&event_name=e", b"a[\xc2\xb2]=1"])
def test_index_like_keys_are_never_a_500(gateway: GatewayServer, body: bytes) -> None:
    """Found by the fuzz test: top-level keys 0..n decoded as a list (AttributeError), and "²" passed
    str.isdigit() then failed int() -- both 500s."""
    status, error = _post(gateway, "/v1/billing/meter_events", body, json_body=False)
    assert status == 400 and error["type"] == "invalid_request_error", error
