"""Issue 13: the bad requests an attacker or a careless client sends, each answered with a Stripe-shaped
4xx (never a 500, never a traceback in the log), byte for byte as the issue found them."""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import pytest

from processor.gateway import GatewayServer


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
